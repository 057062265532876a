"""The ONE place where errors become HTTP answers, WebSocket error frames and close codes.

``omninudge_core.errors`` carry a machine ``code`` (API.md) and hints (``status``,
``close_code``); this module only reads the hints. Anything else that reaches the
catch-all is a bug: it is logged with its traceback and answered with a bare 500.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from omninudge_core import codec, wire
from omninudge_core.errors import (
    AuthenticationFailed,
    OmniNudgeError,
    ProtocolError,
    RateLimited,
    StaleCommand,
)

__all__ = [
    "CLOSE_AUTH_FAILED",
    "CLOSE_AUTH_TIMEOUT",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_POLICY",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_MANY_CONNECTIONS",
    "error_body",
    "error_response",
    "exception_handlers",
    "ws_close_code",
    "ws_error_frame",
]

logger = logging.getLogger("omninudge.server")

# WebSocket close codes (RFC 6455 §7.4 plus the 4xxx private range, mirroring HTTP).
CLOSE_POLICY = 1008  # protocol abuse (flooding, repeated garbage)
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_AUTH_FAILED = AuthenticationFailed.close_code  # 4401
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_GOING_AWAY = 1001  # graceful shutdown: reconnect (to another instance) and resume
CLOSE_SLOW_CONSUMER = 4413  # the peer stopped reading; its buffer is full (docs/reliability.md)
CLOSE_TOO_MANY_CONNECTIONS = 4429  # over ws_max_connections_per_user on this instance

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The API.md error body ``{"error": {"code", "message", ...details}}`` (the
    codec's ``ErrorBody`` shape)."""
    body: dict[str, Any] = codec.unstructure(
        wire.ErrorBody(wire.ErrorInfo(code, message, details or None))
    )
    return body


def _details(exc: OmniNudgeError) -> dict[str, Any]:
    details = dict(exc.details())
    if isinstance(exc, StaleCommand):
        details["current_version"] = exc.current_version
    return details


def error_response(exc: OmniNudgeError, *, now: datetime | None = None) -> JSONResponse:
    """Map a project error to its HTTP answer (status from the error's hint)."""
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_seconds(now or datetime.now(UTC)))
    if isinstance(exc, AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="omninudge"'
    status = exc.status if 400 <= exc.status < 600 else 500
    return JSONResponse(
        error_body(exc.code, exc.message, **_details(exc)), status_code=status, headers=headers
    )


def ws_error_frame(exc: OmniNudgeError, ref: str | None = None) -> dict[str, Any]:
    """An API.md ``error`` frame for a WebSocket client (the connection stays open)."""
    error = wire.ErrorFrame(exc.code, exc.message, ref=ref, details=_details(exc) or None)
    return codec.unstructure_server_frame(error)


def ws_close_code(exc: OmniNudgeError) -> int | None:
    """The close code when ``exc`` must end the connection, else None (answer and stay)."""
    if isinstance(exc, ProtocolError):
        return exc.close_code
    return None


async def _on_project_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OmniNudgeError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code=exc.code).inc()
    if exc.status >= 500:
        logger.warning("dependency error on %s: %r", request.url.path, exc)
    return error_response(exc)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _on_bug(request: Request, exc: Exception) -> Response:
    # Only true bugs get here: bad input is always an OmniNudgeError.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code="internal_error").inc()
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


exception_handlers: dict[Any, Any] = {
    OmniNudgeError: _on_project_error,
    HTTPException: _on_http_exception,
    Exception: _on_bug,
}
