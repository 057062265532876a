"""OAuth2 authorization-code flow against the stand-in over real HTTP (REDDIT.md §2)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from omninudge_adapters.reddit import (
    DEFAULT_SCOPES,
    HttpxRedditClient,
    RedditAppRevoked,
    RedditGrantInvalid,
    RedditTokenInvalid,
    authorize_url,
    sign_state,
    user_agent,
    verify_state,
)
from omninudge_core.errors import AuthenticationFailed, Unavailable
from tests.reddit.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    StandInFactory,
    StandInServer,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_authorize_url_carries_exactly_reddits_parameters() -> None:
    url = authorize_url(
        "https://www.reddit.com", client_id="abc", redirect_uri="https://x.test/cb", state="s1"
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "www.reddit.com",
        "/api/v1/authorize",
    )
    assert "scope=identity%20read%20privatemessages%20history" in parts.query
    assert parse_qs(parts.query) == {
        "client_id": ["abc"],
        "response_type": ["code"],
        "state": ["s1"],
        "redirect_uri": ["https://x.test/cb"],
        "duration": ["permanent"],
        "scope": [" ".join(DEFAULT_SCOPES)],
    }


def test_authorize_url_scopes_are_configurable_and_state_required() -> None:
    url = authorize_url("https://r.test", client_id="a", redirect_uri="u", state="s",
                        scopes=("identity", "read", "privatemessages"))  # fmt: skip
    assert parse_qs(urlsplit(url).query)["scope"] == ["identity read privatemessages"]
    with pytest.raises(ValueError, match="state"):
        authorize_url("https://r.test", client_id="a", redirect_uri="u", state="")


def test_user_agent_follows_reddits_format() -> None:
    assert user_agent("web", "omninudge", "v0.1.0", "someone") == (
        "web:omninudge:v0.1.0 (by /u/someone)"
    )
    with pytest.raises(ValueError):
        user_agent("web", "omni nudge", "v1", "someone")


def test_signed_state_round_trips_and_rejects_tampering_and_age() -> None:
    secret = b"k" * 32
    state = sign_state(secret, nonce="n1", return_to="/chats", now=NOW)
    assert verify_state(secret, state, now=NOW + timedelta(seconds=30)) == "/chats"
    tampered = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    for bad in (tampered, "garbage", state + "x"):
        with pytest.raises(AuthenticationFailed):
            verify_state(secret, bad, now=NOW)
    with pytest.raises(AuthenticationFailed):
        verify_state(secret, state, now=NOW + timedelta(minutes=11))
    with pytest.raises(AuthenticationFailed):
        verify_state(b"other" * 8, state, now=NOW)


async def consent(standin: StandInServer, client: HttpxRedditClient, user: str) -> str:
    """Follow the authorize URL as a browser that clicks "Allow"; return the code."""
    standin.reddit.consent_user = user
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(client.authorize_url(state="st-1"))
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


async def test_code_exchange_gives_tokens_for_the_consenting_user(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    code = await consent(standin, reddit, "alice")
    grant = await reddit.exchange_code(code)
    assert grant.refresh_token is not None
    assert grant.expires_in == 86400
    assert set(grant.scope.split()) == set(DEFAULT_SCOPES)
    me = await reddit.me(grant.access_token)
    assert me.name == "alice"
    token_call = next(r for r in standin.reddit.log if r.path == "/api/v1/access_token")
    assert token_call.form == {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
    }


async def test_a_code_works_once(standin: StandInServer, reddit: HttpxRedditClient) -> None:
    code = await consent(standin, reddit, "alice")
    await reddit.exchange_code(code)
    with pytest.raises(RedditGrantInvalid):
        await reddit.exchange_code(code)


async def test_the_2016_invalid_grant_shape_is_a_failure_too(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.legacy_invalid_grant = True
    with pytest.raises(RedditGrantInvalid):
        await reddit.exchange_code("never-issued")


async def test_wrong_client_secret_is_refused_as_app_revoked(standin: StandInServer) -> None:
    code = await consent(standin, standin.client(), "alice")
    async with standin.client(client_secret="wrong") as client:
        with pytest.raises(RedditAppRevoked) as caught:
            await client.exchange_code(code)
    assert caught.value.status == 503


async def test_basic_auth_carries_the_client_credentials(standin: StandInServer) -> None:
    async with httpx.AsyncClient() as raw:
        answer = await raw.post(
            standin.url + "/api/v1/access_token",
            data={"grant_type": "client_credentials"},
            headers={
                "Authorization": "Basic "
                + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            },
        )
    assert answer.status_code == 200
    assert answer.json()["scope"] == "*"


async def test_refresh_with_rotation_returns_a_new_refresh_token_and_kills_the_old(
    make_standin: StandInFactory,
) -> None:
    standin = await make_standin(rotate_refresh_tokens=True)
    async with standin.client() as reddit:
        grant = await reddit.exchange_code(await consent(standin, reddit, "bob"))
        assert grant.refresh_token is not None
        renewed = await reddit.refresh(grant.refresh_token)
        assert renewed.refresh_token not in (None, grant.refresh_token)
        assert renewed.access_token != grant.access_token
        assert (await reddit.me(renewed.access_token)).name == "bob"
        with pytest.raises(RedditGrantInvalid):
            await reddit.refresh(grant.refresh_token)


async def test_refresh_without_rotation_keeps_the_refresh_token(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    grant = await reddit.exchange_code(await consent(standin, reddit, "alice"))
    assert grant.refresh_token is not None
    renewed = await reddit.refresh(grant.refresh_token)
    assert renewed.refresh_token == grant.refresh_token


async def test_revoking_the_refresh_token_kills_its_access_tokens(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    grant = await reddit.exchange_code(await consent(standin, reddit, "alice"))
    assert grant.refresh_token is not None
    await reddit.revoke(grant.refresh_token, hint="refresh_token")
    with pytest.raises(RedditTokenInvalid):
        await reddit.me(grant.access_token)
    with pytest.raises(RedditGrantInvalid):
        await reddit.refresh(grant.refresh_token)
    await reddit.revoke("unknown-token", hint="access_token")  # unknown = success


async def test_revoked_app_is_reported_distinctly(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    grant = await reddit.exchange_code(await consent(standin, reddit, "alice"))
    assert grant.refresh_token is not None
    standin.reddit.app_revoked = True
    with pytest.raises(RedditAppRevoked) as caught:
        await reddit.refresh(grant.refresh_token)
    assert caught.value.code == "reddit_app_revoked"


async def test_token_endpoint_outage_is_unavailable(
    standin: StandInServer, reddit: HttpxRedditClient
) -> None:
    standin.reddit.outage = True
    with pytest.raises(Unavailable):
        await reddit.exchange_code("anything")


async def test_bad_authorize_requests_are_not_redirected(standin: StandInServer) -> None:
    standin.reddit.consent_user = "alice"
    client = standin.client()
    async with httpx.AsyncClient() as browser:
        wrong_redirect = client.authorize_url(state="s").replace("127.0.0.1%3A9", "evil.test")
        assert (await browser.get(wrong_redirect)).status_code == 400
        standin.reddit.deny_consent = True
        denied = await browser.get(client.authorize_url(state="s"))
    await client.aclose()
    assert denied.status_code == 302
    assert parse_qs(urlsplit(denied.headers["location"]).query) == {
        "state": ["s"],
        "error": ["access_denied"],
    }


async def test_without_a_consent_user_a_person_picks_one_on_a_form(
    standin: StandInServer,
) -> None:
    client = standin.client()
    url = client.authorize_url(state="s9")
    await client.aclose()
    async with httpx.AsyncClient() as browser:
        page = await browser.get(url)
        assert page.status_code == 200
        assert "<form" in page.text
        chosen = await browser.post(url, data={"username": "carol", "decision": "allow"})
    assert chosen.status_code == 302
    query = parse_qs(urlsplit(chosen.headers["location"]).query)
    assert query["state"] == ["s9"]
    assert standin.reddit.codes[query["code"][0]].user == "carol"
