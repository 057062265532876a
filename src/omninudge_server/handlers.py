"""Small helpers every HTTP handler uses: services, JSON in/out, authentication."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from omninudge_core.errors import AuthenticationFailed, PayloadTooLarge
from omninudge_server.auth import Principal, check_origin, token_from_connection
from omninudge_server.wiring import Services

__all__ = [
    "JSONBytesResponse",
    "authenticate",
    "json_response",
    "read_body",
    "services_of",
]


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


class JSONBytesResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return JSONBytesResponse(content, status_code=status_code, headers=headers)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with PayloadTooLarge past ``max_bytes`` (read in chunks so
    a huge body is never held in memory)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge("request body too large", field="body", limit=max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge("request body too large", field="body", limit=max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def authenticate(conn: HTTPConnection, *, method: str | None = None) -> Principal:
    """The caller, from the bearer token or the session cookie (with the Origin check
    for state-changing cookie requests). Raises AuthenticationFailed or Forbidden."""
    services = services_of(conn)
    found = token_from_connection(conn)
    if found is None:
        raise AuthenticationFailed("authentication required")
    token, via_cookie = found
    principal = services.tokens.verify(token, via_cookie=via_cookie)
    if await services.revocations.is_revoked(principal.jti):
        raise AuthenticationFailed("token revoked", code="token_revoked")
    if via_cookie:
        verb = method if method is not None else conn.scope.get("method", "GET")
        check_origin(conn, services.settings.public_url, method=str(verb))
    return principal
