"""Graceful shutdown (SIGTERM) for ``omninudge serve``.

uvicorn's own shutdown stops accepting, lets in-flight HTTP requests finish and closes
WebSocket connections with 1012. We want 1001 (going away) and the frame a connection
is processing to finish first, so that an acknowledged message (``sent``) is never
cut off. ``GracefulServer.shutdown`` therefore:

1. stops accepting new connections,
2. asks every connection of the app's ``Hub`` to go away: a WebSocket finishes the
   frame in hand and closes with 1001; a long-poll request answers at once,
3. waits (at most ``drain_s``) until they are gone,
4. then runs uvicorn's shutdown (in-flight HTTP requests, bounded by
   ``timeout_graceful_shutdown``; then the app's lifespan shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from starlette.applications import Starlette

__all__ = ["GracefulServer"]

logger = logging.getLogger("omninudge.server")


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, app: Starlette, drain_s: float = 10.0) -> None:
        super().__init__(config)
        self._app = app
        self._drain_s = drain_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while the old ones drain
        hub = getattr(self._app.state, "hub", None)
        if hub is not None:
            hub.going_away()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._drain_s
            while hub.listener_count() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # connections detach from the hub as they close
            if hub.listener_count():
                logger.warning("%d connections still open after the drain", hub.listener_count())
        await super().shutdown(sockets)
