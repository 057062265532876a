"""REST API behaviour against a real server (API.md)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.server.conftest import RunningServer, fake_envelope, fake_jwk, login, unique_name


async def test_dev_login_creates_then_finds_the_same_user(server: RunningServer) -> None:
    name = unique_name()
    first = await login(server, name)
    second = await login(server, name)
    assert first.id == second.id
    assert first.user["username"] == name
    await first.close()
    await second.close()


async def test_dev_login_sets_an_httponly_lax_session_cookie(server: RunningServer) -> None:
    async with server.client() as http:
        r = await http.post("/api/auth/dev-login", json={"username": unique_name()})
    cookie = r.headers["set-cookie"].lower()
    assert "omninudge_session=" in cookie
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0


async def test_me_returns_the_account_and_settings(people: Any) -> None:
    alice = await people()
    r = await alice.http.get("/api/me")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == alice.id
    assert body["settings"] == {"read_receipts": True, "presence_visible": True}


async def test_patch_settings_changes_only_given_fields(people: Any) -> None:
    alice = await people()
    r = await alice.http.patch("/api/me/settings", json={"read_receipts": False})
    assert r.status_code == 200
    assert r.json() == {"read_receipts": False, "presence_visible": True}
    assert (await alice.http.get("/api/me")).json()["settings"]["read_receipts"] is False


async def test_logout_revokes_the_token(people: Any) -> None:
    alice = await people(register=False)
    assert (await alice.http.post("/api/auth/logout")).status_code == 204
    r = await alice.http.get("/api/me")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "token_revoked"


async def test_cookie_auth_works_for_reads(server: RunningServer) -> None:
    async with server.client() as http:
        await http.post("/api/auth/dev-login", json={"username": unique_name()})
        r = await http.get("/api/me")
    assert r.status_code == 200


async def test_cookie_auth_state_change_needs_a_matching_origin(server: RunningServer) -> None:
    async with server.client() as http:
        await http.post("/api/auth/dev-login", json={"username": unique_name()})
        foreign = await http.patch(
            "/api/me/settings",
            json={"read_receipts": False},
            headers={"Origin": "https://evil.example"},
        )
        missing = await http.patch("/api/me/settings", json={"read_receipts": False})
        ours = await http.patch(
            "/api/me/settings",
            json={"read_receipts": False},
            headers={"Origin": server.base_url},
        )
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "origin_mismatch"
    assert missing.status_code == 403
    assert ours.status_code == 200


async def test_user_lookup_by_name(people: Any) -> None:
    alice = await people(register=False)
    bob = await people(register=False)
    r = await alice.http.get(f"/api/users/by-name/{bob.username.upper()}")
    assert r.json() == {"id": bob.id, "username": bob.username, "on_platform": True}
    nobody = unique_name()
    r = await alice.http.get(f"/api/users/by-name/{nobody}")
    assert r.json() == {"id": None, "username": nobody, "on_platform": False}


async def test_device_registration_is_idempotent_and_keys_are_immutable(people: Any) -> None:
    alice = await people(register=False)
    keys = {"public_key": fake_jwk(), "signing_key": fake_jwk(), "name": "laptop"}
    first = await alice.http.put("/api/devices/d1-" + alice.id[:8], json=keys)
    again = await alice.http.put("/api/devices/d1-" + alice.id[:8], json=keys)
    changed = await alice.http.put(
        "/api/devices/d1-" + alice.id[:8], json={**keys, "public_key": fake_jwk()}
    )
    assert first.status_code == 201
    assert again.status_code == 200
    assert changed.status_code == 409
    listed = (await alice.http.get(f"/api/users/{alice.id}/devices")).json()
    assert [d["device_id"] for d in listed] == ["d1-" + alice.id[:8]]


async def test_deleting_a_device_removes_it(people: Any) -> None:
    alice = await people()
    assert (await alice.http.delete(f"/api/devices/{alice.device_id}")).status_code == 204
    assert (await alice.http.get(f"/api/users/{alice.id}/devices")).json() == []
    assert (await alice.http.delete(f"/api/devices/{alice.device_id}")).status_code == 404


async def test_conversation_creation_is_idempotent_per_pair(people: Any) -> None:
    alice = await people()
    bob = await people()
    r1 = await alice.http.post("/api/conversations", json={"user_id": bob.id})
    r2 = await bob.http.post("/api/conversations", json={"user_id": alice.id})
    assert r1.status_code == 201
    assert r2.status_code == 200
    assert r1.json()["id"] == r2.json()["id"]
    assert sorted(r1.json()["participants"]) == sorted([alice.id, bob.id])


async def test_send_answers_201_then_200_for_the_same_client_msg_id(people: Any) -> None:
    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    body = {
        "conversation_id": conversation_id,
        "client_msg_id": str(uuid.uuid4()),
        "envelope": alice.envelope_for(bob),
    }
    first = await alice.http.post("/api/messages", json=body)
    replay = await alice.http.post("/api/messages", json=body)
    assert first.status_code == 201, first.text
    assert replay.status_code == 200
    assert first.json()["message"]["id"] == replay.json()["message"]["id"]
    history = (await bob.http.get(f"/api/conversations/{conversation_id}/messages")).json()
    assert [m["id"] for m in history["messages"]] == [first.json()["message"]["id"]]


async def test_envelope_must_cover_exactly_the_current_devices(people: Any) -> None:
    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    envelope = fake_envelope(alice.device_id, [alice.device_id, "gone-device"])
    r = await alice.http.post(
        "/api/messages",
        json={"conversation_id": conversation_id, "client_msg_id": "m1", "envelope": envelope},
    )
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "device_mismatch"
    assert error["missing"] == [bob.device_id]
    assert error["stale"] == ["gone-device"]


async def test_sender_device_must_belong_to_the_sender(people: Any) -> None:
    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    envelope = fake_envelope(bob.device_id, [alice.device_id, bob.device_id])
    r = await alice.http.post(
        "/api/messages",
        json={"conversation_id": conversation_id, "client_msg_id": "m1", "envelope": envelope},
    )
    assert r.status_code == 403


@pytest.mark.parametrize("who_blocks", ["sender", "recipient"])
async def test_a_block_in_either_direction_forbids_messaging(people: Any, who_blocks: str) -> None:
    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    blocker, blocked = (alice, bob) if who_blocks == "sender" else (bob, alice)
    assert (await blocker.http.put(f"/api/blocks/{blocked.id}")).status_code == 204
    listed = (await blocker.http.get("/api/blocks")).json()["blocks"]
    assert [b["user_id"] for b in listed] == [blocked.id]
    r = await alice.http.post(
        "/api/messages",
        json={
            "conversation_id": conversation_id,
            "client_msg_id": "m1",
            "envelope": alice.envelope_for(bob),
        },
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "blocked"
    assert (await blocker.http.delete(f"/api/blocks/{blocked.id}")).status_code == 204
    r = await alice.http.post(
        "/api/messages",
        json={
            "conversation_id": conversation_id,
            "client_msg_id": "m2",
            "envelope": alice.envelope_for(bob),
        },
    )
    assert r.status_code == 201


async def test_history_pages_are_keyset_and_complete(people: Any) -> None:
    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    sent = []
    for i in range(7):
        r = await alice.http.post(
            "/api/messages",
            json={
                "conversation_id": conversation_id,
                "client_msg_id": f"m{i}",
                "envelope": alice.envelope_for(bob),
            },
        )
        sent.append(r.json()["message"]["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["before"] = cursor
        page = (
            await bob.http.get(f"/api/conversations/{conversation_id}/messages", params=params)
        ).json()
        seen.extend(m["id"] for m in page["messages"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(sent))


async def test_conversation_list_shows_unread_and_read_clears_it(people: Any) -> None:
    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    last = None
    for i in range(3):
        r = await alice.http.post(
            "/api/messages",
            json={
                "conversation_id": conversation_id,
                "client_msg_id": f"m{i}",
                "envelope": alice.envelope_for(bob),
            },
        )
        last = r.json()["message"]["id"]
    listed = (await bob.http.get("/api/conversations")).json()["conversations"]
    assert [(c["id"], c["unread"]) for c in listed] == [(conversation_id, 3)]
    r = await bob.http.post(f"/api/conversations/{conversation_id}/read", json={"up_to": last})
    assert r.status_code == 204
    listed = (await bob.http.get("/api/conversations")).json()["conversations"]
    assert listed[0]["unread"] == 0


async def test_long_poll_returns_the_stream_and_the_read_receipt(people: Any) -> None:
    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    r = await alice.http.post(
        "/api/messages",
        json={
            "conversation_id": conversation_id,
            "client_msg_id": "m1",
            "envelope": alice.envelope_for(bob),
        },
    )
    message_id = r.json()["message"]["id"]
    page = (await bob.http.get("/api/events", params={"since": 0, "timeout": 0})).json()
    assert [(e["type"], e["message"]["id"]) for e in page["events"]] == [("message", message_id)]
    assert page["next"] == page["events"][-1]["seq"]
    await bob.http.post(f"/api/conversations/{conversation_id}/read", json={"up_to": message_id})
    page = (await alice.http.get("/api/events", params={"since": 0, "timeout": 1})).json()
    kinds = [(e["type"], e.get("status")) for e in page["events"]]
    assert kinds == [("message", None), ("receipt", "read")]


async def test_long_poll_wakes_up_when_an_event_arrives(people: Any) -> None:
    import asyncio

    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    head = (await bob.http.get("/api/events", params={"since": 0, "timeout": 0})).json()["next"]
    poll = asyncio.create_task(bob.http.get("/api/events", params={"since": head, "timeout": 10}))
    await asyncio.sleep(0.2)
    await alice.http.post(
        "/api/messages",
        json={
            "conversation_id": conversation_id,
            "client_msg_id": "m1",
            "envelope": alice.envelope_for(bob),
        },
    )
    page = (await asyncio.wait_for(poll, 5)).json()
    assert [e["type"] for e in page["events"]] == ["message"]


async def test_read_receipts_respect_the_readers_setting(people: Any) -> None:
    alice = await people()
    bob = await people()
    await bob.http.patch("/api/me/settings", json={"read_receipts": False})
    conversation_id = await alice.conversation_with(bob)
    r = await alice.http.post(
        "/api/messages",
        json={
            "conversation_id": conversation_id,
            "client_msg_id": "m1",
            "envelope": alice.envelope_for(bob),
        },
    )
    message_id = r.json()["message"]["id"]
    await bob.http.post(f"/api/conversations/{conversation_id}/read", json={"up_to": message_id})
    page = (await alice.http.get("/api/events", params={"since": 0, "timeout": 0})).json()
    # Read implies delivered: the sender learns delivered, never read.
    assert [(e["type"], e.get("status")) for e in page["events"]] == [
        ("message", None),
        ("receipt", "delivered"),
    ]


async def test_openapi_lists_every_http_route(server: RunningServer) -> None:
    from starlette.routing import Route

    from omninudge_server.app import create_app

    async with server.client() as http:
        doc = (await http.get("/api/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    app = create_app(server.settings)
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    assert documented == served


async def test_metrics_expose_prometheus_counters(server: RunningServer) -> None:
    async with server.client() as http:
        await http.get("/health")
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert "omninudge_http_request_duration_seconds" in r.text
    assert 'route="/health"' in r.text


async def test_long_poll_since_acknowledges_the_previous_page(people: Any) -> None:
    alice = await people()
    bob = await people()
    conversation_id = await alice.conversation_with(bob)
    r = await alice.http.post(
        "/api/messages",
        json={
            "conversation_id": conversation_id,
            "client_msg_id": "m1",
            "envelope": alice.envelope_for(bob),
        },
    )
    message_id = r.json()["message"]["id"]
    page = (await bob.http.get("/api/events", params={"since": 0, "timeout": 0})).json()
    params = {"since": page["next"], "timeout": 0, "device_id": bob.device_id}
    await bob.http.get("/api/events", params=params)
    await bob.http.get("/api/events", params=params)  # a repeated ack changes nothing
    events = (await alice.http.get("/api/events", params={"since": 0, "timeout": 0})).json()
    receipts = [(e["message_id"], e["status"]) for e in events["events"] if e["type"] == "receipt"]
    assert receipts == [(message_id, "delivered")]
    history = (await alice.http.get(f"/api/conversations/{conversation_id}/messages")).json()
    assert history["messages"][0]["status"] == "delivered"


async def test_dev_login_is_404_when_disabled(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.server.conftest import run_server

    env = {"OMNINUDGE_DEV_LOGIN": "0"}
    async with run_server(env, tmp_path_factory.mktemp("nodev")) as running:
        http = running.client()
        r = await http.post("/api/auth/dev-login", json={"username": unique_name()})
        await http.aclose()
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_request_logs_carry_no_credentials(
    server: RunningServer, people: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    alice = await people(register=False)
    with caplog.at_level(logging.DEBUG):
        await alice.http.get("/api/me", params={"secret": "query-secret-value"})
        await alice.http.patch("/api/me/settings", json={"read_receipts": True})
    # Only the server's own loggers: the test client and the SQLite driver log too.
    text = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith("omninudge")
    )
    assert "/api/me" in text  # the access log is there...
    assert alice.token not in text  # ...without the token,
    assert "query-secret-value" not in text  # the query string
    assert "read_receipts" not in text  # or the body
