"""Log in with Reddit through the real endpoints, against the Reddit stand-in."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from omninudge_adapters.reddit import sign_state
from tests.server.reddit_env import (
    RedditWorld,
    bearer,
    code_and_state,
    reddit_login,
    reddit_world,
    start_login,
)


@pytest.fixture
async def world(tmp_path: Path) -> RedditWorld:  # type: ignore[misc]
    async with reddit_world(tmp_path) as running:
        yield running


async def test_full_oauth_login_creates_the_account_and_stores_the_token_encrypted(
    world: RedditWorld,
) -> None:
    answer = await reddit_login(world, "alice")
    user = answer["user"]
    assert user["username"] == "alice"
    assert user["reddit_id"] == world.standin.users["alice"].id
    async with world.server.client(headers=bearer(answer["access_token"])) as http:
        me = await http.get("/api/me")
    assert me.status_code == 200
    assert me.json()["id"] == user["id"]
    stored = await world.server.app.state.services.storage.reddit_tokens.get(user["id"])
    assert stored is not None
    assert b"alice" not in stored.refresh_token_ciphertext
    plain_refresh = set(world.standin.refresh_tokens)
    assert all(t.encode() not in stored.refresh_token_ciphertext for t in plain_refresh)
    # Logging in again finds the same account.
    again = await reddit_login(world, "alice")
    assert again["user"]["id"] == user["id"]


async def test_browser_callback_sets_the_cookie_and_redirects_to_return_to(
    world: RedditWorld,
) -> None:
    async with world.server.client() as http:
        location = await start_login(http, world, "carol")
        code, state = code_and_state(location)
        r = await http.get("/api/auth/reddit/callback", params={"code": code, "state": state})
        assert r.status_code == 302
        assert r.headers["location"] == "/chat"
        assert "omninudge_session" in http.cookies
        me = await http.get("/api/me")
    assert me.status_code == 200
    assert me.json()["username"] == "carol"


async def test_a_replayed_state_is_refused(world: RedditWorld) -> None:
    async with world.server.client() as http:
        code, state = code_and_state(await start_login(http, world, "dave"))
        first = await http.post("/api/auth/session", json={"code": code, "state": state})
        replay = await http.post("/api/auth/session", json={"code": code, "state": state})
    assert first.status_code == 200
    assert replay.status_code == 403
    assert replay.json()["error"]["code"] == "state_replayed"


async def test_a_forged_state_is_refused_before_reddit_is_asked(world: RedditWorld) -> None:
    async with world.server.client() as http:
        code, state = code_and_state(await start_login(http, world, "erin"))
        payload, mac = state.split(".")
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        data["r"] = "https://evil.example/"
        forged_payload = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
        forged_key = sign_state(b"not-our-key", nonce="n", return_to="/", now=_now(world))
        before = world.standin.requests["POST /api/v1/access_token"]
        answers = [
            await http.post("/api/auth/session", json={"code": code, "state": s})
            for s in (f"{forged_payload}.{mac}", forged_key, "garbage")
        ]
    for answer in answers:
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_state"
    assert world.standin.requests["POST /api/v1/access_token"] == before


async def test_an_expired_state_is_refused(world: RedditWorld) -> None:
    services = world.server.app.state.services
    old = sign_state(
        services.reddit.state_key,
        nonce="old-nonce",
        return_to="/",
        now=_now(world).replace(year=2020),
    )
    async with world.server.client() as http:
        r = await http.post("/api/auth/session", json={"code": "whatever", "state": old})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "state_expired"


async def test_login_rejects_an_open_redirect(world: RedditWorld) -> None:
    async with world.server.client() as http:
        for target in ("https://evil.example/", "//evil.example/x", "/\\evil"):
            r = await http.get("/api/auth/reddit/login", params={"return_to": target})
            assert r.status_code == 400, target
            assert r.json()["error"]["field"] == "return_to"


async def test_callback_without_the_browser_cookie_is_refused(world: RedditWorld) -> None:
    async with world.server.client() as http:
        code, state = code_and_state(await start_login(http, world, "frank"))
    async with world.server.client() as other_browser:
        r = await other_browser.get(
            "/api/auth/reddit/callback", params={"code": code, "state": state}
        )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "state_mismatch"


async def test_logout_revokes_the_reddit_token_too(world: RedditWorld) -> None:
    answer = await reddit_login(world, "gina")
    refresh_before = set(world.standin.refresh_tokens)
    assert refresh_before
    async with world.server.client(headers=bearer(answer["access_token"])) as http:
        r = await http.post("/api/auth/logout")
    assert r.status_code == 204
    assert world.standin.requests["POST /api/v1/revoke_token"] == 1
    assert len(world.standin.refresh_tokens) == len(refresh_before) - 1
    services = world.server.app.state.services
    assert await services.storage.reddit_tokens.get(answer["user"]["id"]) is None


async def test_dev_login_is_off_when_a_reddit_app_is_configured(world: RedditWorld) -> None:
    async with world.server.client() as http:
        r = await http.post("/api/auth/dev-login", json={"username": "mallory"})
    assert r.status_code == 404


async def test_a_revoked_app_turns_reddit_off_with_503_while_chat_keeps_working(
    world: RedditWorld,
) -> None:
    answer = await reddit_login(world, "hank")
    world.standin.app_revoked = True
    async with world.server.client(headers=bearer(answer["access_token"])) as http:
        listing = await http.get("/api/reddit/r/popular/hot")
        assert listing.status_code == 503
        assert listing.json()["error"]["code"] == "reddit_app_revoked"
        again = await http.get("/api/reddit/r/askreddit/new")
        assert again.json()["error"]["code"] == "reddit_app_revoked"
        me = await http.get("/api/me")
        health = (await http.get("/health")).json()
    assert me.status_code == 200
    assert health["reddit_api"] == "revoked"
    assert health["status"] == "degraded"
    async with world.server.client() as anonymous:
        login = await anonymous.get("/api/auth/reddit/login")
    assert login.status_code == 503


async def test_without_a_reddit_app_the_reddit_endpoints_say_so(tmp_path: Path) -> None:
    from tests.server.conftest import run_server

    async with run_server({}, tmp_path) as running, running.client() as http:
        login = await http.get("/api/auth/reddit/login")
        health = (await http.get("/health")).json()
    assert login.status_code == 404
    assert health["reddit_api"] == "not_configured"


def _now(world: RedditWorld):  # type: ignore[no-untyped-def]
    return world.server.app.state.services.clock()


async def test_an_expired_access_token_is_refreshed_once(world: RedditWorld) -> None:
    answer = await reddit_login(world, "ivan")
    # Reddit forgets every access token: the next call answers 401 invalid_token.
    world.standin.tokens.clear()
    async with world.server.client(headers=bearer(answer["access_token"])) as http:
        r = await http.get("/api/reddit/r/popular/hot", params={"limit": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["posts"]) == 3
    # A dead refresh token too: re-consent, not a 401 of ours.
    world.standin.tokens.clear()
    world.standin.refresh_tokens.clear()
    async with world.server.client(headers=bearer(answer["access_token"])) as http:
        r = await http.get("/api/reddit/r/askreddit/top", params={"t": "week"})
        me = await http.get("/api/me")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "reddit_reconsent_required"
    assert me.status_code == 200


def test_reddit_configuration_is_all_or_nothing_and_turns_dev_login_off(tmp_path: Path) -> None:
    from omninudge_server.config import ConfigError, load_settings
    from tests.server.reddit_env import reddit_env

    full = reddit_env("http://127.0.0.1:1")
    settings = load_settings(full, data_dir=tmp_path)
    assert settings.reddit_configured
    assert settings.dev_login is False
    assert settings.reddit_rpm == 100
    assert settings.reddit_auth_base == "http://127.0.0.1:1"
    assert load_settings({**full, "OMNINUDGE_DEV_LOGIN": "1"}, data_dir=tmp_path).dev_login
    assert load_settings({}, data_dir=tmp_path).dev_login
    partial = {k: v for k, v in full.items() if k != "REDDIT_USER_AGENT"}
    with pytest.raises(ConfigError, match="REDDIT_USER_AGENT"):
        load_settings(partial, data_dir=tmp_path)
    for rpm in ("1", "many", "-5"):
        with pytest.raises(ConfigError, match="OMNINUDGE_REDDIT_RPM"):
            load_settings({**full, "OMNINUDGE_REDDIT_RPM": rpm}, data_dir=tmp_path)
