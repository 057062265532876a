"""HttpxRedditClient against the stand-in: listings, identity, errors, rate limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from omninudge_adapters.reddit import (
    HttpxRedditClient,
    RedditInsufficientScope,
    RedditTokenInvalid,
    open_reddit_client,
)
from omninudge_core.errors import InvalidFrame, NotFound, RateLimited, Unavailable
from omninudge_core.ports import RedditClient
from tests.reddit.conftest import USER_AGENT, StandInFactory, StandInServer


async def test_listing_pages_with_after_until_after_is_null(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    token = standin.token("alice")
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = await reddit.listing(token, subreddit="popular", sort="hot", after=after, limit=40)
        pages += 1
        seen.extend(post.id for post in page.posts)
        after = page.after
        if after is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 100
    assert standin.reddit.requests["GET /r/popular/hot"] == 3


async def test_every_api_request_sends_raw_json_and_the_user_agent(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    token = standin.token("alice")
    await reddit.listing(token, subreddit="askreddit", sort="top", limit=5, t="week")
    await reddit.me(token)
    api_calls = [r for r in standin.reddit.log if r.client_id is not None]
    assert len(api_calls) == 2
    assert all(r.query.get("raw_json") == "1" for r in api_calls)
    assert all(r.user_agent == USER_AGENT for r in standin.reddit.log)
    assert api_calls[0].query == {"limit": "5", "t": "week", "raw_json": "1"}


async def test_limit_is_clamped_to_100(standin: StandInServer, reddit: HttpxRedditClient) -> None:
    page = await reddit.listing(
        standin.token("alice"), subreddit="askreddit", sort="new", limit=500
    )
    assert len(page.posts) == 100
    assert standin.reddit.log[-1].query["limit"] == "100"


async def test_quota_is_read_from_every_answer(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    token = standin.token("alice")
    await reddit.me(token)
    await reddit.me(token)
    assert reddit.last_quota is not None
    assert (reddit.last_quota.used, reddit.last_quota.remaining) == (2.0, 998.0)
    assert reddit.last_quota.reset_s is not None
    assert 0 <= reddit.last_quota.reset_s <= 600


@pytest.mark.parametrize(
    ("kind", "code"),
    [("banned", "subreddit_banned"), ("private", "subreddit_private"),
     ("quarantined", "subreddit_quarantined")],
)  # fmt: skip
async def test_unavailable_subreddits_are_not_found_with_the_reason(
    standin: StandInServer, reddit: HttpxRedditClient, kind: str, code: str
) -> None:
    getattr(standin.reddit, kind).add("hidden")
    with pytest.raises(NotFound) as caught:
        await reddit.listing(standin.token("alice"), subreddit="hidden", sort="new")
    assert caught.value.code == code


async def test_unknown_subreddit_is_not_found(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    with pytest.raises(NotFound) as caught:
        await reddit.listing(standin.token("alice"), subreddit="nosuchplace", sort="hot")
    assert caught.value.code == "subreddit_not_found"


async def test_added_subreddits_have_their_own_ids(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.add_subreddit("pics")
    token = standin.token("alice")
    pics = await reddit.listing(token, subreddit="pics", sort="hot", limit=100)
    popular = await reddit.listing(token, subreddit="popular", sort="hot", limit=100)
    assert len(pics.posts) == 100
    assert not {p.id for p in pics.posts} & {p.id for p in popular.posts}
    assert all(p.permalink.startswith("/r/pics/") for p in pics.posts)


async def test_bad_input_is_refused_before_any_request(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    token = standin.token("alice")
    with pytest.raises(InvalidFrame):
        await reddit.listing(token, subreddit="../etc", sort="hot")
    with pytest.raises(InvalidFrame):
        await reddit.listing(token, subreddit="pics", sort="sideways")
    with pytest.raises(InvalidFrame):
        await reddit.listing(token, subreddit="pics", sort="top", t="decade")
    assert standin.reddit.log == []


async def test_identity_and_profile(standin: StandInServer, reddit: HttpxRedditClient) -> None:
    token = standin.token("alice")
    me = await reddit.me(token)
    assert (me.name, me.id) == ("alice", standin.reddit.users["alice"].id)
    profile = await reddit.user_about(token, "Bob")
    assert (profile.name, profile.accept_pms, profile.is_suspended) == ("bob", True, False)
    with pytest.raises(NotFound) as caught:
        await reddit.user_about(token, "nobody_here")
    assert caught.value.code == "reddit_user_not_found"
    assert await reddit.username_available(token, "nobody_here") is True
    assert await reddit.username_available(token, "bob") is False


async def test_suspended_profile_is_reported(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.add_user("gone_user", suspended=True)
    profile = await reddit.user_about(standin.token("alice"), "gone_user")
    assert profile.is_suspended
    assert profile.accept_pms is None


async def test_expired_or_unknown_token_needs_a_refresh(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    with pytest.raises(RedditTokenInvalid):
        await reddit.me("not-a-token")


async def test_missing_scope_is_reported(standin: StandInServer, reddit: HttpxRedditClient) -> None:
    with pytest.raises(RedditInsufficientScope):
        await reddit.me(standin.token("alice", scopes="read"))


async def test_outage_is_unavailable(standin: StandInServer, reddit: HttpxRedditClient) -> None:
    standin.reddit.outage = True
    with pytest.raises(Unavailable) as caught:
        await reddit.me(standin.token("alice"))
    assert caught.value.code == "reddit_unavailable"


async def test_unreachable_host_is_unavailable_with_the_cause_chained() -> None:
    from tests.services import spare_port

    url = f"http://127.0.0.1:{spare_port()}"
    async with HttpxRedditClient("a", "b", "c", USER_AGENT, auth_base=url, api_base=url) as client:
        with pytest.raises(Unavailable) as caught:
            await client.me("token")
    assert caught.value.__cause__ is not None


async def test_429_raises_rate_limited_with_retry_after(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.force_429 = 1
    standin.reddit.retry_after_s = 7
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as caught:
        await reddit.me(standin.token("alice"))
    wait = caught.value.retry_at - before
    assert timedelta(seconds=6) < wait < timedelta(seconds=9)
    assert standin.reddit.requests["GET /api/v1/me"] == 1  # no silent retry


async def test_over_budget_stand_in_answers_the_html_429(
    make_standin: StandInFactory,
) -> None:
    standin = await make_standin(rate_limit=3)
    async with standin.client() as reddit:
        token = standin.token("alice")
        for _ in range(3):
            await reddit.me(token)
        assert reddit.last_quota is not None
        assert reddit.last_quota.remaining == 0
        with pytest.raises(RateLimited):
            await reddit.me(token)
    assert standin.reddit.requests["GET /api/v1/me"] == 4


async def test_the_client_satisfies_the_port_and_closes_its_pool(standin: StandInServer) -> None:
    async with open_reddit_client(
        "id", "secret", "http://x.test/cb", USER_AGENT, api_base=standin.url
    ) as client:
        port: RedditClient = client
        assert port.authorize_url(state="s", scopes=["read"]).startswith("https://www.reddit.com/")
        http = client._http
    assert http.is_closed
