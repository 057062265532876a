"""The WebSocket hot path's shortcuts keep the rules: a batched ack still yields one
receipt per message, a connection's cached conversation does not hide a block or a new
device, events in hand are pushed only when complete, and the orjson frame parser
answers exactly like the codec."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from omninudge_adapters.memory import MemoryFanOut
from omninudge_core import codec
from omninudge_core.errors import ProtocolError
from omninudge_core.models import EventKind, StreamEvent
from omninudge_server.realtime import RECENT_EVENTS, Hub
from omninudge_server.ws_json import decode_client_frame, dumps
from tests.server.conftest import (
    RunningServer,
    fake_envelope,
    frame_of_type,
    sdk_client,
)


async def test_one_ack_for_many_messages_gives_a_delivered_receipt_for_each(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    alice, bob = await sdk_client(server, alice_p), await sdk_client(server, bob_p)
    async with alice.connect() as a_stream, bob.connect() as b_stream:
        sent_ids = []
        for _ in range(5):
            await a_stream.send(conversation_id, alice_p.envelope_for(bob_p))
            sent_ids.append((await frame_of_type(a_stream, "sent"))["message"]["id"])
        received = [(await frame_of_type(b_stream, "message"))["message"]["id"] for _ in range(5)]
        assert received == sent_ids
        await b_stream.ack()  # one ack covers all five

        receipts: dict[str, str] = {}
        while len(receipts) < 5:
            frame = await frame_of_type(a_stream, "receipt")
            assert frame["user_id"] == bob_p.id
            receipts[frame["message_id"]] = frame["status"]
        assert receipts == dict.fromkeys(sent_ids, "delivered")
    await alice.aclose()
    await bob.aclose()


async def test_a_block_stops_sends_on_a_connection_that_already_sent(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    alice, bob = await sdk_client(server, alice_p), await sdk_client(server, bob_p)
    async with alice.connect() as a_stream:
        await a_stream.send(conversation_id, alice_p.envelope_for(bob_p))
        await frame_of_type(a_stream, "sent")
        await bob.block(alice_p.id)
        ref = await a_stream.send(conversation_id, alice_p.envelope_for(bob_p))
        error = await frame_of_type(a_stream, "error")
        assert (error["code"], error["ref"]) == ("blocked", ref)
    await alice.aclose()
    await bob.aclose()


async def test_a_new_recipient_device_is_required_on_a_connection_that_already_sent(
    server: RunningServer, people: Any
) -> None:
    alice_p, bob_p = await people(), await people()
    conversation_id = await alice_p.conversation_with(bob_p)
    alice = await sdk_client(server, alice_p)
    async with alice.connect() as a_stream:
        await a_stream.send(conversation_id, alice_p.envelope_for(bob_p))
        await frame_of_type(a_stream, "sent")
        second = await bob_p.register_device("dev_second_" + bob_p.device_id[-6:])
        await a_stream.send(conversation_id, alice_p.envelope_for(bob_p))
        error = await frame_of_type(a_stream, "error")
        assert error["code"] == "device_mismatch"
        assert second in error["missing"]
        await a_stream.send(
            conversation_id,
            fake_envelope(alice_p.device_id, [alice_p.device_id, bob_p.device_id, second]),
        )
        await frame_of_type(a_stream, "sent")
    await alice.aclose()


def _event(user_id: str, seq: int) -> StreamEvent:
    return StreamEvent(
        user_id=user_id,
        seq=seq,
        kind=EventKind.RECEIPT,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        payload={"message_id": f"m{seq}", "user_id": "x", "status": "delivered"},
    )


class _Listener:
    def on_notice(self, notice: Any) -> None:
        pass


async def test_hub_serves_events_in_hand_only_when_the_range_is_complete() -> None:
    hub = Hub(MemoryFanOut())
    listener = _Listener()
    hub.remember([_event("u1", 1)])  # nobody connected here: not kept
    assert hub.recent("u1", 0, 1) is None
    await hub.attach("u1", listener)
    hub.remember([_event("u1", 2), _event("u1", 3), _event("u2", 9)])
    assert [e.seq for e in hub.recent("u1", 1, 3) or []] == [2, 3]
    assert hub.recent("u1", 0, 3) is None  # seq 1 is not in hand: read the store
    assert hub.recent("u2", 8, 9) is None  # u2 has no connection here
    hub.remember(_event("u1", s) for s in range(4, 4 + 2 * RECENT_EVENTS))
    assert hub.recent("u1", 1, 3) is None  # the window moved on
    last = 3 + 2 * RECENT_EVENTS
    assert [e.seq for e in hub.recent("u1", last - 2, last) or []] == [last - 1, last]
    await hub.detach("u1", listener)
    assert hub.recent("u1", last - 2, last) is None
    await hub.close()


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"ping"}',
        b'{"type":"ack","seq":12}',
        '{"type":"ack","seq":123456789012345678901234567890}',
        '{"type":"ack","seq":NaN}',
        '{"type":"ack","seq":1.5}',
        '{"type":"ping"',
        "[1,2]",
        '"ping"',
        b"\xff\xfe",
        '{"type":"nope"}',
        '{"type":"read","conversation_id":"c","up_to":"\\ud800"}',
        "",
    ],
)
def test_orjson_frame_parser_answers_like_the_codec(data: str | bytes) -> None:
    try:
        expected: object = codec.decode_client_frame(data)
    except ProtocolError as exc:
        expected = (type(exc), exc.code)
    try:
        got: object = decode_client_frame(data)
    except ProtocolError as exc:
        got = (type(exc), exc.code)
    assert got == expected


def test_outgoing_frames_are_compact_json_with_unicode_kept() -> None:
    assert dumps({"a": "é", "b": [1, 2.5]}) == '{"a":"é","b":[1,2.5]}'
