"""A server wired to the Reddit stand-in (both on loopback), and a Reddit login through
the real HTTP endpoints: our ``/api/auth/reddit/login`` -> the stand-in's consent page
-> Reddit's redirect (its ``code`` and ``state``) -> our ``/api/auth/session``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx

from omninudge_adapters.reddit.testing import RedditStandIn, running_standin
from tests.server.conftest import RunningServer, run_server

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "reddit"
CLIENT_ID = "omninudge-server-test"
CLIENT_SECRET = "s3cret-for-server-tests"
# Reddit redirects the browser here; the tests read code and state from the Location.
REDIRECT_URI = "http://127.0.0.1:9/api/auth/reddit/callback"
USER_AGENT = "python:omninudge-tests:v0.1.0 (by /u/omninudge)"


def reddit_env(standin_url: str, **extra: str) -> dict[str, str]:
    return {
        "REDDIT_CLIENT_ID": CLIENT_ID,
        "REDDIT_CLIENT_SECRET": CLIENT_SECRET,
        "REDDIT_REDIRECT_URI": REDIRECT_URI,
        "REDDIT_USER_AGENT": USER_AGENT,
        "REDDIT_AUTH_BASE": standin_url,
        "REDDIT_API_BASE": standin_url,
        **extra,
    }


def make_standin(**options: Any) -> RedditStandIn:
    standin = RedditStandIn(FIXTURES, **options)
    standin.register_app(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    return standin


@attrs.frozen
class RedditWorld:
    standin: RedditStandIn
    standin_url: str
    server: RunningServer


@contextlib.asynccontextmanager
async def reddit_world(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    standin: RedditStandIn | None = None,
    **overrides: Any,
) -> AsyncIterator[RedditWorld]:
    standin = standin or make_standin()
    async with (
        running_standin(standin) as url,
        run_server(reddit_env(url, **(env or {})), data_dir, **overrides) as server,
    ):
        yield RedditWorld(standin, url, server)


async def start_login(http: httpx.AsyncClient, world: RedditWorld, username: str) -> str:
    """Our login redirect, then the stand-in's consent (as ``username``); returns the
    Location Reddit sends the browser to."""
    world.standin.consent_user = username
    if username.lower() not in world.standin.users:
        world.standin.add_user(username)
    r = await http.get("/api/auth/reddit/login", params={"return_to": "/chat"})
    assert r.status_code == 302, r.text
    authorize = r.headers["location"]
    assert authorize.startswith(world.standin_url + "/api/v1/authorize?")
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(authorize)
    assert consent.status_code == 302, consent.text
    location: str = consent.headers["location"]
    assert location.startswith(REDIRECT_URI)
    return location


def code_and_state(location: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(location).query)
    return query["code"][0], query["state"][0]


async def reddit_login(world: RedditWorld, username: str) -> dict[str, Any]:
    """The whole login; returns the session answer (``access_token``, ``user``)."""
    async with world.server.client() as http:
        location = await start_login(http, world, username)
        code, state = code_and_state(location)
        r = await http.post("/api/auth/session", json={"code": code, "state": state})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
