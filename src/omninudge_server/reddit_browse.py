"""``GET /api/reddit/r/{subreddit}/{sort}``: subreddit listings, cached (API.md "Reddit").

- Cached for 5 minutes per (subreddit, sort, after, t, limit) in the Cache port (in
  process, or Redis when ``REDIS_URL`` is set, so every instance shares it). Entries
  are kept an hour longer: when Reddit is down or our budget is spent, a stale page is
  served with ``"stale": true`` rather than an error (``policies.cache``).
- Concurrent misses of one key make ONE Reddit request: in-process single flight, and
  with Redis a short lease in the RateLimiter port (a bucket of one token) so other
  instances wait for the winner's page in the cache instead of asking Reddit too.
- ``author_on_platform`` comes from ONE batched ``UserStore.by_usernames`` per page,
  computed per answer (not cached: people join).
- Which token asks Reddit: the caller's own Reddit token (they logged in with Reddit).
  A caller without one gets cached pages, and 503 ``reddit_login_required`` on a miss.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from omninudge_core.errors import (
    InvalidFrame,
    RateLimited,
    Unavailable,
)
from omninudge_core.policies.cache import CachePolicy, Freshness
from omninudge_core.ports import RedditListing, RedditPost
from omninudge_server.handlers import authenticate, json_response, services_of
from omninudge_server.reddit_access import RedditAccess, RedditLoginRequired
from omninudge_server.reddit_feature import RedditFeature, require_reddit
from omninudge_server.wiring import Services

__all__ = ["routes"]

SORTS = ("hot", "new", "top", "rising")
TIME_FILTERS = ("hour", "day", "week", "month", "year", "all")
DEFAULT_LIMIT = 25
POLICY = CachePolicy()  # fresh 5 min, then stale for an hour
LEASE_S = 5.0  # how long other instances wait for the lease holder's page
LEASE_POLL_S = 0.05
PERMALINK_BASE = "https://www.reddit.com"
_AFTER = re.compile(r"^t3_[a-z0-9]{1,16}$")


def _query(request: Request) -> tuple[str, str, str | None, str | None, int]:
    subreddit = request.path_params["subreddit"]
    sort = request.path_params["sort"]
    if sort not in SORTS:
        raise InvalidFrame(
            f"sort must be one of {', '.join(SORTS)}", code="invalid_field", field="sort"
        )
    params = request.query_params
    after = params.get("after") or None
    if after is not None and not _AFTER.match(after):
        raise InvalidFrame("after must be a t3_ fullname", code="invalid_field", field="after")
    t = params.get("t") or None
    if t is not None and t not in TIME_FILTERS:
        raise InvalidFrame(
            f"t must be one of {', '.join(TIME_FILTERS)}", code="invalid_field", field="t"
        )
    raw_limit = params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not (raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= 100):
            raise InvalidFrame(
                "limit must be an integer between 1 and 100", code="invalid_field", field="limit"
            )
        limit = int(raw_limit)
    if sort != "top":
        t = None  # only /top takes a time filter; keeps the cache key canonical
    return subreddit, sort, after, t, limit


def _post_json(post: RedditPost) -> dict[str, Any]:
    return {
        "id": post.id,
        "title": post.title,
        "author": post.author,
        "permalink": PERMALINK_BASE + post.permalink
        if post.permalink.startswith("/")
        else post.permalink,
        "url": post.url,
        "thumbnail": post.thumbnail,
        "preview_url": post.preview_url,
        "media_type": post.media_type,
        "over_18": post.over_18,
        "score": post.score,
        "num_comments": post.num_comments,
        "created_at": datetime.fromtimestamp(post.created_utc, UTC)
        .isoformat()
        .replace("+00:00", "Z"),
    }


def _entry(listing: RedditListing, stored_at: float) -> bytes:
    return orjson.dumps(
        {
            "stored_at": stored_at,
            "after": listing.after,
            "posts": [_post_json(p) for p in listing.posts],
        }
    )


def _read_entry(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) and "stored_at" in entry else None


def _freshness(entry: dict[str, Any], services: Services) -> Freshness:
    stored_at = datetime.fromtimestamp(float(entry["stored_at"]), UTC)
    return POLICY.freshness(stored_at, services.clock())


async def _fetch(
    services: Services,
    feature: RedditFeature,
    user_id: str,
    key: str,
    query: tuple[str, str, str | None, str | None, int],
) -> dict[str, Any]:
    """One Reddit request for ``key`` (the single flight's work), stored in the cache."""
    subreddit, sort, after, t, limit = query
    if services.settings.redis_url is not None:
        lease = await services.rate_limiter.hit(
            f"reddit:lease:{key}", rate_per_s=1 / LEASE_S, burst=1
        )
        if not lease.allowed:
            # Another instance is asking Reddit for this page: wait for its answer.
            deadline = time.monotonic() + LEASE_S
            while time.monotonic() < deadline:
                await asyncio.sleep(LEASE_POLL_S)
                entry = _read_entry(await feature.cache.get(key))
                if entry is not None and _freshness(entry, services) is Freshness.FRESH:
                    return entry
    listing = await RedditAccess(services, feature).call(
        user_id,
        lambda token: feature.client.listing(
            token, subreddit=subreddit, sort=sort, after=after, limit=limit, t=t
        ),
    )
    raw = _entry(listing, services.clock().timestamp())
    await feature.cache.set(key, raw, POLICY.keep_s)
    entry = _read_entry(raw)
    assert entry is not None
    return entry


async def listing(request: Request) -> Response:
    """The normalised page; 404 for a banned, private or unknown subreddit; 503 when
    Reddit is down and nothing is cached (a stale page otherwise)."""
    services = services_of(request)
    principal = await authenticate(request)
    feature = require_reddit(services)
    query = _query(request)
    subreddit, sort, after, t, limit = query
    key = f"reddit:listing:{subreddit.lower()}:{sort}:{after or ''}:{t or ''}:{limit}"
    cached = _read_entry(await feature.cache.get(key))
    entry: dict[str, Any] | None = None
    stale = False
    if cached is not None and _freshness(cached, services) is Freshness.FRESH:
        entry = cached
    else:
        try:
            entry = await feature.flights.run(
                key, lambda: _fetch(services, feature, principal.user_id, key, query)
            )
        except RedditLoginRequired as exc:
            if cached is not None and _freshness(cached, services).usable_when_reddit_is_down:
                entry, stale = cached, True
            else:
                # 503, not 403: this page is out of reach for now, nothing is forbidden.
                raise Unavailable(exc.message, code=exc.code) from exc
        except (Unavailable, RateLimited):
            if cached is None or not _freshness(cached, services).usable_when_reddit_is_down:
                raise
            entry, stale = cached, True
    return json_response(await _answer(services, entry, stale))


async def _answer(services: Services, entry: dict[str, Any], stale: bool) -> dict[str, Any]:
    posts: list[dict[str, Any]] = [dict(p) for p in entry["posts"]]
    names = sorted({p["author"] for p in posts if p["author"] and p["author"] != "[deleted]"})
    found = await services.storage.users.by_usernames(names) if names else {}
    for post in posts:
        user = found.get(str(post["author"]).lower())
        post["author_on_platform"] = user is not None and user.on_platform
    cached_at = datetime.fromtimestamp(float(entry["stored_at"]), UTC)
    return {
        "posts": posts,
        "after": entry["after"],
        "cached_at": cached_at.isoformat().replace("+00:00", "Z"),
        "stale": stale,
    }


routes = [
    Route("/api/reddit/r/{subreddit}/{sort}", listing, methods=["GET"]),
]
