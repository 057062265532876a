"""The Starlette application factory.

``create_app(settings)`` builds routes, middleware and error handlers but opens
nothing: adapters are created in the lifespan (``wiring.open_services``) and closed
when the server stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware

from omninudge_adapters.memory.fanout import MemoryFanOut
from omninudge_server import (
    invites,
    reddit_auth,
    reddit_browse,
    routes_auth,
    routes_conversations,
    routes_media,
    routes_ops,
    routes_users,
    ws,
)
from omninudge_server import web as web_client
from omninudge_server.config import Settings
from omninudge_server.errors import exception_handlers
from omninudge_server.metrics import Metrics, RequestLogMiddleware
from omninudge_server.realtime import Hub
from omninudge_server.slideshows import SlideshowDriver
from omninudge_server.wiring import open_services, utcnow

__all__ = ["create_app"]


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> Starlette:
    """The reference server as an ASGI app (serve it with uvicorn, lifespan on)."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings, clock=clock) as services:
            hub = Hub(services.fanout, in_process=isinstance(services.fanout, MemoryFanOut))
            app.state.services = services
            app.state.hub = hub
            app.state.slideshows = SlideshowDriver(services, hub)
            try:
                yield
            finally:
                await app.state.slideshows.close()
                await hub.close()

    app = Starlette(
        routes=[
            *routes_ops.routes,
            *routes_auth.routes,
            *routes_users.routes,
            *routes_conversations.routes,
            *routes_media.routes,
            *ws.routes,
            *web_client.routes,
            *reddit_auth.routes,
            *reddit_browse.routes,
            *invites.routes,
        ],
        middleware=[Middleware(RequestLogMiddleware, metrics=metrics)],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    return app
