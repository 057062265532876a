"""Reaching a Reddit-only person through Reddit, the invitation, and the history
import when they join - end to end through the real endpoints and the stand-in."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from omninudge_adapters.crypto import DeviceKeys, open_envelope, seal
from omninudge_adapters.reddit import HttpxRedditClient
from tests.server.reddit_env import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    USER_AGENT,
    RedditWorld,
    bearer,
    code_and_state,
    make_standin,
    reddit_login,
    reddit_world,
)

_INVITE = re.compile(r"(http://\S+/invite/([0-9a-f]{32}))")


class ShiftableClock:
    """The stand-in's clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[RedditWorld, ShiftableClock]]:
    clock = ShiftableClock()
    standin = make_standin(clock=clock)
    for name in ("alice", "bob", "dave"):
        standin.add_user(name)
    standin.add_user("carol", whitelist_only=True)
    async with reddit_world(tmp_path, standin=standin) as running:
        yield running, clock


async def reddit_as(world: RedditWorld, user: str) -> tuple[HttpxRedditClient, str]:
    """A Reddit client acting as ``user`` directly on the stand-in (their own Reddit app)."""
    client = HttpxRedditClient(
        CLIENT_ID,
        CLIENT_SECRET,
        REDIRECT_URI,
        USER_AGENT,
        auth_base=world.standin_url,
        api_base=world.standin_url,
    )
    return client, world.standin.issue_token(user, client_id=CLIENT_ID)


async def wait_for_state(http: httpx.AsyncClient, conversation_id: str, state: str) -> None:
    for _ in range(200):
        page = (await http.get("/api/conversations")).json()["conversations"]
        if any(c["id"] == conversation_id and c["upgrade_state"] == state for c in page):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"conversation never reached {state}")


async def register(http: httpx.AsyncClient, keys: DeviceKeys) -> str:
    device_id = f"dev_{uuid.uuid4().hex[:10]}"
    r = await http.put(
        f"/api/devices/{device_id}",
        json={"public_key": keys.public_key, "signing_key": keys.signing_key, "name": "t"},
    )
    assert r.status_code == 201, r.text
    return device_id


async def test_relay_invitation_and_migration_end_to_end(
    world: tuple[RedditWorld, ShiftableClock],
) -> None:
    running, clock = world
    standin = running.standin
    # Their Reddit history before OmniNudge: two messages between them, one from dave.
    bob_reddit, bob_token = await reddit_as(running, "bob")
    alice_reddit, alice_token = await reddit_as(running, "alice")
    dave_reddit, dave_token = await reddit_as(running, "dave")
    clock.offset = -300
    await bob_reddit.compose(bob_token, to="alice", subject="hi", text="old: bob to alice")
    clock.offset = -200
    await alice_reddit.compose(alice_token, to="bob", subject="re", text="old: alice to bob")
    await dave_reddit.compose(dave_token, to="alice", subject="x", text="not part of it")
    clock.offset = 0

    alice = await reddit_login(running, "alice")
    async with running.server.client(headers=bearer(alice["access_token"])) as http:
        created = await http.post("/api/conversations", json={"reddit_username": "bob"})
        assert created.status_code == 201, created.text
        conversation = created.json()
        assert conversation["kind"] == "reddit"
        assert conversation["upgrade_state"] == "reddit_only"
        again = await http.post("/api/conversations", json={"reddit_username": "BOB"})
        assert again.status_code == 200
        assert again.json()["id"] == conversation["id"]
        lookup = (await http.get("/api/users/by-name/bob")).json()
        assert lookup["on_platform"] is False
        cid = conversation["id"]

        sent = await http.post(
            "/api/messages", json={"conversation_id": cid, "client_msg_id": "m1", "text": "hi bob"}
        )
        assert sent.status_code == 201, sent.text
        assert sent.json()["message"]["status"] == "relayed_to_reddit"
        assert sent.json()["message"]["origin"] == "reddit"
        replay = await http.post(
            "/api/messages", json={"conversation_id": cid, "client_msg_id": "m1", "text": "hi bob"}
        )
        assert replay.status_code == 200
        second = await http.post(
            "/api/messages",
            json={"conversation_id": cid, "client_msg_id": "m2", "text": "are you there?"},
        )
        assert second.json()["message"]["status"] == "relayed_to_reddit"
        await wait_for_state(http, cid, "invited")

    inbox = [m for m in standin.mail.inbox_of("bob") if m["author"] == "alice"]
    assert [m["body"].split("\n")[0] for m in inbox] == [
        "are you there?",
        "hi bob",
        "old: alice to bob",
    ]
    links = _INVITE.findall(inbox[1]["body"])
    assert len(links) == 1
    assert "/invite/" not in inbox[0]["body"]
    invite_url, token = links[0]
    assert invite_url == f"{running.server.base_url}/invite/{token}"
    assert standin.requests["POST /api/compose"] == 2 + 3  # ours + the three set-up ones

    # bob answers on Reddit before he joins.
    clock.offset = 5
    await bob_reddit.compose(bob_token, to="alice", subject="re", text="replied on reddit")
    clock.offset = 0

    # bob opens the invitation and logs in with Reddit.
    async with running.server.client() as browser:
        page = await browser.get(f"/invite/{token}")
        assert page.status_code == 200
        assert "u/alice" in page.text
        assert "<script" not in page.text
        assert "script-src" not in page.headers["content-security-policy"]
        link = re.search(r'href="([^"]+)"', page.text)
        assert link is not None
        standin.consent_user = "bob"
        login = await browser.get(link.group(1).replace("&amp;", "&"))
        assert login.status_code == 302
        async with httpx.AsyncClient() as reddit_browser:
            consent = await reddit_browser.get(login.headers["location"])
        code, state = code_and_state(consent.headers["location"])
        done = await browser.get("/api/auth/reddit/callback", params={"code": code, "state": state})
        assert done.status_code == 302
        assert done.headers["location"] == f"/?conversation={cid}"
        bob_session = (await browser.post("/api/auth/session", json={})).status_code
    assert bob_session == 400  # the browser flow above already logged in
    bob = await reddit_login(running, "bob")
    assert bob["user"]["id"] in conversation["participants"]  # the placeholder, upgraded

    async with (
        running.server.client(headers=bearer(alice["access_token"])) as alice_http,
        running.server.client(headers=bearer(bob["access_token"])) as bob_http,
    ):
        await wait_for_state(bob_http, cid, "upgraded")
        history = (await bob_http.get(f"/api/conversations/{cid}/messages")).json()["messages"]
        texts = [m["text"] for m in reversed(history)]
        assert texts == [
            "old: bob to alice",
            "old: alice to bob",
            "hi bob",
            "are you there?",
            "replied on reddit",
        ]
        assert all(m["origin"] == "reddit" for m in history)
        senders = [m["sender_id"] for m in reversed(history)]
        assert senders == [bob["user"]["id"]] + [alice["user"]["id"]] * 3 + [bob["user"]["id"]]
        events = (await bob_http.get("/api/events", params={"since": 0, "timeout": 0})).json()
        upgrades = [e for e in events["events"] if e["type"] == "upgrade"]
        assert upgrades
        assert upgrades[-1]["upgrade_state"] == "upgraded"
        assert isinstance(upgrades[-1]["seq"], int)

        # The next message is end-to-end encrypted.
        alice_keys, bob_keys = DeviceKeys.generate(), DeviceKeys.generate()
        alice_device = await register(alice_http, alice_keys)
        bob_device = await register(bob_http, bob_keys)
        envelope = seal(
            {"type": "text", "body": "now encrypted"},
            conversation_id=cid,
            client_msg_id="m3",
            sender_device_id=alice_device,
            sender_signing_key=alice_keys.signing_private,
            recipients={alice_device: alice_keys.public_key, bob_device: bob_keys.public_key},
        )
        r = await alice_http.post(
            "/api/messages",
            json={"conversation_id": cid, "client_msg_id": "m3", "envelope": envelope},
        )
        assert r.status_code == 201, r.text
        assert r.json()["message"]["origin"] == "platform"
        listed = (await bob_http.get(f"/api/conversations/{cid}/messages")).json()["messages"]
        newest = next(m for m in listed if m["client_msg_id"] == "m3")
        opened = open_envelope(
            newest["envelope"],
            conversation_id=cid,
            client_msg_id="m3",
            my_device_id=bob_device,
            my_ecdh_private_key=bob_keys.ecdh_private,
            sender_signing_jwk=alice_keys.signing_key,
        )
        assert opened["body"] == "now encrypted"
        # A text is no longer relayed: bob is on the platform now.
        plain = await alice_http.post(
            "/api/messages", json={"conversation_id": cid, "client_msg_id": "m4", "text": "x"}
        )
        assert plain.status_code == 400
    assert standin.requests["POST /api/compose"] == 6


async def test_relay_errors_are_clear_and_the_message_stays(
    world: tuple[RedditWorld, ShiftableClock],
) -> None:
    running, _ = world
    alice = await reddit_login(running, "alice")
    async with running.server.client(headers=bearer(alice["access_token"])) as http:
        unknown = await http.post("/api/conversations", json={"reddit_username": "nobody_here"})
        carol = (await http.post("/api/conversations", json={"reddit_username": "carol"})).json()
        refused = await http.post(
            "/api/messages",
            json={"conversation_id": carol["id"], "client_msg_id": "c1", "text": "hello"},
        )
        envelope = await http.post(
            "/api/messages",
            json={
                "conversation_id": carol["id"],
                "client_msg_id": "c2",
                "envelope": _fake_envelope(),
            },
        )
        running.standin.compose_wait_s = 30
        dave = (await http.post("/api/conversations", json={"reddit_username": "dave"})).json()
        limited = await http.post(
            "/api/messages",
            json={"conversation_id": dave["id"], "client_msg_id": "d1", "text": "hello"},
        )
        history = (await http.get(f"/api/conversations/{carol['id']}/messages")).json()
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "reddit_user_not_found"
    assert refused.status_code == 201
    assert refused.json()["message"]["status"] == "relay_failed"
    error: dict[str, Any] = refused.json()["relay_error"]
    assert error["code"] == "reddit_recipient_refused"
    assert error["reddit_code"] == "NOT_WHITELISTED_BY_USER_MESSAGE"
    assert envelope.status_code == 400
    assert limited.json()["message"]["status"] == "relay_failed"
    assert limited.json()["relay_error"]["code"] == "reddit_rate_limited"
    assert [m["status"] for m in history["messages"]] == ["relay_failed"]


async def test_a_sender_without_a_reddit_login_cannot_relay(
    world: tuple[RedditWorld, ShiftableClock],
) -> None:
    running, _ = world
    alice = await reddit_login(running, "alice")
    async with running.server.client(headers=bearer(alice["access_token"])) as http:
        cid = (await http.post("/api/conversations", json={"reddit_username": "bob"})).json()["id"]
        await http.post("/api/auth/logout")  # revokes (and forgets) alice's Reddit token
    services = running.server.app.state.services
    user = await services.storage.users.get(alice["user"]["id"])
    token = services.tokens.issue(user, services.clock()).token
    async with running.server.client(headers=bearer(token)) as http:
        r = await http.post(
            "/api/messages", json={"conversation_id": cid, "client_msg_id": "z", "text": "hi"}
        )
        other = await http.post("/api/conversations", json={"reddit_username": "dave"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "reddit_login_required"
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "reddit_login_required"


def _fake_envelope() -> dict[str, Any]:
    from tests.server.conftest import fake_envelope

    return fake_envelope("dev_x", ["dev_x"])


async def test_a_websocket_send_to_a_reddit_only_person_is_relayed(
    world: tuple[RedditWorld, ShiftableClock],
) -> None:
    import json

    import websockets

    running, _ = world
    alice = await reddit_login(running, "alice")
    async with running.server.client(headers=bearer(alice["access_token"])) as http:
        cid = (await http.post("/api/conversations", json={"reddit_username": "dave"})).json()["id"]
    async with websockets.connect(running.server.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice["access_token"]}))
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send(
            json.dumps(
                {"type": "send", "conversation_id": cid, "client_msg_id": "w1", "text": "via ws"}
            )
        )
        frames: list[dict[str, Any]] = []
        while not any(f["type"] == "sent" for f in frames):
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
    sent = next(f for f in frames if f["type"] == "sent")
    assert sent["message"]["status"] == "relayed_to_reddit"
    assert running.standin.mail.inbox_of("dave")[0]["body"].startswith("via ws\n\n---")


async def test_a_rate_limited_relay_is_retried_and_the_sender_gets_receipts(
    world: tuple[RedditWorld, ShiftableClock],
) -> None:
    running, _ = world
    alice = await reddit_login(running, "alice")
    running.standin.compose_wait_s = 1  # Reddit: "Try again in 1 seconds."
    async with running.server.client(headers=bearer(alice["access_token"])) as http:
        cid = (await http.post("/api/conversations", json={"reddit_username": "dave"})).json()["id"]
        first = await http.post(
            "/api/messages", json={"conversation_id": cid, "client_msg_id": "q1", "text": "hey"}
        )
        running.standin.compose_wait_s = None
        for _ in range(100):
            history = (await http.get(f"/api/conversations/{cid}/messages")).json()["messages"]
            if history[0]["status"] == "relayed_to_reddit":
                break
            await asyncio.sleep(0.05)
        events = (await http.get("/api/events", params={"since": 0, "timeout": 0})).json()
    assert first.json()["message"]["status"] == "relay_failed"
    assert first.json()["relay_error"]["code"] == "reddit_rate_limited"
    assert history[0]["status"] == "relayed_to_reddit"
    receipts = [e["status"] for e in events["events"] if e["type"] == "receipt"]
    assert receipts == ["relay_failed", "relayed_to_reddit"]
    assert [m["body"].split("\n")[0] for m in running.standin.mail.inbox_of("dave")] == ["hey"]
