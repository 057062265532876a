"""Log in with Reddit (OAuth 2 authorization code, REDDIT.md §2; API.md "Auth").

1. ``GET /api/auth/reddit/login?return_to=/path`` answers 302 to Reddit's consent page
   with a ``state`` signed by the server (HMAC; it carries a random nonce, the
   ``return_to`` path and the time) and sets a short-lived ``omninudge_oauth`` cookie
   holding the nonce, which binds the login to this browser.
2. Reddit sends the browser to ``REDDIT_REDIRECT_URI`` with ``code`` and ``state``.
   Either that URI is ``GET /api/auth/reddit/callback`` (the server finishes the login,
   sets the session cookie and redirects to ``return_to``), or a page of the client
   that posts them to ``POST /api/auth/session`` and receives the token as JSON.
3. Finishing: the state must verify (400 ``invalid_state``), be at most 10 minutes
   old (400 ``state_expired``) and never used before (403 ``state_replayed``: used
   nonces are kept in the Revocations port, so a replay fails on every instance). Then
   the code is exchanged, ``/api/v1/me`` names the account, the user is found by
   Reddit id, or a Reddit-only placeholder with that name becomes the real account, or
   a new user is created. The tokens are stored encrypted and the answer is the same
   as dev login's. Any Reddit conversation the person was reached in starts its
   migration.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import timedelta
from urllib.parse import urlencode

import attrs
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from omninudge_adapters.reddit import RedditGrantInvalid, sign_state, verify_state
from omninudge_core import codec, wire
from omninudge_core.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    InvalidFrame,
    NotFound,
    ProtocolError,
)
from omninudge_core.models import User
from omninudge_core.ports import RedditGrant, RedditIdentity
from omninudge_server.auth import set_session_cookie
from omninudge_server.handlers import json_response, read_body, services_of
from omninudge_server.reddit_access import RedditAccess
from omninudge_server.reddit_feature import RedditFeature, require_reddit
from omninudge_server.wiring import Services

__all__ = ["revoke_reddit_login", "routes"]

STATE_MAX_AGE_S = 600
OAUTH_COOKIE = "omninudge_oauth"
MAX_RETURN_TO = 512


def _check_return_to(value: str | None) -> str:
    """A path on this server only (no open redirect). Raises InvalidFrame."""
    if value is None or value == "":
        return "/"
    if (
        len(value) > MAX_RETURN_TO
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x21 for c in value)
    ):
        raise InvalidFrame(
            "return_to must be a path on this server", code="invalid_field", field="return_to"
        )
    return value


def _feature_for_login(services: Services) -> RedditFeature:
    if services.reddit is None:
        raise NotFound("Reddit login is not configured on this server")
    return require_reddit(services)


def _secure(services: Services) -> bool:
    return services.settings.public_url.startswith("https://")


async def login(request: Request) -> Response:
    """``GET /api/auth/reddit/login?return_to=``: 302 to Reddit's consent page."""
    services = services_of(request)
    feature = _feature_for_login(services)
    return_to = _check_return_to(request.query_params.get("return_to"))
    nonce = secrets.token_urlsafe(16)
    state = sign_state(feature.state_key, nonce=nonce, return_to=return_to, now=services.clock())
    response = RedirectResponse(feature.client.authorize_url(state=state), status_code=302)
    response.set_cookie(
        OAUTH_COOKIE,
        nonce,
        max_age=STATE_MAX_AGE_S,
        path="/api/auth",
        httponly=True,
        samesite="lax",
        secure=_secure(services),
    )
    return response


def _nonce_of(state: str) -> tuple[str, float]:
    payload_b64 = state.split(".", 1)[0]
    data = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    return str(data["n"]), float(data["t"])


async def _consume_state(services: Services, feature: RedditFeature, state: str) -> tuple[str, str]:
    """``(return_to, nonce)`` of a valid, fresh, unused state, now used up.

    Raises InvalidFrame (``invalid_state``, ``state_expired``), Forbidden
    (``state_replayed``)."""
    now = services.clock()
    try:
        # The signature first (any age), then the age, to tell the two apart.
        return_to = verify_state(feature.state_key, state, now=now, max_age_s=10**9)
        nonce, issued = _nonce_of(state)
    except (AuthenticationFailed, ValueError, KeyError, TypeError) as exc:
        raise InvalidFrame("the login state is not one of ours", code="invalid_state") from exc
    age = now.timestamp() - issued
    if age > STATE_MAX_AGE_S or age < -60:
        raise InvalidFrame("the login took too long; start again", code="state_expired")
    key = f"oauth-state:{nonce}"
    if await services.revocations.is_revoked(key):
        raise Forbidden("this login state was already used", code="state_replayed")
    await services.revocations.revoke(key, now + timedelta(seconds=STATE_MAX_AGE_S + 120))
    return return_to, nonce


async def _account_for(services: Services, identity: RedditIdentity) -> User:
    """The platform user of this Reddit account (created, or a placeholder upgraded)."""
    users = services.storage.users
    user = await users.by_reddit_id(identity.id)
    if user is None:
        user = await users.by_username(identity.name)
        if user is not None and user.reddit_id not in (None, identity.id):
            raise Conflict("this username belongs to another Reddit account")
    if user is None:
        try:
            return await users.create(
                User(
                    id=services.new_id(),
                    username=identity.name,
                    created_at=services.clock(),
                    reddit_id=identity.id,
                )
            )
        except Conflict:
            user = await users.by_reddit_id(identity.id)  # a concurrent first login
            if user is None:
                raise
    joined = attrs.evolve(user, on_platform=True, reddit_id=identity.id, username=identity.name)
    return user if joined == user else await users.update(joined)


async def _finish(request: Request, code: str, state: str) -> tuple[Response, str]:
    """Exchange, identify, store, issue. Returns the JSON answer and ``return_to``."""
    services = services_of(request)
    feature = _feature_for_login(services)
    return_to, nonce = await _consume_state(services, feature, state)
    cookie_nonce = request.cookies.get(OAUTH_COOKIE)
    if cookie_nonce is not None and not secrets.compare_digest(cookie_nonce, nonce):
        raise Forbidden("this login was started in another browser", code="state_mismatch")
    try:
        grant: RedditGrant = await feature.guarded(lambda: feature.client.exchange_code(code))
        identity = await feature.guarded(lambda: feature.client.me(grant.access_token))
    except RedditGrantInvalid as exc:
        raise ProtocolError("Reddit refused the login code", code="reddit_grant_invalid") from exc
    user = await _account_for(services, identity)
    await RedditAccess(services, feature).store_grant(user.id, grant)
    if feature.worker is not None:
        await feature.worker.on_login(user)
    issued = services.tokens.issue(user, services.clock())
    answer = wire.SessionAnswer(
        access_token=issued.token, expires_in=issued.expires_in, user=wire.WireMe.from_domain(user)
    )
    response = json_response(codec.unstructure(answer))
    set_session_cookie(response, issued, secure=_secure(services))
    response.delete_cookie(OAUTH_COOKIE, path="/api/auth")
    return response, return_to


async def session(request: Request) -> Response:
    """``POST /api/auth/session {code, state}``: the login answer (token + cookie)."""
    services = services_of(request)
    body = codec.decode_body(
        await read_body(request, services.settings.max_body_bytes), wire.SessionBody
    )
    response, _ = await _finish(request, body.code, body.state)
    return response


async def callback(request: Request) -> Response:
    """``GET /api/auth/reddit/callback?code&state``: log in, then 302 to ``return_to``.

    The browser flow must come from this browser's ``/login`` (the nonce cookie)."""
    params = request.query_params
    state, code = params.get("state"), params.get("code")
    if params.get("error") is not None:
        raise Forbidden("Reddit login was declined", code="reddit_consent_denied")
    if not state or not code or len(state) > 2048 or len(code) > 512:
        raise InvalidFrame("code and state are required", code="missing_field", field="code")
    if request.cookies.get(OAUTH_COOKIE) is None:
        raise Forbidden("start the login from this browser", code="state_mismatch")
    json_answer, return_to = await _finish(request, code, state)
    redirect = RedirectResponse(return_to, status_code=302)
    for name, value in json_answer.headers.items():
        if name.lower() == "set-cookie":
            redirect.headers.append("set-cookie", value)
    return redirect


async def revoke_reddit_login(services: Services, user_id: str) -> None:
    """On logout: revoke the user's Reddit token at Reddit too (best effort)."""
    feature = services.reddit
    if feature is None:
        return
    await RedditAccess(services, feature).revoke(user_id)


def login_url(return_to: str) -> str:
    return "/api/auth/reddit/login?" + urlencode({"return_to": return_to})


routes = [
    Route("/api/auth/reddit/login", login, methods=["GET"]),
    Route("/api/auth/reddit/callback", callback, methods=["GET"]),
    Route("/api/auth/session", session, methods=["POST"]),
]
