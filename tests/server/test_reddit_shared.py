"""Two server instances sharing Redis (and one database) act as one towards Reddit:
one budget, one request per uncached page, one use per login state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from omninudge_adapters.reddit.testing import RedditStandIn, running_standin
from tests.server.conftest import RunningServer, run_server
from tests.server.reddit_env import (
    RedditWorld,
    bearer,
    code_and_state,
    make_standin,
    reddit_env,
    reddit_login,
    start_login,
)


@contextlib.asynccontextmanager
async def two_instances(
    data_dir: Path,
    redis_url: str,
    prefix: str,
    standin: RedditStandIn,
    env_rpm: str,
    **overrides: object,
) -> AsyncIterator[tuple[str, RunningServer, RunningServer]]:
    async with running_standin(standin) as url:
        # The same data directory: one SQLite file and one generated secret for both.
        env = reddit_env(
            url, REDIS_URL=redis_url, OMNINUDGE_REDIS_PREFIX=prefix, OMNINUDGE_REDDIT_RPM=env_rpm
        )
        async with (
            run_server(env, data_dir, **overrides) as first,
            run_server(env, data_dir, **overrides) as second,
        ):
            yield url, first, second


async def test_two_instances_make_one_reddit_request_and_share_one_budget(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    standin = make_standin()
    names = [f"shared{i:02d}" for i in range(30)]
    for name in names:
        standin.add_subreddit(name)
    async with two_instances(
        tmp_path,
        redis_url,
        redis_prefix,
        standin,
        env_rpm="10",
        reddit_budget_window_s=2.0,
        reddit_max_wait_s=1.0,
    ) as (url, first, second):
        world = RedditWorld(standin, url, first)
        token = (await reddit_login(world, "alice"))["access_token"]
        async with (
            first.client(headers=bearer(token)) as one,
            second.client(headers=bearer(token)) as two,
        ):
            same_page = await asyncio.gather(
                *(
                    (one if i % 2 else two).get("/api/reddit/r/askreddit/new", params={"limit": 3})
                    for i in range(100)
                )
            )
            assert all(a.status_code == 200 for a in same_page)
            assert standin.requests["GET /r/askreddit/new"] == 1
            # A state used on one instance is refused on the other.
            async with first.client() as browser:
                code, state = code_and_state(await start_login(browser, world, "bob"))
                used = await browser.post("/api/auth/session", json={"code": code, "state": state})
            async with second.client() as browser:
                replay = await browser.post(
                    "/api/auth/session", json={"code": code, "state": state}
                )
            assert used.status_code == 200
            assert replay.status_code == 403
            assert replay.json()["error"]["code"] == "state_replayed"
            # 10 calls per 2 s for the deployment: both instances draw on one bucket.
            answers = await asyncio.gather(
                *(c.get(f"/api/reddit/r/{n}/hot") for n in names for c in (one, two))
            )
    assert {a.status_code for a in answers} <= {200, 429}
    calls = sorted(r.at for r in standin.log if r.client_id is not None)
    worst = max(sum(1 for t in calls if start <= t < start + 2.0) for start in calls)
    assert worst <= 10
    fetched = [r.path for r in standin.log if r.path.startswith("/r/shared")]
    assert len(fetched) == len(set(fetched))  # never the same page twice
