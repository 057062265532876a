"""The Reddit stand-in served by a real uvicorn on a loopback port, and clients of it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from omninudge_adapters.reddit import HttpxRedditClient
from omninudge_adapters.reddit.testing import RedditStandIn, running_standin

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "reddit"
CLIENT_ID = "omninudge-test"
CLIENT_SECRET = "s3cret-for-tests"
REDIRECT_URI = "http://127.0.0.1:9/api/auth/reddit/callback"
USER_AGENT = "python:omninudge-tests:v0.1.0 (by /u/omninudge)"


@attrs.frozen
class StandInServer:
    reddit: RedditStandIn
    url: str

    def client(self, **options: Any) -> HttpxRedditClient:
        return HttpxRedditClient(
            CLIENT_ID,
            options.pop("client_secret", CLIENT_SECRET),
            REDIRECT_URI,
            USER_AGENT,
            auth_base=self.url,
            api_base=self.url,
            **options,
        )

    def token(self, user: str, scopes: str = "identity read privatemessages") -> str:
        return self.reddit.issue_token(user, client_id=CLIENT_ID, scopes=scopes)


StandInFactory = Callable[..., Awaitable[StandInServer]]


@pytest.fixture
async def make_standin() -> AsyncIterator[StandInFactory]:
    """Start stand-ins with options (``rate_limit``, ``clock``, ...); all stop at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**options: Any) -> StandInServer:
            reddit = RedditStandIn(FIXTURES, **options)
            reddit.register_app(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
            reddit.add_user("alice")
            reddit.add_user("bob")
            url = await stack.enter_async_context(running_standin(reddit))
            return StandInServer(reddit, url)

        yield start


@pytest.fixture
async def standin(make_standin: StandInFactory) -> StandInServer:
    return await make_standin()


@pytest.fixture
async def reddit(standin: StandInServer) -> AsyncIterator[HttpxRedditClient]:
    async with standin.client() as client:
        yield client
