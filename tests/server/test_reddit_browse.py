"""Subreddit browsing: normalised posts, caching, single flight, the shared budget,
Reddit outages - through the real endpoint against the Reddit stand-in."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from omninudge_core.models import User
from tests.server.reddit_env import (
    RedditWorld,
    bearer,
    make_standin,
    reddit_login,
    reddit_world,
)


@pytest.fixture
async def world(tmp_path: Path) -> RedditWorld:  # type: ignore[misc]
    async with reddit_world(tmp_path) as running:
        yield running


async def _token(world: RedditWorld, name: str = "reader") -> str:
    token: str = (await reddit_login(world, name))["access_token"]
    return token


async def test_a_listing_is_normalised_with_author_on_platform_from_our_users(
    world: RedditWorld,
) -> None:
    token = await _token(world)
    async with world.server.client(headers=bearer(token)) as http:
        first = (await http.get("/api/reddit/r/popular/hot", params={"limit": 10})).json()
        author = next(p["author"] for p in first["posts"] if p["author"] != "[deleted]")
        services = world.server.app.state.services
        await services.storage.users.create(
            User(id=services.new_id(), username=author.upper(), created_at=services.clock())
        )
        again = (await http.get("/api/reddit/r/popular/hot", params={"limit": 10})).json()
        metrics = (await http.get("/metrics")).text
    post = again["posts"][0]
    assert set(post) >= {
        "id", "title", "author", "author_on_platform", "permalink", "url", "thumbnail",
        "media_type", "over_18", "score", "num_comments", "created_at",
    }  # fmt: skip
    assert post["permalink"].startswith("https://www.reddit.com/r/")
    assert post["created_at"].endswith("Z")
    assert again["stale"] is False
    assert again["cached_at"] == first["cached_at"]
    flags = {p["author"]: p["author_on_platform"] for p in again["posts"]}
    assert flags[author] is True
    assert sum(flags.values()) == 1
    assert not any(p["author_on_platform"] for p in first["posts"])
    assert world.standin.requests["GET /r/popular/hot"] == 1  # the second was cached
    assert first["after"] is not None
    # The quota Reddit reported (the stand-in counts 1,000 per window).
    quota = next(
        line for line in metrics.splitlines() if line.startswith("omninudge_reddit_quota_remaining")
    )
    assert 990 <= float(quota.split()[-1]) < 1000


async def test_pages_follow_after_and_sort_and_t_are_checked(world: RedditWorld) -> None:
    token = await _token(world)
    async with world.server.client(headers=bearer(token)) as http:
        page1 = (await http.get("/api/reddit/r/askreddit/top", params={"limit": 5})).json()
        page2 = await http.get(
            "/api/reddit/r/askreddit/top", params={"limit": 5, "after": page1["after"], "t": "all"}
        )
        bad = [
            await http.get("/api/reddit/r/askreddit/controversial"),
            await http.get("/api/reddit/r/askreddit/top", params={"t": "decade"}),
            await http.get("/api/reddit/r/askreddit/new", params={"limit": "500"}),
            await http.get("/api/reddit/r/askreddit/new", params={"after": "x'; drop"}),
            await http.get("/api/reddit/r/no%20spaces/new"),
        ]
    assert page2.status_code == 200
    ids1 = {p["id"] for p in page1["posts"]}
    assert ids1.isdisjoint(p["id"] for p in page2.json()["posts"])
    for answer in bad:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_field"


async def test_banned_private_and_unknown_subreddits_are_404(world: RedditWorld) -> None:
    world.standin.banned.add("bannedsub")
    world.standin.private.add("secretsub")
    token = await _token(world)
    async with world.server.client(headers=bearer(token)) as http:
        answers = {
            name: await http.get(f"/api/reddit/r/{name}/hot")
            for name in ("bannedsub", "secretsub", "nosuchsubreddit")
        }
    codes = {name: (a.status_code, a.json()["error"]["code"]) for name, a in answers.items()}
    assert codes == {
        "bannedsub": (404, "subreddit_banned"),
        "secretsub": (404, "subreddit_private"),
        "nosuchsubreddit": (404, "subreddit_not_found"),
    }


async def test_1000_concurrent_requests_for_one_listing_make_one_reddit_request(
    world: RedditWorld,
) -> None:
    token = await _token(world)
    # 20 clients of 10 connections: one httpx pool with 1,000 waiting requests is slow.
    clients = [
        httpx.AsyncClient(
            base_url=world.server.base_url,
            headers=bearer(token),
            limits=httpx.Limits(max_connections=10),
            timeout=60,
        )
        for _ in range(20)
    ]
    try:
        answers = await asyncio.gather(
            *(
                clients[i % 20].get("/api/reddit/r/askreddit/new", params={"limit": 7})
                for i in range(1000)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    assert all(a.status_code == 200 for a in answers)
    assert {a.json()["cached_at"] for a in answers} == {answers[0].json()["cached_at"]}
    assert world.standin.requests["GET /r/askreddit/new"] == 1


async def test_reddit_down_serves_a_stale_page_or_503(world: RedditWorld) -> None:
    token = await _token(world)
    async with world.server.client(headers=bearer(token)) as http:
        fresh = (await http.get("/api/reddit/r/popular/hot", params={"limit": 4})).json()
        # Age the cached page past its 5 minutes.
        feature = world.server.app.state.services.reddit
        key = "reddit:listing:popular:hot:::4"
        entry: dict[str, Any] = orjson.loads(await feature.cache.get(key))
        entry["stored_at"] -= 400
        await feature.cache.set(key, orjson.dumps(entry), 3600)
        world.standin.outage = True
        stale = await http.get("/api/reddit/r/popular/hot", params={"limit": 4})
        missing = await http.get("/api/reddit/r/askreddit/hot")
        health = (await http.get("/health")).json()
        world.standin.outage = False
        recovered = await http.get("/api/reddit/r/popular/hot", params={"limit": 4})
        health_after = (await http.get("/health")).json()
    assert stale.status_code == 200
    assert stale.json()["stale"] is True
    assert [p["id"] for p in stale.json()["posts"]] == [p["id"] for p in fresh["posts"]]
    assert missing.status_code == 503
    assert missing.json()["error"]["code"] == "reddit_unavailable"
    assert health["reddit_api"] == "degraded"
    assert recovered.status_code == 200
    assert recovered.json()["stale"] is False
    assert health_after["reddit_api"] == "ok"


async def test_without_a_reddit_login_a_miss_is_503_but_a_cached_page_is_served(
    world: RedditWorld,
) -> None:
    token = await _token(world)
    services = world.server.app.state.services
    stranger = await services.storage.users.create(
        User(id=services.new_id(), username="stranger", created_at=services.clock())
    )
    stranger_token = services.tokens.issue(stranger, services.clock()).token
    async with world.server.client(headers=bearer(token)) as http:
        assert (await http.get("/api/reddit/r/popular/hot")).status_code == 200
    async with world.server.client(headers=bearer(stranger_token)) as http:
        cached = await http.get("/api/reddit/r/popular/hot")
        miss = await http.get("/api/reddit/r/askreddit/new")
        anonymous = await httpx.AsyncClient(base_url=world.server.base_url).get(
            "/api/reddit/r/popular/hot"
        )
    assert cached.status_code == 200
    assert miss.status_code == 503
    assert miss.json()["error"]["code"] == "reddit_login_required"
    assert anonymous.status_code == 401


async def test_a_burst_across_50_subreddits_never_exceeds_the_budget(tmp_path: Path) -> None:
    """rpm 10 over a 2 s window: the stand-in never sees more than 10 API calls in any
    2 s; requests that cannot get budget within 1 s answer 429 with Retry-After."""
    standin = make_standin()
    names = [f"sub{i:02d}" for i in range(50)]
    for name in [*names, "later"]:
        standin.add_subreddit(name)
    async with reddit_world(
        tmp_path,
        standin=standin,
        env={"OMNINUDGE_REDDIT_RPM": "10"},
        reddit_budget_window_s=2.0,
        reddit_max_wait_s=1.0,
    ) as world:
        token = await _token(world)
        await asyncio.sleep(2.0)  # let the login's call leave the window
        async with world.server.client(headers=bearer(token)) as http:
            answers = await asyncio.gather(
                *(http.get(f"/api/reddit/r/{name}/hot", params={"limit": 2}) for name in names)
            )
            await asyncio.sleep(2.0)
            later = await http.get("/api/reddit/r/later/hot", params={"limit": 2})
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= 5
    assert statuses.count(429) >= 20
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "reddit_budget_exhausted"
            assert int(answer.headers["retry-after"]) >= 1
    assert later.status_code == 200
    times = sorted(r.at for r in standin.log if r.path.startswith("/r/"))
    assert len(times) == statuses.count(200) + 1
    worst = max(sum(1 for t in times if start <= t < start + 2.0) for start in times)
    assert worst <= 10
