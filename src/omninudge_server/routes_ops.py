"""Operations endpoints: ``GET /health``, ``GET /metrics``, ``GET /api/openapi.json``."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from omninudge_core.errors import OmniNudgeError
from omninudge_server.handlers import json_response, services_of
from omninudge_server.metrics import Metrics

__all__ = ["routes"]

HEALTH_DB_TIMEOUT_S = 2.0


async def health(request: Request) -> Response:
    """``{status, database, redis, reddit_api, uptime}``; 503 when the database is down."""
    services = services_of(request)
    metrics: Metrics = request.app.state.metrics
    started = time.perf_counter()
    try:
        await asyncio.wait_for(services.storage.ping(), HEALTH_DB_TIMEOUT_S)
        database = "ok"
    except (OmniNudgeError, TimeoutError):
        database = "unavailable"
    metrics.db_latency.observe(time.perf_counter() - started)
    redis = "in-process" if services.shared is None else await services.shared.health()
    # Redis is not on the durability path: without it the server is degraded, not down.
    status = "healthy"
    if database != "ok":
        status = "unhealthy"
    elif redis == "down":
        status = "degraded"
    reddit_api = "not_configured" if services.reddit is None else services.reddit.health
    if status == "healthy" and reddit_api in ("degraded", "revoked"):
        status = "degraded"  # chat works; Reddit features do not
    uptime = (services.clock() - services.started_at).total_seconds()
    body = {
        "status": status,
        "database": database,
        "database_kind": services.settings.database_kind,
        "redis": redis,
        "reddit_api": reddit_api,
        "uptime": round(uptime, 3),
    }
    return json_response(body, status_code=200 if status != "unhealthy" else 503)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    reddit = services_of(request).reddit
    quota = None if reddit is None else reddit.last_quota
    if quota is not None and quota.remaining is not None:
        metrics.reddit_quota_left.set(quota.remaining)
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    from omninudge_server.openapi import openapi_document

    return json_response(openapi_document(request.app.state.settings))


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/api/openapi.json", openapi, methods=["GET"]),
]
