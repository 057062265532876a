"""Authentication: HS256 JWTs (API.md claims), the session cookie, the Origin check.

A request authenticates with ``Authorization: Bearer <jwt>`` or the
``omninudge_session`` cookie (HttpOnly, SameSite=Lax). A state-changing request that
relies on the cookie must carry an ``Origin`` equal to our own origin (the public
URL or the Host it was sent to): SameSite=Lax alone still lets a top-level POST
from another site through in some browsers. Logout revokes the token's ``jti``
through the Revocations port, so it is dead on every instance.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import jwt
from starlette.requests import HTTPConnection
from starlette.responses import Response

from omninudge_core.errors import AuthenticationFailed, Forbidden
from omninudge_core.models import User

__all__ = [
    "COOKIE_NAME",
    "IssuedToken",
    "Principal",
    "TokenService",
    "check_origin",
    "clear_session_cookie",
    "load_or_create_secret",
    "set_session_cookie",
    "token_from_connection",
]

COOKIE_NAME = "omninudge_session"
ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 4096
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REQUIRED_CLAIMS = ("sub", "username", "iat", "exp", "jti")


def load_or_create_secret(path: Path) -> str:
    """Read the signing secret from ``path``, creating it (mode 0600) on first start.

    Two processes starting together agree: the file is created with O_EXCL and the
    loser reads the winner's secret.
    """
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return secret


@attrs.frozen
class IssuedToken:
    token: str
    jti: str
    expires_in: int
    expires_at: datetime


@attrs.frozen
class Principal:
    """Who is calling, from a verified, unrevoked token."""

    user_id: str
    username: str
    reddit_id: str | None
    jti: str
    expires_at: datetime
    via_cookie: bool = False


class TokenService:
    """Issues and verifies the API's JWTs (HS256 only: ``alg: none`` and RS/HS
    confusion are refused because the algorithm list is fixed)."""

    def __init__(self, secret: str, *, ttl_s: int) -> None:
        self._secret = secret
        self._ttl_s = ttl_s

    def issue(self, user: User, now: datetime) -> IssuedToken:
        jti = secrets.token_urlsafe(16)
        expires_at = now + timedelta(seconds=self._ttl_s)
        claims = {
            "sub": user.id,
            "reddit_id": user.reddit_id,
            "username": user.username,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": jti,
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token=token, jti=jti, expires_in=self._ttl_s, expires_at=expires_at)

    def verify(self, token: str, *, via_cookie: bool = False) -> Principal:
        """Check signature, algorithm, expiry and claim types.

        Raises AuthenticationFailed (code ``token_expired`` or ``invalid_token``).
        """
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed("invalid token", code="invalid_token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": list(_REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed("token expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed("invalid token", code="invalid_token") from exc
        sub, username, jti = claims.get("sub"), claims.get("username"), claims.get("jti")
        reddit_id, exp = claims.get("reddit_id"), claims.get("exp")
        if not (
            isinstance(sub, str)
            and isinstance(username, str)
            and isinstance(jti, str)
            and isinstance(exp, int)
            and (reddit_id is None or isinstance(reddit_id, str))
        ):
            raise AuthenticationFailed("invalid token claims", code="invalid_token")
        return Principal(
            user_id=sub,
            username=username,
            reddit_id=reddit_id,
            jti=jti,
            expires_at=datetime.fromtimestamp(exp, UTC),
            via_cookie=via_cookie,
        )


def token_from_connection(conn: HTTPConnection) -> tuple[str, bool] | None:
    """The bearer token (preferred) or the session cookie, with ``via_cookie``.

    Raises AuthenticationFailed for a malformed Authorization header.
    """
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationFailed("expected 'Authorization: Bearer <token>'")
        return value.strip(), False
    cookie = conn.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, True
    return None


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(conn: HTTPConnection, public_url: str, *, method: str) -> None:
    """Refuse a cookie-authenticated state change from another site.

    Raises Forbidden (code ``origin_mismatch``).
    """
    if method.upper() in _SAFE_METHODS:
        return
    origin = conn.headers.get("origin")
    if origin is None:
        raise Forbidden("cookie-authenticated requests must send Origin", code="origin_mismatch")
    scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
    host = conn.headers.get("host", "")
    allowed = {_origin_of(public_url), f"{scheme}://{host}".lower()}
    if origin.lower().rstrip("/") not in allowed:
        raise Forbidden("Origin does not match this server", code="origin_mismatch")


def set_session_cookie(response: Response, token: IssuedToken, *, secure: bool) -> None:
    response.set_cookie(
        COOKIE_NAME,
        token.token,
        max_age=token.expires_in,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure,
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=secure)
