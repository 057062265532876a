"""Pure mapping of Reddit's answers to core types and typed errors (no I/O).

``RedditResponse`` is the transport-neutral view of one answer (status, lower-cased
headers, decoded JSON body or raw text); the client builds it from httpx, the tests
build it from the recorded fixtures, and both go through the same functions here.

Reddit's shapes drift over the years (REDDIT.md §9), so parsing is defensive: a
missing optional field becomes None, a wrong shape becomes ``Unavailable`` with code
``reddit_bad_response`` (Reddit's fault, not the caller's), never a KeyError.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs

from omninudge_adapters.reddit.errors import (
    RedditAppRevoked,
    RedditGrantInvalid,
    RedditInsufficientScope,
    RedditRecipientRefused,
    RedditRequestRejected,
    RedditTokenInvalid,
)
from omninudge_core.errors import (
    Forbidden,
    NotFound,
    OmniNudgeError,
    RateLimited,
    Unavailable,
)
from omninudge_core.models import RedditMessage
from omninudge_core.policies.reddit_budget import parse_retry_after
from omninudge_core.ports import (
    RedditGrant,
    RedditIdentity,
    RedditListing,
    RedditMessagePage,
    RedditPost,
    RedditProfile,
)

__all__ = [
    "Context",
    "RedditResponse",
    "api_error",
    "grant_from_json",
    "identity_from_json",
    "json_errors_error",
    "listing_from_json",
    "message_from_data",
    "messages_from_json",
    "parse_ratelimit_wait",
    "post_from_data",
    "profile_from_json",
    "reply_from_json",
    "token_error",
    "username_available_from_json",
]

# What an API call was about, so one status maps to the right error (a 404 on a
# listing is an unknown subreddit, on /user/{name}/about an unknown user).
Context = Literal["default", "listing", "user", "messages", "compose"]

_PLACEHOLDER_THUMBNAILS = frozenset({"", "self", "default", "image", "nsfw", "spoiler"})
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")
_RECIPIENT_REFUSALS = frozenset(
    {"NOT_WHITELISTED_BY_USER_MESSAGE", "USER_BLOCKED", "USER_BLOCKED_MESSAGE", "USER_MUTED"}
)
_NOT_FOUND_CODES = frozenset({"USER_DOESNT_EXIST", "SUBREDDIT_NOEXIST"})
_SUBREDDIT_REASONS = {
    "private": "subreddit_private",
    "banned": "subreddit_banned",
    "quarantined": "subreddit_quarantined",
    "gold_only": "subreddit_private",
}
_WAIT = re.compile(r"(\d+(?:\.\d+)?)\s*(millisecond|second|minute|hour)s?", re.IGNORECASE)
_UNIT_S = {"millisecond": 0.001, "second": 1.0, "minute": 60.0, "hour": 3600.0}


@attrs.frozen
class RedditResponse:
    """One answer from Reddit. ``body`` is the decoded JSON (None if the body was not
    JSON); ``text`` is the raw body; ``headers`` have lower-cased names."""

    status: int
    headers: Mapping[str, str]
    body: Any = None
    text: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _bad(what: str) -> Unavailable:
    return Unavailable(f"unexpected answer from Reddit: {what}", code="reddit_bad_response")


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(what)
    return value


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _bad(f"{key} is not a string")
    return value


def _opt_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _number(data: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        if default is not None:
            return default
        raise _bad(f"{key} is not a number")
    return float(value)


def _int(data: Mapping[str, Any], key: str) -> int:
    return int(_number(data, key, 0.0))


def _listing_data(body: object) -> Mapping[str, Any]:
    outer = _mapping(body, "not a JSON object")
    if outer.get("kind") != "Listing":
        raise _bad("not a Listing")
    data = _mapping(outer.get("data"), "Listing without data")
    if not isinstance(data.get("children"), list):
        raise _bad("Listing without children")
    return data


# --- success shapes ------------------------------------------------------------------------


def grant_from_json(body: object) -> RedditGrant:
    """The token endpoint's success body (REDDIT.md §2.2). Call ``token_error`` first."""
    data = _mapping(body, "token answer is not an object")
    return RedditGrant(
        access_token=_text(data, "access_token"),
        expires_in=int(_number(data, "expires_in")),
        scope=_opt_text(data, "scope") or "",
        refresh_token=_opt_text(data, "refresh_token") or None,
    )


def identity_from_json(body: object) -> RedditIdentity:
    """``/api/v1/me``: the account object, unwrapped (REDDIT.md §3)."""
    data = _mapping(body, "me is not an object")
    icon = _opt_text(data, "icon_img")
    return RedditIdentity(
        id=_text(data, "id"),
        name=_text(data, "name"),
        created_utc=_number(data, "created_utc"),
        icon_img=html.unescape(icon) if icon else None,
    )


def profile_from_json(body: object) -> RedditProfile:
    """``/user/{name}/about`` (``{"kind": "t2", "data": …}``); a suspended account
    carries only ``name`` and ``is_suspended``."""
    outer = _mapping(body, "about is not an object")
    data = _mapping(outer.get("data"), "about without data")
    accept = data.get("accept_pms")
    created = data.get("created_utc")
    return RedditProfile(
        name=_text(data, "name"),
        id=_opt_text(data, "id"),
        created_utc=float(created) if isinstance(created, int | float) else None,
        accept_pms=accept if isinstance(accept, bool) else None,
        is_suspended=data.get("is_suspended") is True,
    )


def username_available_from_json(body: object, now: datetime) -> bool:
    """``/api/username_available``: bare ``true`` (no such account) / ``false``.
    Raises RedditRequestRejected for an invalid name (``json.errors``)."""
    if isinstance(body, bool):
        return body
    error = json_errors_error(body, now=now)
    raise error if error is not None else _bad("username_available is not a boolean")


def _preview_url(data: Mapping[str, Any]) -> str | None:
    preview = data.get("preview")
    if not isinstance(preview, Mapping):
        return None
    images = preview.get("images")
    if not isinstance(images, list) or not images or not isinstance(images[0], Mapping):
        return None
    source = images[0].get("source")
    url = source.get("url") if isinstance(source, Mapping) else None
    # raw_json=1 should make this unnecessary; unescape anyway in case it was ignored.
    return html.unescape(url) if isinstance(url, str) and url else None


def _thumbnail(data: Mapping[str, Any]) -> str | None:
    value = data.get("thumbnail")
    if not isinstance(value, str) or value in _PLACEHOLDER_THUMBNAILS:
        return None
    if not value.startswith(("http://", "https://")):
        return None
    return html.unescape(value)


def media_type_of(data: Mapping[str, Any]) -> str:
    """``image | video | gallery | link | self`` from ``is_gallery``, ``is_video``,
    ``post_hint`` and ``is_self`` (REDDIT.md §4: galleries have no ``post_hint``)."""
    hint = data.get("post_hint")
    if data.get("is_gallery") is True:
        return "gallery"
    if data.get("is_video") is True or hint in ("hosted:video", "rich:video"):
        return "video"
    if hint == "image":
        return "image"
    if data.get("is_self") is True or hint == "self":
        return "self"
    url = data.get("url")
    if isinstance(url, str) and url.lower().split("?", 1)[0].endswith(_IMAGE_SUFFIXES):
        return "image"
    return "link"


def post_from_data(data: Mapping[str, Any]) -> RedditPost:
    """One ``t3`` child's ``data`` as a ``RedditPost``."""
    author = _opt_text(data, "author") or "[deleted]"
    return RedditPost(
        id=_text(data, "id"),
        title=html.unescape(_text(data, "title")),
        author=author,
        permalink=_text(data, "permalink"),
        url=html.unescape(_opt_text(data, "url") or ""),
        thumbnail=_thumbnail(data),
        media_type=media_type_of(data),
        over_18=data.get("over_18") is True,
        score=_int(data, "score"),
        num_comments=_int(data, "num_comments"),
        created_utc=_number(data, "created_utc"),
        preview_url=_preview_url(data),
    )


def listing_from_json(body: object) -> RedditListing:
    """A subreddit listing; non-``t3`` children are skipped. The end is ``after is None``
    (never inferred from a short page, REDDIT.md §4)."""
    data = _listing_data(body)
    posts = tuple(
        post_from_data(_mapping(child.get("data"), "child without data"))
        for child in data["children"]
        if isinstance(child, Mapping) and child.get("kind") == "t3"
    )
    after = data.get("after")
    return RedditListing(posts=posts, after=after if isinstance(after, str) else None)


def message_from_data(data: Mapping[str, Any]) -> RedditMessage:
    """One ``t4``'s ``data``; ``author`` is None for deleted or subreddit-sourced ones."""
    author = _opt_text(data, "author")
    if author in ("[deleted]", ""):
        author = None
    fullname = _opt_text(data, "name") or "t4_" + _text(data, "id")
    return RedditMessage(
        fullname=fullname,
        author=author,
        dest=_opt_text(data, "dest") or "",
        body=_opt_text(data, "body") or "",
        created_utc=_number(data, "created_utc"),
        subject=_opt_text(data, "subject") or "",
    )


def messages_from_json(body: object, *, include_replies: bool = True) -> RedditMessagePage:
    """``/message/{inbox,sent,messages}``: ``t4`` items (``t1`` comment replies skipped);
    with ``include_replies`` a thread's nested ``replies`` Listing is flattened in."""
    data = _listing_data(body)
    found: list[RedditMessage] = []

    def walk(children: list[Any]) -> None:
        for child in children:
            if not isinstance(child, Mapping) or child.get("kind") != "t4":
                continue
            item = _mapping(child.get("data"), "t4 without data")
            found.append(message_from_data(item))
            replies = item.get("replies")
            if include_replies and isinstance(replies, Mapping):
                walk(_listing_data(replies)["children"])

    walk(data["children"])
    after = data.get("after")
    return RedditMessagePage(messages=tuple(found), after=after if isinstance(after, str) else None)


def reply_from_json(body: object, now: datetime) -> RedditMessage:
    """``/api/comment`` on a ``t4_``: ``json.data.things[0]`` is the new message.
    Raises the mapped ``json.errors`` error if there is one."""
    error = json_errors_error(body, now=now)
    if error is not None:
        raise error
    outer = _mapping(_mapping(body, "not an object").get("json"), "no json envelope")
    things = _mapping(outer.get("data"), "no data").get("things")
    if not isinstance(things, list) or not things:
        raise _bad("reply without things")
    thing = _mapping(things[0], "thing is not an object")
    if thing.get("kind") != "t4":
        raise _bad("reply is not a t4")
    return message_from_data(_mapping(thing.get("data"), "t4 without data"))


# --- errors ------------------------------------------------------------------------------


def parse_ratelimit_wait(message: str) -> float | None:
    """Seconds to wait from a ``RATELIMIT`` message ("Try again in 6 seconds.",
    "… in 9 minutes.", "… 500 milliseconds"), or None if it names no delay."""
    match = _WAIT.search(message)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_S[match.group(2).lower()]


def json_errors_error(body: object, *, now: datetime) -> OmniNudgeError | None:
    """The typed error for a ``{"json": {"errors": [[CODE, message, field], …]}}`` body
    (REDDIT.md §5.1), or None when there are no errors. ``now`` dates a RATELIMIT's
    ``retry_at``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("json"), Mapping):
        return None
    errors = body["json"].get("errors")
    if not isinstance(errors, list) or not errors:
        return None
    first = errors[0]
    if not isinstance(first, list) or not first or not isinstance(first[0], str):
        return _bad("json.errors entry is not [code, message, field]")
    code = first[0]
    message = str(first[1]) if len(first) > 1 and first[1] is not None else code
    field = str(first[2]) if len(first) > 2 and first[2] is not None else None
    if code == "RATELIMIT":
        wait = parse_ratelimit_wait(message)
        return RateLimited(
            f"Reddit: {message}",
            retry_at=now + timedelta(seconds=wait if wait is not None else 60.0),
            code="reddit_rate_limited",
        )
    if code in _NOT_FOUND_CODES:
        return NotFound(f"Reddit: {message}", code="reddit_user_not_found")
    if code in _RECIPIENT_REFUSALS:
        return RedditRecipientRefused(f"Reddit: {message}", reddit_code=code, field=field)
    return RedditRequestRejected(f"Reddit: {message}", reddit_code=code, field=field)


def _retry_at(response: RedditResponse, now: datetime, fallback_s: float) -> datetime:
    retry_after = parse_retry_after(response.header("retry-after"))
    return now + timedelta(seconds=retry_after if retry_after is not None else fallback_s)


def token_error(
    response: RedditResponse, now: datetime, *, fallback_retry_s: float = 10.0
) -> OmniNudgeError | None:
    """The typed error for an answer of ``/api/v1/access_token`` or ``revoke_token``, or
    None for a success. Any body with ``error`` is a failure whatever the status
    (2016: 200 + ``invalid_grant``; 2023: 400)."""
    status, body = response.status, response.body
    if status == 429:
        return RateLimited(
            "Reddit's token endpoint is throttling us",
            retry_at=_retry_at(response, now, fallback_retry_s),
            code="reddit_rate_limited",
        )
    if status in (401, 403):
        # Basic auth refused: the client id/secret no longer work (REDDIT.md §0, §2.2).
        return RedditAppRevoked("Reddit refused the app's client credentials")
    if status >= 500:
        return Unavailable(f"Reddit's token endpoint answered {status}", code="reddit_unavailable")
    error = body.get("error") if isinstance(body, Mapping) else None
    if error in ("unauthorized_client", "invalid_client"):
        return RedditAppRevoked(f"Reddit refused the app: {error}")
    if error in ("unsupported_grant_type", "invalid_request", "invalid_scope"):
        return RedditRequestRejected(f"Reddit's token endpoint: {error}", reddit_code=str(error))
    if error is not None or status >= 400:
        return RedditGrantInvalid("Reddit refused the code or refresh token; log in again")
    if not 200 <= status < 300:
        return Unavailable(f"Reddit's token endpoint answered {status}", code="reddit_unavailable")
    return None


def api_error(
    response: RedditResponse,
    now: datetime,
    *,
    context: Context = "default",
    subject: str = "",
    retry_at: datetime | None = None,
) -> OmniNudgeError | None:
    """The typed error for an answer of the API host, or None for a success.

    ``context`` says what the call was about; ``subject`` names it in messages (the
    subreddit or user). ``retry_at`` overrides the 429 retry instant (the client passes
    the budget's, which includes back-off); otherwise Retry-After or 2 s.
    Form POSTs also carry errors in a 200 body: see ``json_errors_error``.
    """
    status = response.status
    body = response.body if isinstance(response.body, Mapping) else {}
    reason = body.get("reason")
    challenge = (response.header("www-authenticate") or "").lower()
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        if context == "messages" or context == "compose":
            # PRAW #2077: /message/* answered 302 → /login/ after the PM→chat change.
            return Unavailable("Reddit messaging unavailable", code="reddit_messaging_unavailable")
        if context == "listing":
            return NotFound(f"no subreddit r/{subject}", code="subreddit_not_found")
        return Unavailable(f"Reddit redirected ({status})", code="reddit_unavailable")
    if status == 429:
        return RateLimited(
            "Reddit is rate limiting this app",
            retry_at=retry_at if retry_at is not None else _retry_at(response, now, 2.0),
            code="reddit_rate_limited",
        )
    if status == 401:
        # Key on status + header: the body is JSON in 2016 but HTML since 2020 (REDDIT.md §3).
        return RedditTokenInvalid("Reddit refused the access token")
    if status == 403 and "insufficient_scope" in challenge:
        return RedditInsufficientScope("the Reddit token lacks a needed scope")
    if isinstance(reason, str) and reason in _SUBREDDIT_REASONS:
        return NotFound(f"r/{subject} is {reason}", code=_SUBREDDIT_REASONS[reason])
    if isinstance(reason, str) and reason in _NOT_FOUND_CODES:
        return NotFound(f"no Reddit user {subject}".strip(), code="reddit_user_not_found")
    if status == 404:
        if context == "listing":
            return NotFound(f"no subreddit r/{subject}", code="subreddit_not_found")
        if context == "user":
            return NotFound(f"no Reddit user {subject}", code="reddit_user_not_found")
        return NotFound("Reddit: not found", code="reddit_not_found")
    if status == 403:
        if context == "listing":
            return NotFound(f"r/{subject} is not accessible", code="subreddit_private")
        return Forbidden("Reddit: forbidden", code="reddit_forbidden")
    if status >= 500:
        return Unavailable(f"Reddit answered {status}", code="reddit_unavailable")
    label = str(reason) if isinstance(reason, str) else str(status)
    return RedditRequestRejected(f"Reddit answered {status}", reddit_code=label)
