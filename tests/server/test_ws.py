"""The WebSocket endpoint, end to end, with the Python SDK and raw websockets clients."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from omninudge_server.client import Client, Stream
from tests.server.conftest import (
    Person,
    RunningServer,
    fake_envelope,
    fake_jwk,
    frame_of_type,
    run_server,
    sdk_client,
    unique_name,
)


async def test_live_exchange_sent_then_delivered_then_read(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    alice, bob = await sdk_client(server, alice_p), await sdk_client(server, bob_p)
    async with alice.connect() as a_stream, bob.connect() as b_stream:
        client_msg_id = await a_stream.send(conversation_id, alice_p.envelope_for(bob_p))
        sent = await frame_of_type(a_stream, "sent")
        assert sent["client_msg_id"] == client_msg_id
        message_id = sent["message"]["id"]

        incoming = await frame_of_type(b_stream, "message")
        assert incoming["message"]["id"] == message_id
        assert incoming["message"]["envelope"]["sender_device"] == alice_p.device_id
        await b_stream.ack()

        # The sender's own copy of the message comes through its stream too.
        own = await frame_of_type(a_stream, "message")
        assert own["message"]["id"] == message_id
        await a_stream.ack()
        delivered = await frame_of_type(a_stream, "receipt")
        assert (delivered["message_id"], delivered["status"]) == (message_id, "delivered")
        assert delivered["user_id"] == bob_p.id
        await a_stream.ack()

        await b_stream.read(conversation_id, message_id)
        read = await frame_of_type(a_stream, "receipt")
        assert (read["message_id"], read["status"]) == (message_id, "read")
    await alice.aclose()
    await bob.aclose()


async def _send_many(alice: Person, bob: Person, conversation_id: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = await alice.http.post(
            "/api/messages",
            json={
                "conversation_id": conversation_id,
                "client_msg_id": f"bulk-{i}",
                "envelope": alice.envelope_for(bob),
            },
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["message"]["id"])
    return ids


async def test_offline_recipient_gets_200_messages_in_order_once(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    sent = await _send_many(alice_p, bob_p, conversation_id, 200)
    bob = await sdk_client(server, bob_p)
    received: list[str] = []
    async with bob.connect(resume_from=0) as stream:
        while len(received) < 200:
            frame = await stream.recv(5)
            if frame["type"] == "message":
                received.append(frame["message"]["id"])
                if len(received) % 20 == 0:
                    await stream.ack()
        await stream.ack()
        with pytest.raises(TimeoutError):
            await frame_of_type(stream, "message", wait_s=0.5)
    assert received == sent
    await bob.aclose()


async def test_dropped_connection_resumes_from_last_ack_without_loss(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    sent = await _send_many(alice_p, bob_p, conversation_id, 120)
    bob = await sdk_client(server, bob_p)
    seen: dict[str, int] = {}
    async with bob.connect(resume_from=0) as stream:
        while len(seen) < 50:
            frame = await stream.recv(5)
            if frame["type"] == "message":
                seen[frame["message"]["id"]] = seen.get(frame["message"]["id"], 0) + 1
        await stream.ack()
        resume_from = stream.resume_from
        # Frames past the ack were received but are not acked: they come again.
    async with bob.connect(resume_from=resume_from) as stream:
        assert stream.hello is not None
        assert stream.hello["resume_from"] == resume_from
        duplicates = 0
        while len(seen) < 120:
            frame = await stream.recv(5)
            if frame["type"] == "message":
                message_id = frame["message"]["id"]
                duplicates += message_id in seen
                seen[message_id] = seen.get(message_id, 0) + 1
        await stream.ack()
    assert list(seen) == sent
    assert duplicates == 0  # the resume starts right after the last ack
    await bob.aclose()


async def test_resume_from_beyond_the_stream_head_is_an_error(
    server: RunningServer, people: Any
) -> None:
    bob_p = await people()
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": bob_p.token, "resume_from": 10**6}))
        frame = json.loads(await ws.recv())
        assert (frame["type"], frame["code"]) == ("error", "invalid_resume")


async def test_auth_with_a_bad_token_closes_with_4401(server: RunningServer) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "not.a.token"}))
        frame = json.loads(await ws.recv())
        assert frame["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4401


async def test_frames_before_auth_are_refused_but_the_socket_stays(server: RunningServer) -> None:
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        frame = json.loads(await ws.recv())
        assert frame["code"] == "unauthenticated"
        await ws.send("{not json")
        frame = json.loads(await ws.recv())
        assert frame["code"] == "invalid_json"


@pytest.fixture(scope="module")
async def quick_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    """A server with a 0.5 s auth deadline, for the timeout test."""
    data_dir: Path = tmp_path_factory.mktemp("quick")
    async with run_server({}, data_dir, ws_auth_timeout_s=0.5) as running:
        yield running


async def test_no_auth_within_the_deadline_closes_with_4401(quick_server: RunningServer) -> None:
    async with websockets.connect(quick_server.ws_url) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4401


async def test_malformed_and_unknown_frames_get_errors_and_the_connection_stays(
    server: RunningServer, people: Any
) -> None:
    bob_p = await people()
    bob = await sdk_client(server, bob_p)
    async with bob.connect() as stream:
        for raw, code in [
            ("{", "invalid_json"),
            ('{"type": "fly"}', "unknown_type"),
            ('{"type": "ack"}', "missing_field"),
            ('{"type": "ack", "seq": "1"}', "invalid_field"),
            ('{"type": "ack", "seq": 1, "x": 2}', "unexpected_field"),
            ("[1, 2]", "invalid_frame"),
        ]:
            await stream.send_raw(raw)
            frame = await frame_of_type(stream, "error")
            assert frame["code"] == code, raw
        await stream.ping()
        assert (await frame_of_type(stream, "pong"))["type"] == "pong"
    await bob.aclose()


async def test_send_errors_carry_the_client_msg_id_as_ref(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    alice = await sdk_client(server, alice_p)
    async with alice.connect() as stream:
        envelope = fake_envelope(alice_p.device_id, [alice_p.device_id])
        client_msg_id = await stream.send(conversation_id, envelope)
        frame = await frame_of_type(stream, "error")
        assert frame["code"] == "device_mismatch"
        assert frame["ref"] == client_msg_id
        assert frame["missing"] == [bob_p.device_id]
    await alice.aclose()


async def test_typing_is_forwarded_but_not_across_a_block(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    alice, bob = await sdk_client(server, alice_p), await sdk_client(server, bob_p)
    async with alice.connect() as a_stream, bob.connect() as b_stream:
        await a_stream.typing(conversation_id)
        frame = await frame_of_type(b_stream, "typing")
        assert frame == {
            "type": "typing",
            "conversation_id": conversation_id,
            "user_id": alice_p.id,
        }
        await bob.block(alice_p.id)
        await asyncio.sleep(3.1)  # past the 3 s debounce window
        await a_stream.typing(conversation_id)
        with pytest.raises(TimeoutError):
            await frame_of_type(b_stream, "typing", wait_s=0.7)
    await alice.aclose()
    await bob.aclose()


async def test_presence_is_announced_to_contacts_unless_hidden(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p, carol_p = await people(), await people(), await people()
    await alice_p.conversation_with(bob_p)
    await alice_p.conversation_with(carol_p)
    await carol_p.http.patch("/api/me/settings", json={"presence_visible": False})
    alice, bob, carol = [await sdk_client(server, p) for p in (alice_p, bob_p, carol_p)]
    async with alice.connect() as a_stream:
        async with bob.connect():
            frame = await frame_of_type(a_stream, "presence")
            assert (frame["user_id"], frame["online"]) == (bob_p.id, True)
        # Alice's own connect snapshot may repeat "online"; then bob's exit arrives.
        while frame["online"]:
            frame = await frame_of_type(a_stream, "presence")
            assert frame["user_id"] == bob_p.id
        assert frame["last_seen"] is not None
        async with carol.connect():
            with pytest.raises(TimeoutError):
                await frame_of_type(a_stream, "presence", wait_s=0.7)
    for client in (alice, bob, carol):
        await client.aclose()


async def _drain(stream: Stream) -> None:
    while True:
        await stream.recv(5)


async def _drain_raw(ws: Any) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 5)


async def test_flooding_closes_with_1008(server: RunningServer, people: Any) -> None:
    bob_p = await people()
    bob = await sdk_client(server, bob_p)
    async with bob.connect() as stream:
        for _ in range(500):
            await stream.send_raw('{"type":"ping"}')
        with pytest.raises(ConnectionClosed):
            await _drain(stream)
        assert stream.close_code == 1008
    await bob.aclose()


async def test_an_oversize_frame_closes_with_1009(server: RunningServer, people: Any) -> None:
    bob_p = await people()
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": bob_p.token}))
        await ws.recv()
        await ws.send("x" * (server.settings.ws_max_frame_bytes + 10))
        with pytest.raises(ConnectionClosed):
            await _drain_raw(ws)
    assert ws.close_code == 1009


async def test_a_too_large_envelope_is_an_error_frame(server: RunningServer, people: Any) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    alice = await sdk_client(server, alice_p)
    envelope = alice_p.envelope_for(bob_p)
    envelope["ct"] = "A" * 70_000
    async with alice.connect() as stream:
        await stream.send(conversation_id, envelope, client_msg_id=str(uuid.uuid4()))
        frame = await frame_of_type(stream, "error")
        assert frame["code"] == "too_large"
        await stream.ping()
        await frame_of_type(stream, "pong")
    await alice.aclose()


async def test_session_cookie_authenticates_the_upgrade_with_our_origin(
    server: RunningServer,
) -> None:
    async with server.client() as http:
        r = await http.post("/api/auth/dev-login", json={"username": unique_name()})
    cookie = f"omninudge_session={r.json()['access_token']}"
    async with websockets.connect(
        server.ws_url,
        additional_headers={"Cookie": cookie},
        origin=server.base_url,  # type: ignore[arg-type]
    ) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello"
    async with websockets.connect(
        server.ws_url,
        additional_headers={"Cookie": cookie},
        origin="https://evil.example",  # type: ignore[arg-type]
    ) as ws:
        await ws.send('{"type":"ping"}')
        frame = json.loads(await ws.recv())
        assert frame["code"] == "unauthenticated"  # the cookie was not accepted


async def test_devices_registered_by_the_sdk_are_listed(server: RunningServer) -> None:
    client = await Client.dev_login(server.base_url, unique_name())
    await client.register_device(
        "sdk-" + uuid.uuid4().hex[:8], public_key=fake_jwk(), signing_key=fake_jwk()
    )
    devices = await client.devices(client.user_id)
    assert [d["device_id"] for d in devices] == [client.device_id]
    await client.aclose()


@pytest.fixture(scope="module")
async def fast_ping_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RunningServer]:
    """A server whose session heartbeat ticks every 0.3 s."""
    async with run_server({}, tmp_path_factory.mktemp("ping"), ws_ping_interval_s=0.3) as running:
        yield running


async def test_logout_ends_live_websocket_sessions(fast_ping_server: RunningServer) -> None:
    from tests.server.conftest import login

    alice_p = await login(fast_ping_server)
    alice = Client(fast_ping_server.base_url, alice_p.token)
    async with alice.connect() as stream:
        await alice.logout()
        with pytest.raises(ConnectionClosed):
            await _drain(stream)
        assert stream.close_code == 4401
    await alice.aclose()
    await alice_p.close()


@pytest.fixture(scope="module")
async def narrow_window_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RunningServer]:
    """A server that allows only 10 unacknowledged pushes per connection."""
    async with run_server(
        {}, tmp_path_factory.mktemp("window"), ws_max_in_flight=10, send_burst=1000.0
    ) as running:
        yield running


async def test_unacked_pushes_are_bounded_until_the_client_acks(
    narrow_window_server: RunningServer,
) -> None:
    from tests.server.conftest import login

    alice_p, bob_p = await login(narrow_window_server), await login(narrow_window_server)
    await alice_p.register_device()
    await bob_p.register_device()
    conversation_id = await alice_p.conversation_with(bob_p)
    sent = await _send_many(alice_p, bob_p, conversation_id, 25)
    bob = Client(narrow_window_server.base_url, bob_p.token, device_id=bob_p.device_id)
    received: list[str] = []

    async def take_window() -> None:
        """Collect message frames until none comes for 0.5 s."""
        while True:
            try:
                frame = await stream.recv(0.5)
            except TimeoutError:
                return
            if frame["type"] == "message":
                received.append(frame["message"]["id"])

    async with bob.connect(resume_from=0) as stream:
        await take_window()
        assert len(received) == 10  # the window is full: nothing more without an ack
        await stream.ack(stream.last_seq - 5)  # frees 5 slots
        await take_window()
        assert len(received) == 15
        await stream.ack()
        await take_window()
        assert len(received) == 25
    assert received == sent
    await bob.aclose()
    await alice_p.close()
    await bob_p.close()
