"""A third user can touch nothing of someone else's conversation or devices."""

from __future__ import annotations

import json
from typing import Any

import websockets

from tests.server.conftest import RunningServer, fake_envelope, fake_jwk


async def test_an_outsider_gets_403_or_404_on_a_conversation_of_others(
    server: RunningServer, people: Any
) -> None:
    alice, bob, carol = await people(), await people(), await people()
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

    attempts = {
        "history": await carol.http.get(f"/api/conversations/{conversation_id}/messages"),
        "send": await carol.http.post(
            "/api/messages",
            json={
                "conversation_id": conversation_id,
                "client_msg_id": "c1",
                "envelope": fake_envelope(carol.device_id, [carol.device_id]),
            },
        ),
        "read": await carol.http.post(
            f"/api/conversations/{conversation_id}/read", json={"up_to": message_id}
        ),
        "delete bob's device": await carol.http.delete(f"/api/devices/{bob.device_id}"),
        "take over bob's device id": await carol.http.put(
            f"/api/devices/{bob.device_id}",
            json={"public_key": fake_jwk(), "signing_key": fake_jwk(), "name": "mine"},
        ),
    }
    statuses = {name: r.status_code for name, r in attempts.items()}
    assert statuses == {
        "history": 404,
        "send": 404,
        "read": 404,
        "delete bob's device": 404,
        "take over bob's device id": 403,
    }
    listed = (await carol.http.get("/api/conversations")).json()["conversations"]
    assert listed == []
    events = (await carol.http.get("/api/events", params={"since": 0, "timeout": 0})).json()
    assert events["events"] == []
    # Bob's device is untouched and the message unread.
    devices = (await bob.http.get(f"/api/users/{bob.id}/devices")).json()
    assert [d["device_id"] for d in devices] == [bob.device_id]
    assert (await bob.http.get("/api/conversations")).json()["conversations"][0]["unread"] == 1


async def test_an_outsider_cannot_send_or_type_into_it_over_the_websocket(
    server: RunningServer, people: Any
) -> None:
    alice, bob, carol = await people(), await people(), await people()
    conversation_id = await alice.conversation_with(bob)
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": carol.token}))
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send(
            json.dumps(
                {
                    "type": "send",
                    "conversation_id": conversation_id,
                    "client_msg_id": "c1",
                    "envelope": fake_envelope(carol.device_id, [carol.device_id]),
                }
            )
        )
        codes = []
        await ws.send(json.dumps({"type": "typing", "conversation_id": conversation_id}))
        await ws.send(json.dumps({"type": "read", "conversation_id": conversation_id,
                                  "up_to": "x"}))  # fmt: skip
        for _ in range(3):
            frame = json.loads(await ws.recv())
            if frame["type"] == "error":
                codes.append(frame["code"])
    assert codes == ["not_found", "not_found", "not_found"]
    history = (await alice.http.get(f"/api/conversations/{conversation_id}/messages")).json()
    assert history["messages"] == []
