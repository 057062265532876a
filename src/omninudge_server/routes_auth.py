"""Auth and the caller's own account: dev login, logout, ``/api/me``, settings."""

from __future__ import annotations

import attrs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from omninudge_core import codec, wire
from omninudge_core.errors import Conflict, NotFound
from omninudge_core.models import User
from omninudge_server.auth import clear_session_cookie, set_session_cookie
from omninudge_server.handlers import (
    authenticate,
    json_response,
    read_body,
    services_of,
)
from omninudge_server.reddit_auth import revoke_reddit_login

__all__ = ["routes"]


def _secure_cookies(request: Request) -> bool:
    return services_of(request).settings.public_url.startswith("https://")


async def dev_login(request: Request) -> Response:
    """``POST /api/auth/dev-login {username}``: find or create the user; 404 when disabled."""
    services = services_of(request)
    if not services.settings.dev_login:
        raise NotFound("dev login is disabled")
    body = codec.decode_body(
        await read_body(request, services.settings.max_body_bytes), wire.DevLoginBody
    )
    users = services.storage.users
    user = await users.by_username(body.username)
    if user is None:
        try:
            user = await users.create(
                User(id=services.new_id(), username=body.username, created_at=services.clock())
            )
        except Conflict:
            # Another request created the same name between our lookup and insert.
            user = await users.by_username(body.username)
            if user is None:
                raise
    if not user.on_platform:
        # A Reddit-only placeholder becomes a full account when that person logs in.
        user = await users.update(_joined(user))
    issued = services.tokens.issue(user, services.clock())
    answer = wire.SessionAnswer(
        access_token=issued.token, expires_in=issued.expires_in, user=wire.WireMe.from_domain(user)
    )
    response = json_response(codec.unstructure(answer))
    set_session_cookie(response, issued, secure=_secure_cookies(request))
    return response


def _joined(user: User) -> User:
    return attrs.evolve(user, on_platform=True)


async def logout(request: Request) -> Response:
    """``POST /api/auth/logout``: revoke the token's ``jti`` everywhere; 204."""
    services = services_of(request)
    principal = await authenticate(request)
    await services.revocations.revoke(principal.jti, principal.expires_at)
    await revoke_reddit_login(services, principal.user_id)  # best effort
    response = Response(status_code=204)
    clear_session_cookie(response, secure=_secure_cookies(request))
    return response


async def me(request: Request) -> Response:
    services = services_of(request)
    principal = await authenticate(request)
    user = await services.storage.users.get(principal.user_id)
    return json_response(codec.unstructure(wire.WireMe.from_domain(user)))


async def patch_settings(request: Request) -> Response:
    """``PATCH /api/me/settings``: absent fields stay as they are; answers the settings."""
    services = services_of(request)
    principal = await authenticate(request)
    patch = codec.decode_body(
        await read_body(request, services.settings.max_body_bytes), wire.SettingsPatchBody
    )
    user = await services.storage.users.get(principal.user_id)
    updated = await services.storage.users.update(
        attrs.evolve(user, settings=patch.apply(user.settings))
    )
    return json_response(codec.unstructure(updated.settings))


routes = [
    Route("/api/auth/dev-login", dev_login, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/me", me, methods=["GET"]),
    Route("/api/me/settings", patch_settings, methods=["PATCH"]),
]
