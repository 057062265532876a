"""A Reddit stand-in: one ASGI app speaking Reddit's wire format on both hosts.

Shipped as product code (like httpx's ``MockTransport``) so our tests and integrators
can run the whole Reddit flow offline: point ``REDDIT_AUTH_BASE`` and
``REDDIT_API_BASE`` at it. Its answers are built from the recorded responses in a
fixtures directory (``tests/fixtures/reddit`` in this repository), so their shapes
(keys, status codes, headers) are Reddit's, and it keeps state:

- registered apps (client id, secret, redirect URI) and users;
- authorization codes (single use), access tokens (expiring) and refresh tokens
  (optionally rotated on refresh; revoking one revokes its access tokens);
- a message store: ``/api/compose`` delivers a ``t4`` into the recipient's inbox and
  the sender's sent box; ``/api/comment`` replies inside a thread;
- subreddit listings from the recorded ones (``popular``, ``askreddit``; more with
  ``add_subreddit``, ids re-based), paged with ``after``/``limit``;
- ``X-Ratelimit-*`` from its own per-client-id counter (600 s window, 1000 requests by
  default) and the HTML 429 page with ``Retry-After`` beyond it;
- a request counter per ``"METHOD /path"`` and a timed log, and switches: ``outage``
  (503 everywhere), ``app_revoked`` (401 at the token endpoint), ``messaging_redirect``
  (302 on ``/message/*``), ``legacy_invalid_grant`` (2016's 200 + ``invalid_grant``),
  ``force_429`` (the next N API calls), ``compose_wait_s`` (``RATELIMIT`` on compose).

``GET /api/v1/authorize`` redirects at once to the redirect URI with ``code`` and
``state`` for ``consent_user`` (the consent click, for tests); with no consent user it
shows a small form to pick one (for people). Run it standalone with
``python -m omninudge_adapters.reddit.testing --help``.

The auth host lives in ``standin_oauth`` and the message store in ``standin_messages``;
this module routes requests, counts them against the rate limit and serves listings.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from omninudge_adapters.reddit.standin_messages import (
    StandInMail,
    StandInUser,
    b36,
    error_response,
    json_errors,
    json_response,
    page_of,
)
from omninudge_adapters.reddit.standin_oauth import StandInOAuth, StandInToken

__all__ = ["RecordedRequest", "RedditStandIn", "StandInUser", "main", "running_standin"]

_USERNAME = re.compile(r"^[A-Za-z0-9_-]{3,20}$")
_LISTING = re.compile(r"^/r/([^/]+)(?:/(hot|new|rising|top|controversial|best))?$")
_ABOUT = re.compile(r"^/user/([^/]+)/about$")
_TROPHIES = re.compile(r"^/api/v1/user/([^/]+)/trophies$")
_BOX = re.compile(r"^/message/(inbox|unread|sent|messages)$")
_WHOA = (
    "<!doctype html><html><head><title>Too Many Requests</title></head><body>"
    "<h1>whoa there, pardner!</h1><p>we're sorry, but you appear to be a bot and we've "
    "seen too many requests from you lately. we enforce a hard speed limit on requests "
    "that appear to come from bots to prevent abuse.</p></body></html>"
)


@attrs.define
class RecordedRequest:
    """One request the stand-in received (``client_id`` is set once a token names it)."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    user_agent: str | None
    client_id: str | None = None


class RedditStandIn(StandInOAuth):
    """State and ASGI app (``.app``) of the stand-in. ``clock`` gives epoch seconds."""

    def __init__(
        self,
        fixtures_dir: str | Path,
        *,
        rate_limit: int = 1000,
        window_s: int = 600,
        retry_after_s: int = 2,
        expires_in: int = 86400,
        rotate_refresh_tokens: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fixtures_dir = Path(fixtures_dir)
        self.rate_limit = rate_limit
        self.window_s = window_s
        self.retry_after_s = retry_after_s
        self.clock = clock
        self._init_oauth(expires_in=expires_in, rotate_refresh_tokens=rotate_refresh_tokens)
        # switches
        self.outage = False
        self.messaging_redirect = False
        self.force_429 = 0
        # state
        self.users: dict[str, StandInUser] = {}
        self.banned: set[str] = set()
        self.private: set[str] = set()
        self.quarantined: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.log: list[RecordedRequest] = []
        self._windows: dict[str, tuple[float, int]] = {}
        self._next_id = int("50000000", 36)
        self._load_fixtures()
        self.app = Starlette(
            routes=[Route("/{path:path}", self._dispatch, methods=["GET", "POST"])]
        )

    # --- set-up ----------------------------------------------------------------------------

    def _fixture(self, name: str) -> Any:
        data = json.loads((self.fixtures_dir / name).read_text(encoding="utf-8"))
        response = data["response"]
        return response["body"] if "body" in response else response.get("body_text", "")

    def _load_fixtures(self) -> None:
        self._me = self._fixture("me_200.json")
        self._about = self._fixture("user_about_200.json")
        self._quarantined = self._fixture("subreddit_listing_quarantined_403.json")
        self._empty_listing = self._fixture("message_unread_empty_200.json")
        templates = {
            "t4": self._fixture("message_sent_200.json")["data"]["children"][0]["data"],
            "reply": self._fixture("comment_reply_to_message_200.json"),
            "jquery": self._fixture("compose_200_jquery_without_api_type.json"),
            "listing": self._empty_listing,
        }
        self.mail = StandInMail(self.users, templates, new_id=self._new_id, clock=self.clock)
        new = self._fixture("subreddit_askreddit_new_200.json")["data"]["children"]
        top = self._fixture("subreddit_askreddit_top_all_200.json")["data"]["children"]
        hot = self._fixture("subreddit_popular_hot_200.json")["data"]["children"]
        self.subreddits: dict[str, dict[str, list[dict[str, Any]]]] = {
            "popular": {"hot": hot},
            "askreddit": {"hot": new, "new": new, "top": top},
        }

    def add_user(self, name: str, **options: Any) -> StandInUser:
        """Create a Reddit account (``accept_pms``, ``whitelist_only``, ``suspended``)."""
        user = StandInUser(name=name, id=self._new_id(), created_utc=1.6e9, **options)
        self.users[name.lower()] = user
        return user

    def add_subreddit(self, name: str, *, like: str = "popular") -> None:
        """A subreddit whose posts are copies of ``like``'s, with fresh ids."""
        sorts: dict[str, list[dict[str, Any]]] = {}
        for sort, children in self.subreddits[like.lower()].items():
            rebased = []
            for child in copy.deepcopy(children):
                data, post_id = child["data"], self._new_id()
                data.update(id=post_id, name=f"t3_{post_id}", subreddit=name)
                data.update(subreddit_name_prefixed=f"r/{name}")
                data["permalink"] = f"/r/{name}/comments/{post_id}/"
                rebased.append(child)
            sorts[sort] = rebased
        self.subreddits[name.lower()] = sorts

    def _new_id(self) -> str:
        self._next_id += 1
        return b36(self._next_id)

    @property
    def compose_wait_s(self) -> int | None:
        """When set, compose answers ``RATELIMIT`` naming this many seconds."""
        return self.mail.compose_wait_s

    @compose_wait_s.setter
    def compose_wait_s(self, seconds: int | None) -> None:
        self.mail.compose_wait_s = seconds

    # --- plumbing --------------------------------------------------------------------------

    async def _dispatch(self, request: Request) -> Response:
        path = "/" + request.path_params["path"].strip("/")
        path = path.removesuffix(".json")
        method = request.method
        self.requests[f"{method} {path}"] += 1
        form = dict(await request.form()) if method == "POST" else {}
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        record = RecordedRequest(
            at=self.clock(),
            method=method,
            path=path,
            query=dict(request.query_params),
            form=fields,
            user_agent=request.headers.get("user-agent"),
        )
        self.log.append(record)
        if path in ("/api/v1/authorize", "/api/v1/authorize.compact"):
            return self.authorize(request, fields)
        if self.outage:
            return Response(b"", status_code=503)
        if path in ("/api/v1/access_token", "/api/v1/revoke_token"):
            return self.token_endpoint(request, path, fields)
        return self._api(request, record, fields)

    def _rate_headers(self, client_id: str) -> dict[str, str] | None:
        """Count one request against the client's window; None when over budget."""
        now = self.clock()
        start = now - (now % self.window_s)
        window_start, used = self._windows.get(client_id, (start, 0))
        if window_start != start:
            used = 0
        if used >= self.rate_limit:
            return None
        used += 1
        self._windows[client_id] = (start, used)
        return {
            "x-ratelimit-used": str(used),
            "x-ratelimit-remaining": f"{float(self.rate_limit - used):.1f}",
            "x-ratelimit-reset": str(int(start + self.window_s - now)),
        }

    def _too_many(self) -> Response:
        return HTMLResponse(
            _WHOA, status_code=429, headers={"retry-after": str(self.retry_after_s)}
        )

    # --- API host --------------------------------------------------------------------------

    def _api(self, request: Request, record: RecordedRequest, form: dict[str, str]) -> Response:
        token = self.bearer(request)
        if token is None:
            # Reddit keys this on status + header; the body was JSON in 2016 (REDDIT.md §3).
            return json_response(
                {"message": "Unauthorized", "error": 401},
                401,
                {"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'},
            )
        record.client_id = token.client_id
        if self.force_429 > 0:
            self.force_429 -= 1
            return self._too_many()
        limits = self._rate_headers(token.client_id)
        if limits is None:
            return self._too_many()
        response = self._route(request, record.method, record.path, form, token)
        response.headers.update(limits)
        return response

    def _needs(self, token: StandInToken, scope: str) -> Response | None:
        if "*" in token.scopes or scope in token.scopes:
            return None
        return json_response(
            {"message": "Forbidden", "error": 403},
            403,
            {"www-authenticate": 'Bearer realm="reddit", error="insufficient_scope"'},
        )

    def _route(
        self, request: Request, method: str, path: str, form: dict[str, str], token: StandInToken
    ) -> Response:
        query = request.query_params
        if path == "/api/v1/me" and method == "GET":
            return self._needs(token, "identity") or self._me_body(token)
        if match := _LISTING.match(path):
            return self._needs(token, "read") or self._listing(match[1], match[2] or "hot", query)
        if match := _ABOUT.match(path):
            return self._needs(token, "read") or self._user_about(match[1])
        if match := _TROPHIES.match(path):
            if match[1].lower() not in self.users:
                return json_response(
                    {
                        "fields": ["id"],
                        "explanation": "that user doesn't exist",
                        "message": "Bad Request",
                        "reason": "USER_DOESNT_EXIST",
                    },
                    400,
                )
            return json_response({"kind": "TrophyList", "data": {"trophies": []}})
        if path == "/api/username_available":
            name = query.get("user", "")
            if not _USERNAME.match(name):
                return json_errors("BAD_USERNAME", "invalid user name", "user")
            return json_response(name.lower() not in self.users)
        if token.user is None:
            return json_errors("USER_REQUIRED", "Please log in to do that.", None)
        if match := _BOX.match(path):
            if self.messaging_redirect:
                return Response(
                    status_code=302, headers={"location": "https://www.reddit.com/login/"}
                )
            return self._needs(token, "privatemessages") or self.mail.box(
                token.user, match[1], query
            )
        if path == "/api/compose" and method == "POST":
            return self._needs(token, "privatemessages") or self.mail.compose(token.user, form)
        if path == "/api/comment" and method == "POST":
            return self._needs(token, "privatemessages") or self.mail.comment(token.user, form)
        if path == "/api/read_message" and method == "POST":
            self.mail.mark_read(set(form.get("id", "").split(",")))
            return json_response({})
        if path == "/api/read_all_messages" and method == "POST":
            self.mail.mark_all_read(token.user)
            return json_response({}, 202)
        return error_response(404, "Not Found")

    def _me_body(self, token: StandInToken) -> Response:
        if token.user is None:
            return error_response(403, "Forbidden")
        user = self.users[token.user.lower()]
        body = copy.deepcopy(self._me)
        body.update(name=user.name, id=user.id, created=user.created_utc)
        body.update(created_utc=user.created_utc, oauth_client_id=token.client_id)
        body.update(is_suspended=user.suspended, inbox_count=len(self.mail.unread_of(user.name)))
        body["subreddit"].update(
            display_name=f"u_{user.name}",
            display_name_prefixed=f"u/{user.name}",
            url=f"/user/{user.name}/",
        )
        return json_response(body)

    def _user_about(self, name: str) -> Response:
        user = self.users.get(name.lower())
        if user is None:
            return error_response(404, "Not Found")
        if user.suspended:
            return json_response(
                {
                    "kind": "t2",
                    "data": {
                        "name": user.name,
                        "is_suspended": True,
                        "is_blocked": False,
                        "awardee_karma": 0,
                        "awarder_karma": 0,
                        "total_karma": 0,
                    },
                }
            )
        body = copy.deepcopy(self._about)
        data = body["data"]
        data.update(name=user.name, id=user.id, created=user.created_utc)
        data.update(created_utc=user.created_utc, accept_pms=user.accept_pms)
        data["subreddit"].update(
            display_name=f"u_{user.name}",
            display_name_prefixed=f"u/{user.name}",
            url=f"/user/{user.name}/",
        )
        return json_response(body)

    def _listing(self, name: str, sort: str, query: Any) -> Response:
        key = name.lower()
        if key in self.banned:
            return json_response({"reason": "banned", "message": "Not Found", "error": 404}, 404)
        if key in self.private:
            return json_response({"reason": "private", "message": "Forbidden", "error": 403}, 403)
        if key in self.quarantined:
            return json_response(self._quarantined, 403)
        sorts = self.subreddits.get(key)
        if sorts is None:
            # Unknown subreddits redirect to search (REDDIT.md §4).
            location = f"https://www.reddit.com/subreddits/search.json?q={name}"
            return Response(status_code=302, headers={"location": location})
        sort = "hot" if sort == "best" else sort
        children = sorts.get(sort) or next(iter(sorts.values()))
        return json_response(page_of(children, query, self._empty_listing))


@contextlib.asynccontextmanager
async def running_standin(
    standin: RedditStandIn, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the stand-in with uvicorn on a loopback port; yields its base URL."""
    import asyncio

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(standin.app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the Reddit stand-in stopped during start-up")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in for manual testing or an integrator's CI."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Reddit stand-in for OmniNudge")
    parser.add_argument("--fixtures", required=True, help="directory of recorded responses")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--client-id", default="standin-client")
    parser.add_argument("--client-secret", default="standin-secret")
    parser.add_argument("--redirect-uri", default="http://127.0.0.1:8080/api/auth/reddit/callback")
    parser.add_argument("--user", action="append", default=[], help="a Reddit user to create")
    parser.add_argument("--consent-as", help="skip the consent form: log in as this user")
    args = parser.parse_args(argv)
    standin = RedditStandIn(args.fixtures)
    standin.register_app(args.client_id, args.client_secret, args.redirect_uri)
    for name in args.user:
        standin.add_user(name)
    standin.consent_user = args.consent_as
    uvicorn.run(standin.app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
