"""Prometheus metrics of one app instance (a private registry: several apps may live in
one process, e.g. in tests) and the request-logging middleware.

The middleware logs method, route template, status and duration only: never the
query string, headers (Authorization, Cookie), tokens or bodies.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "RequestLogMiddleware"]

access_logger = logging.getLogger("omninudge.access")


class Metrics:
    """The counters, gauges and histograms listed in API.md "Operations"."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes: `omninudge bench --url`.
        ProcessCollector(registry=r)
        self.connections = Gauge("omninudge_connections", "Open WebSocket connections", registry=r)
        self.messages_sent = Counter(
            "omninudge_messages_sent_total", "Messages accepted", ["origin"], registry=r
        )
        self.delivery_latency = Histogram(
            "omninudge_delivery_latency_seconds",
            "From a message's acceptance to a recipient device's ack",
            registry=r,
        )
        self.http_latency = Histogram(
            "omninudge_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            registry=r,
        )
        self.db_latency = Histogram(
            "omninudge_db_call_duration_seconds", "Database health-check latency", registry=r
        )
        self.redis_latency = Histogram(
            "omninudge_redis_call_duration_seconds", "Redis call latency", registry=r
        )
        self.reddit_quota_left = Gauge(
            "omninudge_reddit_quota_remaining", "Reddit API requests left", registry=r
        )
        self.errors = Counter(
            "omninudge_errors_total", "Errors answered, by API error code", ["code"], registry=r
        )
        self.ws_frames = Counter(
            "omninudge_ws_frames_total", "WebSocket frames", ["direction"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    if isinstance(route, BaseRoute):
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
    return "<unmatched>"


class RequestLogMiddleware:
    """Access log + latency histogram for HTTP requests (pure ASGI, streaming-safe)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = str(scope.get("method", "?"))
            self.metrics.http_latency.labels(
                method=method, route=route, status=str(status)
            ).observe(elapsed)
            access_logger.info("%s %s -> %d in %.1f ms", method, route, status, elapsed * 1000.0)
