"""The WebSocket's fast frame paths give byte for byte what the codec's reference path
gives: ``frames.encode_event`` and ``encode_sent`` against ``encode_frame`` of the
codec's frame, and the ack shortcut of ``decode_client_frame`` against the codec."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import orjson
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core import codec, wire
from omninudge_core.errors import ProtocolError
from omninudge_core.models import DeliveryStatus, EventKind, Message, Origin, StreamEvent
from omninudge_server import frames
from omninudge_server.ws_json import decode_client_frame
from tests.core.test_codec import envelopes, ids, json_objects, seqs, texts, unicode_text

T0 = datetime(2026, 11, 24, 21, 9, 13, 123456, tzinfo=UTC)

# Any aware time (the codec turns it into UTC milliseconds), not only tidy ones.
sent_times = st.builds(
    lambda offset_min, delta_us: (T0 + timedelta(microseconds=delta_us)).astimezone(
        timezone(timedelta(minutes=offset_min))
    ),
    st.integers(-14 * 60, 14 * 60),
    st.integers(-(10**15), 10**15),
)


@st.composite
def messages(draw: st.DrawFn, message_id: str | None = None) -> Message:
    origin = draw(st.sampled_from(Origin))
    return Message(
        id=message_id or draw(ids),
        conversation_id=draw(ids),
        sender_id=draw(st.sampled_from(["alice", "bob"])),
        client_msg_id=draw(ids),
        origin=origin,
        sent_at=draw(sent_times),
        envelope=draw(st.none() | envelopes),
        text=draw(st.none() | texts),
        reddit_fullname=draw(st.none() | st.just("t4_abc")),
    )


def reference(event: StreamEvent) -> str | None:
    frame = frames.frame_for_event(event)
    return None if frame is None else frames.encode_frame(frame)


@given(
    message=messages(),
    viewer=st.sampled_from(["alice", "bob"]),
    seq=seqs.filter(lambda s: s > 0),
)
def test_a_message_event_encodes_like_the_codec(message: Message, viewer: str, seq: int) -> None:
    event = StreamEvent(viewer, seq, EventKind.MESSAGE, T0, message=message)
    for _ in range(2):  # the second time from the cache
        assert frames.encode_event(event) == reference(event)


@given(
    client_msg_id=ids,
    message=messages(),
    status=st.sampled_from(DeliveryStatus),
)
def test_a_sent_frame_encodes_like_the_codec(
    client_msg_id: str, message: Message, status: DeliveryStatus
) -> None:
    expected = frames.encode_frame(
        wire.SentFrame(client_msg_id, wire.WireMessage.from_domain(message, status=status))
    )
    assert frames.encode_sent(client_msg_id, message, status) == expected
    assert frames.encode_sent(client_msg_id, message, status) == expected


@given(first=messages(message_id="m-1"), second=messages(message_id="m-1"))
def test_a_cached_body_is_not_reused_for_a_different_message_with_the_same_id(
    first: Message, second: Message
) -> None:
    """Two servers in one process may both have a message ``m-1``."""
    for message in (first, second, attrs.evolve(first)):
        event = StreamEvent("alice", 1, EventKind.MESSAGE, T0, message=message)
        assert frames.encode_event(event) == reference(event)


def test_the_body_cache_stays_bounded() -> None:
    base = Message("x", "c", "alice", "cm", Origin.REDDIT, T0, text="hi")
    for n in range(frames.BODY_CACHE_SIZE * 2):
        frames.encode_sent("cm", attrs.evolve(base, id=f"bounded-{n}"), DeliveryStatus.ACCEPTED)
    assert len(frames._bodies) <= frames.BODY_CACHE_SIZE


receipt_strings = ids | st.text(unicode_text, max_size=12) | st.just("\ud800") | st.just("")
receipt_values = receipt_strings | st.none() | st.integers() | st.booleans()
receipt_statuses = st.sampled_from([s.value for s in wire.ReceiptStatus]) | receipt_values
valid_receipts = st.fixed_dictionaries(
    {"message_id": receipt_strings, "user_id": receipt_strings, "status": receipt_statuses}
)
odd_receipts = st.one_of(
    st.none(),
    json_objects,
    valid_receipts.flatmap(lambda p: st.sampled_from(sorted(p)).map(lambda k: _without(p, k))),
    st.builds(lambda p, extra: {**p, **extra}, valid_receipts, json_objects),
)


def _without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


@given(payload=valid_receipts | odd_receipts, seq=seqs | st.just(2**63))
def test_a_receipt_event_encodes_like_the_codec_or_is_skipped_like_it(
    payload: dict[str, Any] | None, seq: int
) -> None:
    event = StreamEvent("alice", seq, EventKind.RECEIPT, T0, payload=payload)
    assert frames.encode_event(event) == reference(event)


@given(
    kind=st.sampled_from([EventKind.SLIDESHOW, EventKind.UPGRADE, EventKind.MESSAGE]),
    payload=st.none() | json_objects,
    seq=seqs,
)
def test_other_events_take_the_codec_path(
    kind: EventKind, payload: dict[str, Any] | None, seq: int
) -> None:
    event = StreamEvent("alice", seq, kind, T0, payload=payload)  # MESSAGE without message
    assert frames.encode_event(event) == reference(event)


def test_a_valid_receipt_comes_out_as_the_client_expects() -> None:
    payload = {"message_id": "m1", "user_id": "bob", "status": "read"}
    text = frames.encode_event(StreamEvent("alice", 7, EventKind.RECEIPT, T0, payload=payload))
    assert text is not None
    assert orjson.loads(text) == {"type": "receipt", "seq": 7, **payload}


ack_like = st.fixed_dictionaries(
    {"type": st.just("ack") | st.sampled_from(["ping", "send", "Ack"])},
    optional={
        "seq": seqs | st.integers() | st.floats() | st.booleans() | st.none() | st.text(),
        "extra": st.integers(),
    },
)


@given(obj=ack_like)
def test_the_ack_shortcut_answers_like_the_codec(obj: dict[str, Any]) -> None:
    data = json.dumps(obj)  # NaN and 70-bit integers included: orjson refuses both
    assert _outcome(decode_client_frame, data) == _outcome(codec.decode_client_frame, data)


def _outcome(decode: Any, data: str) -> object:
    try:
        return decode(data)
    except ProtocolError as exc:
        return (type(exc), exc.code, getattr(exc, "field", None), exc.message)
