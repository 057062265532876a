"""``HttpxRedditClient``: the ``RedditClient`` port over httpx (REDDIT.md §§1–7).

Two hosts: the auth host (``/api/v1/access_token``, ``/api/v1/revoke_token``, HTTP
Basic with the app's credentials) and the API host (everything else, ``bearer``
user token). Every request carries Reddit's User-Agent and ``raw_json=1``; every
call to the API host first asks the budget gate (one per deployment) and feeds the
answer's ``X-Ratelimit-*`` back. Answers are mapped by ``parsing`` to core types or
typed errors; no httpx exception escapes (``raise … from exc``). Tokens are never
logged: the debug log names method, path and status only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from omninudge_adapters.reddit import parsing
from omninudge_adapters.reddit.oauth import DEFAULT_SCOPES, authorize_url, basic_auth
from omninudge_adapters.reddit.pacing import RedditBudgetHook, utc_now
from omninudge_adapters.reddit.parsing import Context, RedditResponse
from omninudge_core.errors import InvalidFrame, PayloadTooLarge, Unavailable
from omninudge_core.models import RedditMessage
from omninudge_core.policies.reddit_budget import parse_retry_after, quota_from_headers
from omninudge_core.ports import (
    RedditGrant,
    RedditIdentity,
    RedditListing,
    RedditMessagePage,
    RedditProfile,
    RedditQuota,
)

__all__ = ["HttpxRedditClient", "open_reddit_client"]

log = logging.getLogger(__name__)

SORTS = frozenset({"hot", "new", "rising", "top", "controversial", "best"})
TIME_FILTERS = frozenset({"hour", "day", "week", "month", "year", "all"})
BOXES = frozenset({"inbox", "unread", "sent", "messages"})
MAX_LIMIT = 100  # Reddit clamps larger limits (REDDIT.md §4)
MAX_SUBJECT = 100  # POST_compose: VLength('subject', 100)
MAX_TEXT = 10_000  # VMarkdownLength(max_length=10000)
_SUBREDDIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{1,20}$")
_USERNAME = re.compile(r"^[A-Za-z0-9_-]{3,20}$")
_FULLNAME_T4 = re.compile(r"^t4_[a-z0-9]{1,13}$")


def _subreddit(name: str) -> str:
    if not _SUBREDDIT.match(name):
        raise InvalidFrame(
            f"not a subreddit name: {name!r}", code="invalid_field", field="subreddit"
        )
    return name


def _username(name: str, field: str) -> str:
    bare = name.removeprefix("/").removeprefix("u/")
    if not _USERNAME.match(bare):
        raise InvalidFrame(f"not a Reddit username: {name!r}", code="invalid_field", field=field)
    return bare


class HttpxRedditClient:
    """Reddit's OAuth and API hosts for one registered web app (confidential client).

    ``budget`` gates and observes calls to the API host (see ``pacing.BudgetGate``);
    without one, only Reddit's own 429s slow us down. ``http`` may be shared; a client
    created here is closed by ``aclose``.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        user_agent: str,
        *,
        auth_base: str = "https://www.reddit.com",
        api_base: str = "https://oauth.reddit.com",
        scopes: Sequence[str] = DEFAULT_SCOPES,
        budget: RedditBudgetHook | None = None,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 15.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.client_id = client_id
        self._basic = basic_auth(client_id, client_secret)
        self.redirect_uri = redirect_uri
        self.user_agent = user_agent
        self.auth_base = auth_base.rstrip("/")
        self.api_base = api_base.rstrip("/")
        self.scopes = tuple(scopes)
        self.budget = budget
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._clock = clock
        self.last_quota: RedditQuota | None = None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> HttpxRedditClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- transport ---------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> RedditResponse:
        try:
            answer = await self._http.request(
                method,
                url,
                params=params,
                data=form,
                headers={"User-Agent": self.user_agent, **headers},
                follow_redirects=False,
            )
            content = answer.content
        except httpx.TimeoutException as exc:
            raise Unavailable("Reddit did not answer in time", code="reddit_unavailable") from exc
        except httpx.HTTPError as exc:
            raise Unavailable("Reddit could not be reached", code="reddit_unavailable") from exc
        log.debug("reddit %s %s -> %s", method, answer.url.path, answer.status_code)
        text = content.decode("utf-8", errors="replace")
        body: Any = None
        if text.strip():
            try:
                body = json.loads(text)
            except ValueError:
                body = None  # an HTML page (429 "whoa there", some 401s)
        headers_lower = {name.lower(): value for name, value in answer.headers.items()}
        return RedditResponse(
            status=answer.status_code, headers=headers_lower, body=body, text=text
        )

    async def _token_call(self, path: str, form: Mapping[str, str]) -> RedditResponse:
        response = await self._send(
            "POST", self.auth_base + path, headers={"Authorization": self._basic}, form=form
        )
        error = parsing.token_error(response, self._clock())
        if error is not None:
            raise error
        return response

    async def _api_call(
        self,
        method: str,
        path: str,
        access_token: str,
        *,
        params: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
        context: Context = "default",
        subject: str = "",
    ) -> RedditResponse:
        if self.budget is not None:
            await self.budget.acquire()
        query = {**(params or {}), "raw_json": "1"}
        response = await self._send(
            method,
            self.api_base + path,
            headers={"Authorization": f"bearer {access_token}"},
            params=query,
            form=form,
        )
        retry_at: datetime | None = None
        if response.status == 429:
            quota = quota_from_headers(response.headers)
            if self.budget is not None:
                retry_after = parse_retry_after(response.header("retry-after"))
                retry_at = self.budget.rate_limited(retry_after, quota)
        else:
            quota = (
                self.budget.observe(response.headers)
                if self.budget is not None
                else quota_from_headers(response.headers)
            )
            if quota.remaining is not None or quota.used is not None:
                self.last_quota = quota
        error = parsing.api_error(
            response, self._clock(), context=context, subject=subject, retry_at=retry_at
        )
        if error is not None:
            raise error
        return response

    # --- OAuth ---------------------------------------------------------------------------

    def authorize_url(self, *, state: str, scopes: Sequence[str] | None = None) -> str:
        """The consent page for this app (``duration=permanent``)."""
        return authorize_url(
            self.auth_base,
            client_id=self.client_id,
            redirect_uri=self.redirect_uri,
            state=state,
            scopes=self.scopes if scopes is None else scopes,
        )

    async def exchange_code(self, code: str) -> RedditGrant:
        """Code → tokens. Raises RedditGrantInvalid (bad or used code), RedditAppRevoked,
        RateLimited, Unavailable."""
        response = await self._token_call(
            "/api/v1/access_token",
            {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri},
        )
        return parsing.grant_from_json(response.body)

    async def refresh(self, refresh_token: str) -> RedditGrant:
        """A new access token. The answer's ``refresh_token`` (Reddit returns one since
        2021, possibly rotated) replaces the old one; if absent the old one is kept.
        Raises RedditGrantInvalid when the refresh token is dead (re-consent)."""
        response = await self._token_call(
            "/api/v1/access_token", {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        grant = parsing.grant_from_json(response.body)
        if grant.refresh_token is None:
            return RedditGrant(
                access_token=grant.access_token,
                expires_in=grant.expires_in,
                scope=grant.scope,
                refresh_token=refresh_token,
            )
        return grant

    async def revoke(self, token: str, *, hint: str = "refresh_token") -> None:
        """Revoke a token (a refresh token takes its access tokens with it); any 2xx is
        success, an unknown token too."""
        if hint not in ("refresh_token", "access_token"):
            raise ValueError("hint is refresh_token or access_token")
        await self._token_call("/api/v1/revoke_token", {"token": token, "token_type_hint": hint})

    # --- API -----------------------------------------------------------------------------

    async def me(self, access_token: str) -> RedditIdentity:
        response = await self._api_call("GET", "/api/v1/me", access_token)
        return parsing.identity_from_json(response.body)

    async def listing(
        self,
        access_token: str,
        *,
        subreddit: str,
        sort: str,
        after: str | None = None,
        limit: int = 25,
        t: str | None = None,
    ) -> RedditListing:
        """One page of ``/r/{subreddit}/{sort}``. Raises InvalidFrame for a bad name,
        sort or ``t``; NotFound (codes ``subreddit_banned|private|quarantined|not_found``)."""
        _subreddit(subreddit)
        if sort not in SORTS:
            raise InvalidFrame(f"unknown sort {sort!r}", code="invalid_field", field="sort")
        if t is not None and t not in TIME_FILTERS:
            raise InvalidFrame(f"unknown time filter {t!r}", code="invalid_field", field="t")
        params = {"limit": str(max(1, min(MAX_LIMIT, limit)))}
        if after:
            params["after"] = after
        if sort in ("top", "controversial"):
            # Sent explicitly, as PRAW does (REDDIT.md §4).
            params["t"] = t or "all"
        response = await self._api_call(
            "GET",
            f"/r/{subreddit}/{sort}",
            access_token,
            params=params,
            context="listing",
            subject=subreddit,
        )
        return parsing.listing_from_json(response.body)

    async def compose(self, access_token: str, *, to: str, subject: str, text: str) -> None:
        """Start a conversation (``/api/compose``; Reddit returns no id). Raises NotFound
        (``reddit_user_not_found``), RedditRecipientRefused, RateLimited (``RATELIMIT``,
        with the wait Reddit names), PayloadTooLarge, RedditRequestRejected."""
        recipient = _username(to, "to")
        if len(subject) > MAX_SUBJECT:
            raise PayloadTooLarge("subject too long", field="subject", limit=MAX_SUBJECT)
        if len(text) > MAX_TEXT:
            raise PayloadTooLarge("text too long", field="text", limit=MAX_TEXT)
        response = await self._api_call(
            "POST",
            "/api/compose",
            access_token,
            form={"api_type": "json", "to": recipient, "subject": subject, "text": text},
            context="compose",
            subject=recipient,
        )
        self._raise_json_errors(response)

    async def reply(self, access_token: str, *, thing_id: str, text: str) -> RedditMessage:
        """Reply in an existing thread (``/api/comment`` with ``thing_id=t4_…``)."""
        if not _FULLNAME_T4.match(thing_id):
            raise InvalidFrame(
                "thing_id must be a t4_ fullname", code="invalid_field", field="thing_id"
            )
        if len(text) > MAX_TEXT:
            raise PayloadTooLarge("text too long", field="text", limit=MAX_TEXT)
        response = await self._api_call(
            "POST",
            "/api/comment",
            access_token,
            form={"api_type": "json", "thing_id": thing_id, "text": text},
            context="compose",
        )
        return parsing.reply_from_json(response.body, self._clock())

    async def messages(
        self, access_token: str, *, box: str, after: str | None = None, limit: int = 100
    ) -> RedditMessagePage:
        """One page of ``/message/{box}`` (``inbox``, ``unread``, ``sent``, ``messages``);
        reading never marks read (``mark=false``). A redirect means messaging is
        unavailable for this account (Unavailable ``reddit_messaging_unavailable``)."""
        if box not in BOXES:
            raise InvalidFrame(f"unknown box {box!r}", code="invalid_field", field="box")
        params = {"limit": str(max(1, min(MAX_LIMIT, limit))), "mark": "false"}
        if after:
            params["after"] = after
        response = await self._api_call(
            "GET", f"/message/{box}", access_token, params=params, context="messages"
        )
        return parsing.messages_from_json(response.body)

    async def user_about(self, access_token: str, name: str) -> RedditProfile:
        username = _username(name, "name")
        response = await self._api_call(
            "GET", f"/user/{username}/about", access_token, context="user", subject=username
        )
        return parsing.profile_from_json(response.body)

    async def username_available(self, access_token: str, name: str) -> bool:
        """True when no account has this name. Raises RedditRequestRejected (BAD_USERNAME)."""
        response = await self._api_call(
            "GET", "/api/username_available", access_token, params={"user": name}, context="user"
        )
        return parsing.username_available_from_json(response.body, self._clock())

    def _raise_json_errors(self, response: RedditResponse) -> None:
        error = parsing.json_errors_error(response.body, now=self._clock())
        if error is not None:
            raise error
        body = response.body
        if not (isinstance(body, Mapping) and isinstance(body.get("json"), Mapping)):
            # e.g. the legacy jQuery array answered without api_type=json.
            raise Unavailable("unexpected answer from Reddit", code="reddit_bad_response")


@contextlib.asynccontextmanager
async def open_reddit_client(
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    user_agent: str,
    **options: Any,
) -> AsyncIterator[HttpxRedditClient]:
    """A client with its own connection pool, closed on exit (call from ``lifespan``)."""
    client = HttpxRedditClient(client_id, client_secret, redirect_uri, user_agent, **options)
    try:
        yield client
    finally:
        await client.aclose()
