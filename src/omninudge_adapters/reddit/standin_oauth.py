"""The auth host of the Reddit stand-in: consent, tokens and revocation (REDDIT.md §2).

``StandInOAuth`` is mixed into ``omninudge_adapters.reddit.testing.RedditStandIn``; it
keeps registered apps, single-use codes, expiring access tokens and refresh tokens
(rotated on refresh when ``rotate_refresh_tokens``), and answers with Reddit's shapes:
401 + ``WWW-Authenticate: Basic`` for bad client credentials (or ``app_revoked``), 400
``{"message": "Bad Request", "error": 400}`` for a bad code or refresh token (2016's
200 + ``invalid_grant`` with ``legacy_invalid_grant``), 200 with an empty body on revoke.
"""

from __future__ import annotations

import base64
import binascii
import html
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import attrs
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from omninudge_adapters.reddit.oauth import KNOWN_SCOPES
from omninudge_adapters.reddit.standin_messages import (
    StandInUser,
    error_response,
    json_response,
)

__all__ = ["StandInApp", "StandInCode", "StandInOAuth", "StandInToken"]


@attrs.define
class StandInApp:
    client_id: str
    secret: str
    redirect_uri: str


@attrs.define
class StandInCode:
    client_id: str
    user: str
    scopes: frozenset[str]
    duration: str
    redirect_uri: str


@attrs.define
class StandInToken:
    client_id: str
    user: str | None
    scopes: frozenset[str]
    expires_at: float = float("inf")
    refresh: str | None = None  # for an access token: the refresh token it came from


class StandInOAuth:
    """Auth-host state and handlers; the host class provides ``clock``, ``users`` and
    ``add_user``."""

    clock: Callable[[], float]
    users: dict[str, StandInUser]

    def add_user(self, name: str, **options: Any) -> StandInUser:
        raise NotImplementedError

    def _init_oauth(self, *, expires_in: int, rotate_refresh_tokens: bool) -> None:
        self.expires_in = expires_in
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.app_revoked = False  # 401 at the token endpoint: our app was revoked
        self.legacy_invalid_grant = False  # answer 2016's 200 + invalid_grant
        self.consent_user: str | None = None  # who "clicks Allow" on the consent page
        self.deny_consent = False
        self.apps: dict[str, StandInApp] = {}
        self.codes: dict[str, StandInCode] = {}
        self.tokens: dict[str, StandInToken] = {}
        self.refresh_tokens: dict[str, StandInToken] = {}

    def bearer(self, request: Request) -> StandInToken | None:
        """The live access token of an API request, or None."""
        header = request.headers.get("authorization", "")
        token = self.tokens.get(header[7:]) if header.lower().startswith("bearer ") else None
        if token is None or token.expires_at <= self.clock() or self.app_revoked:
            return None
        return token

    def register_app(self, client_id: str, secret: str, redirect_uri: str) -> None:
        self.apps[client_id] = StandInApp(client_id, secret, redirect_uri)

    def issue_token(
        self, user: str | None, *, client_id: str, scopes: str = "identity read privatemessages"
    ) -> str:
        """An access token without the consent flow (for tests)."""
        token = secrets.token_urlsafe(24)
        self.tokens[token] = StandInToken(
            client_id, user, frozenset(scopes.split()), self.clock() + self.expires_in
        )
        return token

    def authorize(self, request: Request, form: dict[str, str]) -> Response:
        params = {**request.query_params, **form}
        app = self.apps.get(params.get("client_id", ""))
        scopes = set(params.get("scope", "").replace(",", " ").split())
        if (
            app is None
            or params.get("redirect_uri") != app.redirect_uri
            or params.get("response_type") != "code"
            or not scopes
            or not scopes <= KNOWN_SCOPES
            or params.get("duration", "temporary") not in ("temporary", "permanent")
        ):
            # Reddit does not redirect these: it shows a 400 page (REDDIT.md §2.1).
            return HTMLResponse("<h1>bad request (reddit.com)</h1>", status_code=400)
        state = params.get("state", "")
        if not state:
            return HTMLResponse("<h1>NO_TEXT: state</h1>", status_code=400)
        username = form.get("username") or self.consent_user
        if username is None and not self.deny_consent:
            return self._consent_page(params)
        if self.deny_consent or form.get("decision") == "deny" or username is None:
            query = urlencode({"state": state, "error": "access_denied"})
            return Response(status_code=302, headers={"location": f"{app.redirect_uri}?{query}"})
        user = self.users.get(username.lower()) or self.add_user(username)
        code = secrets.token_urlsafe(16)
        self.codes[code] = StandInCode(
            app.client_id,
            user.name,
            frozenset(scopes),
            params.get("duration", "temporary"),
            app.redirect_uri,
        )
        query = urlencode({"state": state, "code": code})
        return Response(status_code=302, headers={"location": f"{app.redirect_uri}?{query}"})

    def _consent_page(self, params: dict[str, str]) -> Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
        )
        return HTMLResponse(
            "<!doctype html><title>Reddit stand-in: allow access?</title>"
            f"<form method=post>{hidden}<p>Log in as <input name=username required> "
            "<button name=decision value=allow>Allow</button> "
            "<button name=decision value=deny formnovalidate>Decline</button></p></form>"
        )

    def _client_of(self, request: Request) -> StandInApp | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        app = self.apps.get(client_id)
        return app if app is not None and secrets.compare_digest(app.secret, secret) else None

    def token_endpoint(self, request: Request, path: str, form: dict[str, str]) -> Response:
        app = self._client_of(request)
        if app is None or self.app_revoked:
            return json_response(
                {"message": "Unauthorized", "error": 401},
                401,
                {"www-authenticate": 'Basic realm="reddit"'},
            )
        if path == "/api/v1/revoke_token":
            return self._revoke(app, form.get("token", ""))
        grant = form.get("grant_type")
        if grant == "authorization_code":
            code = self.codes.pop(form.get("code", ""), None)  # single use, even on failure
            if code is None or code.client_id != app.client_id:
                return self._invalid_grant()
            if form.get("redirect_uri") != code.redirect_uri:
                return self._invalid_grant()
            permanent = code.duration == "permanent"
            return self._grant(app, code.user, code.scopes, with_refresh=permanent)
        if grant == "refresh_token":
            old = form.get("refresh_token", "")
            record = self.refresh_tokens.get(old)
            if record is None or record.client_id != app.client_id:
                return self._invalid_grant()
            refresh = old
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[old]
                refresh = secrets.token_urlsafe(24)
                self.refresh_tokens[refresh] = record
                for token in self.tokens.values():
                    if token.refresh == old:
                        token.refresh = refresh
            return self._grant(app, record.user, record.scopes, refresh=refresh)
        if grant == "client_credentials":
            return self._grant(app, None, frozenset({"*"}), with_refresh=False)
        return json_response({"error": "unsupported_grant_type"}, 400)

    def _invalid_grant(self) -> Response:
        if self.legacy_invalid_grant:
            return json_response({"error": "invalid_grant"}, 200)  # 2016 behaviour
        return error_response(400, "Bad Request")

    def _grant(
        self,
        app: StandInApp,
        user: str | None,
        scopes: frozenset[str],
        *,
        with_refresh: bool = True,
        refresh: str | None = None,
    ) -> Response:
        if refresh is None and with_refresh:
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = StandInToken(app.client_id, user, scopes)
        access = secrets.token_urlsafe(32)
        self.tokens[access] = StandInToken(
            app.client_id, user, scopes, self.clock() + self.expires_in, refresh
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.expires_in,
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        body["scope"] = " ".join(sorted(scopes))
        return json_response(body)

    def _revoke(self, app: StandInApp, token: str) -> Response:
        record = self.refresh_tokens.get(token) or self.tokens.get(token)
        if record is not None and record.client_id != app.client_id:
            return json_response({"error": "unauthorized_client"}, 400)
        if self.refresh_tokens.pop(token, None) is not None:
            for access in [k for k, v in self.tokens.items() if v.refresh == token]:
                del self.tokens[access]
        self.tokens.pop(token, None)
        # Observed: 200 with an empty body (REDDIT.md §2.4).
        return Response(b"", status_code=200, media_type="application/json; charset=UTF-8")
