"""The wire codec: every shape round-trips, malformed input maps to one typed error with
the right code and field, and nothing but a ProtocolError ever escapes."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core import codec, wire
from omninudge_core.codec import (
    ENVELOPE_ALG,
    MAX_ENVELOPE_BYTES,
    MAX_SLIDESHOW_MEDIA,
    MAX_TEXT_CHARS,
    Codec,
    default_codec,
    envelope_size,
)
from omninudge_core.errors import (
    BadEnvelope,
    DeviceMismatch,
    InvalidFrame,
    PayloadTooLarge,
    ProtocolError,
)
from omninudge_core.models import (
    Conversation,
    ConversationKind,
    DeliveryStatus,
    Device,
    Envelope,
    EventKind,
    Message,
    Origin,
    StreamEvent,
    UpgradeState,
    User,
    UserSettings,
    WrappedKey,
)
from omninudge_core.ports import ConversationView, Page

CODEC = default_codec()
T0 = datetime(2026, 11, 24, 21, 9, 13, 123000, tzinfo=UTC)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# --- strategies ----------------------------------------------------------------------------

unicode_text = st.characters(exclude_categories=("Cs",))  # no lone surrogates
ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True)
short_ids = st.text("abcdef0123456789-_", min_size=1, max_size=24)
seqs = st.integers(min_value=0, max_value=2**63 - 1)
small_ints = st.integers(min_value=0, max_value=10_000)
instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
texts = st.text(unicode_text, min_size=1, max_size=300)
usernames = st.from_regex(r"[A-Za-z0-9_-]{3,20}", fullmatch=True)
tokens = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1)


def b64_of(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(b64)


epks = st.binary(min_size=64, max_size=64).map(lambda raw: b64(b"\x04" + raw))
wrapped_keys = st.builds(WrappedKey, device=ids, iv=b64_of(12), wk=b64_of(48))
envelopes = st.builds(
    Envelope,
    v=st.just(1),
    alg=st.just(ENVELOPE_ALG),
    sender_device=ids,
    epk=epks,
    iv=b64_of(12),
    ct=st.binary(min_size=16, max_size=512).map(b64),
    keys=st.lists(wrapped_keys, min_size=1, max_size=6, unique_by=lambda k: k.device).map(tuple),
    sig=b64_of(64),
)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(unicode_text, max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(unicode_text, max_size=8), json_values, max_size=4)
jwks = st.builds(
    wire.PublicJwk, kty=st.just("EC"), crv=st.just("P-256"), x=b64_of(32), y=b64_of(32)
)
error_details = st.none() | st.dictionaries(
    st.sampled_from(["field", "limit", "missing", "stale"]), json_values, min_size=1
)

wire_messages = st.builds(
    wire.WireMessage,
    id=ids,
    conversation_id=ids,
    sender_id=ids,
    client_msg_id=ids,
    origin=st.sampled_from(Origin),
    sent_at=instants,
    status=st.sampled_from(DeliveryStatus),
    envelope=st.none() | envelopes,
    text=st.none() | texts,
)
wire_conversations = st.builds(
    wire.WireConversation,
    id=ids,
    participants=st.tuples(ids, ids),
    kind=st.sampled_from(ConversationKind),
    upgrade_state=st.sampled_from(UpgradeState),
    last_message_at=st.none() | instants,
    unread=small_ints,
)
wire_me = st.builds(
    wire.WireMe,
    id=ids,
    username=usernames,
    reddit_id=st.none() | ids,
    created_at=instants,
    settings=st.builds(UserSettings, st.booleans(), st.booleans()),
)


@st.composite
def send_frames(draw: st.DrawFn, cls: type[Any] = wire.SendFrame) -> Any:
    content = draw(st.sampled_from(["envelope", "text"]))
    return cls(
        conversation_id=draw(ids),
        client_msg_id=draw(ids),
        envelope=draw(envelopes) if content == "envelope" else None,
        text=draw(texts) if content == "text" else None,
    )


@st.composite
def nav_frames(draw: st.DrawFn) -> wire.SlideshowNavFrame:
    action = draw(st.sampled_from(wire.NavAction))
    index: int | None = None
    media_id: str | None = None
    if action is wire.NavAction.GOTO:
        if draw(st.booleans()):
            index = draw(small_ints)
        else:
            media_id = draw(ids)
    return wire.SlideshowNavFrame(draw(ids), action, draw(seqs), index=index, media_id=media_id)


CLIENT_FRAMES: dict[type[Any], st.SearchStrategy[Any]] = {
    wire.AuthFrame: st.builds(wire.AuthFrame, tokens.filter(lambda t: len(t) <= 4096),
                              st.none() | seqs),
    wire.AckFrame: st.builds(wire.AckFrame, seqs),
    wire.SendFrame: send_frames(),
    wire.TypingFrame: st.builds(wire.TypingFrame, ids),
    wire.ReadFrame: st.builds(wire.ReadFrame, ids, ids),
    wire.SlideshowStartFrame: st.builds(
        wire.SlideshowStartFrame,
        ids,
        st.lists(short_ids, min_size=1, max_size=MAX_SLIDESHOW_MEDIA).map(tuple),
        st.none() | st.integers(1, 3600),
    ),
    wire.SlideshowNavFrame: nav_frames(),
    wire.SlideshowStopFrame: st.builds(wire.SlideshowStopFrame, ids),
    wire.PingFrame: st.just(wire.PingFrame()),
}  # fmt: skip

SERVER_FRAMES: dict[type[Any], st.SearchStrategy[Any]] = {
    wire.HelloFrame: st.builds(wire.HelloFrame, ids, seqs),
    wire.MessageFrame: st.builds(wire.MessageFrame, seqs, wire_messages),
    wire.SentFrame: st.builds(wire.SentFrame, ids, wire_messages),
    wire.ReceiptFrame: st.builds(
        wire.ReceiptFrame, seqs, ids, ids, st.sampled_from(wire.ReceiptStatus)
    ),
    wire.TypingNoticeFrame: st.builds(wire.TypingNoticeFrame, ids, ids),
    wire.PresenceFrame: st.builds(
        wire.PresenceFrame, ids, st.none() | st.booleans(), st.none() | instants
    ),
    wire.SlideshowFrame: st.builds(wire.SlideshowFrame, ids, json_objects, st.none() | seqs),
    wire.UpgradeFrame: st.builds(wire.UpgradeFrame, seqs, ids, st.sampled_from(UpgradeState)),
    wire.ErrorFrame: st.builds(
        wire.ErrorFrame, ids, texts, ref=st.none() | ids, details=error_details
    ),
    wire.PongFrame: st.just(wire.PongFrame()),
}

server_frames = st.one_of(*SERVER_FRAMES.values())

BODIES: dict[type[Any], st.SearchStrategy[Any]] = {
    wire.DevLoginBody: st.builds(wire.DevLoginBody, usernames),
    wire.SessionBody: st.builds(wire.SessionBody, tokens, tokens),
    wire.SettingsPatchBody: st.builds(
        wire.SettingsPatchBody, st.none() | st.booleans(), st.none() | st.booleans()
    ),
    wire.DevicePutBody: st.builds(
        wire.DevicePutBody, jwks, jwks, st.text(unicode_text, max_size=100)
    ),
    wire.CreateConversationBody: st.one_of(
        st.builds(wire.CreateConversationBody, user_id=ids),
        st.builds(wire.CreateConversationBody, reddit_username=usernames),
    ),
    wire.PostMessageBody: send_frames(wire.PostMessageBody),
    wire.ReadBody: st.builds(wire.ReadBody, ids),
    wire.SessionAnswer: st.builds(wire.SessionAnswer, tokens, small_ints, wire_me, tokens),
    wire.WireMe: wire_me,
    wire.UserLookup: st.builds(wire.UserLookup, st.none() | ids, usernames, st.booleans()),
    wire.WireDevice: st.builds(
        wire.WireDevice, ids, ids, jwks, jwks, st.text(unicode_text, max_size=100), instants
    ),
    wire.WireConversation: wire_conversations,
    wire.WireMessage: wire_messages,
    wire.MessageAnswer: st.builds(wire.MessageAnswer, wire_messages),
    wire.MessagesPage: st.builds(
        wire.MessagesPage, st.lists(wire_messages, max_size=3).map(tuple), st.none() | ids
    ),
    wire.ConversationsPage: st.builds(
        wire.ConversationsPage,
        st.lists(wire_conversations, max_size=3).map(tuple),
        st.none() | ids,
    ),
    wire.EventsPage: st.builds(
        wire.EventsPage, st.lists(server_frames, max_size=4).map(tuple), seqs
    ),
    wire.ErrorBody: st.builds(wire.ErrorBody, st.builds(wire.ErrorInfo, ids, texts,
                                                        error_details)),
    wire.ErrorInfo: st.builds(wire.ErrorInfo, ids, texts, error_details),
    wire.PublicJwk: jwks,
    Envelope: envelopes,
    WrappedKey: wrapped_keys,
}  # fmt: skip

# Query strings are parsed, not structured (see the query tests below).
NOT_BODIES = {wire.PageQuery, wire.EventsQuery}


# --- round trips ---------------------------------------------------------------------------


def test_every_wire_class_has_a_round_trip_strategy() -> None:
    """The round-trip tests below cover every attrs class wire.py exports."""
    exported = {getattr(wire, name) for name in wire.__all__}
    classes = {c for c in exported if isinstance(c, type) and attrs.has(c)}
    covered = set(CLIENT_FRAMES) | set(SERVER_FRAMES) | set(BODIES) | NOT_BODIES
    assert classes - covered == set()


@pytest.mark.parametrize("cls", list(CLIENT_FRAMES), ids=lambda c: c.TYPE)
@given(data=st.data())
def test_client_frame_round_trips_through_json(cls: type[Any], data: st.DataObject) -> None:
    frame = data.draw(CLIENT_FRAMES[cls])
    obj = CODEC.unstructure(frame)
    assert obj["type"] == cls.TYPE
    assert CODEC.structure_client_frame(obj) == frame
    assert CODEC.decode_client_frame(CODEC.encode_client_frame(frame)) == frame


@pytest.mark.parametrize("cls", list(SERVER_FRAMES), ids=lambda c: c.TYPE)
@given(data=st.data())
def test_server_frame_round_trips_through_json(cls: type[Any], data: st.DataObject) -> None:
    frame = data.draw(SERVER_FRAMES[cls])
    obj = CODEC.unstructure_server_frame(frame)
    assert obj["type"] == cls.TYPE
    assert CODEC.structure_server_frame(obj) == frame
    assert CODEC.decode_server_frame(CODEC.encode_server_frame(frame)) == frame


@pytest.mark.parametrize("cls", list(BODIES), ids=lambda c: c.__name__)
@given(data=st.data())
def test_body_round_trips_through_json(cls: type[Any], data: st.DataObject) -> None:
    body = data.draw(BODIES[cls])
    assert CODEC.structure(CODEC.unstructure(body), cls) == body
    assert CODEC.decode_body(CODEC.encode(body), cls) == body


# --- malformed input -----------------------------------------------------------------------

EPK = b64(b"\x04" + bytes(64))
IV = b64(bytes(12))
WK = b64(bytes(48))
SIG = b64(bytes(64))
CT = b64(bytes(40))
JWK = {"kty": "EC", "crv": "P-256", "x": b64(bytes(32)), "y": b64(bytes(32))}


def envelope(**changes: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "v": 1,
        "alg": ENVELOPE_ALG,
        "sender_device": "dev-a",
        "epk": EPK,
        "iv": IV,
        "ct": CT,
        "keys": [{"device": "dev-a", "iv": IV, "wk": WK}, {"device": "dev-b", "iv": IV, "wk": WK}],
        "sig": SIG,
    }
    env.update(changes)
    return {k: v for k, v in env.items() if v is not ...}


def send(**changes: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "send",
        "conversation_id": "c1",
        "client_msg_id": "m1",
        "envelope": envelope(),
    }
    frame.update(changes)
    return {k: v for k, v in frame.items() if v is not ...}


def key(**changes: Any) -> dict[str, Any]:
    return {"device": "dev-c", "iv": IV, "wk": WK, **changes}


MALFORMED_FRAMES: list[tuple[str, object, str, str | None]] = [
    # (case, input: bytes/str = raw JSON, else a parsed object, code, field)
    ("not json", b"{type: ack}", "invalid_json", None),
    ("truncated json", b'{"type": "ack", "seq": 1', "invalid_json", None),
    ("NaN is not json", b'{"type": "ack", "seq": NaN}', "invalid_json", None),
    ("invalid utf-8", b'{"type": "ack\xff"}', "invalid_json", None),
    ("empty input", b"", "invalid_json", None),
    ("a list", b"[1, 2]", "invalid_frame", None),
    ("a string", b'"ack"', "invalid_frame", None),
    ("null", b"null", "invalid_frame", None),
    ("no type", {"seq": 1}, "unknown_type", "type"),
    ("unknown type", {"type": "launch"}, "unknown_type", "type"),
    ("type is a number", {"type": 3}, "unknown_type", "type"),
    ("type is a list", {"type": ["ack"]}, "unknown_type", "type"),
    ("server type from client", {"type": "pong"}, "unknown_type", "type"),
    ("ack without seq", {"type": "ack"}, "missing_field", "seq"),
    ("ack seq bool", {"type": "ack", "seq": True}, "invalid_field", "seq"),
    ("ack seq float", {"type": "ack", "seq": 1.0}, "invalid_field", "seq"),
    ("ack seq string", {"type": "ack", "seq": "1"}, "invalid_field", "seq"),
    ("ack seq negative", {"type": "ack", "seq": -1}, "invalid_field", "seq"),
    ("ack seq beyond bigint", {"type": "ack", "seq": 2**63}, "invalid_field", "seq"),
    ("ack extra field", {"type": "ack", "seq": 1, "x": 1}, "unexpected_field", "x"),
    ("auth token int", {"type": "auth", "token": 12}, "invalid_field", "token"),
    ("auth token empty", {"type": "auth", "token": ""}, "invalid_field", "token"),
    ("auth token too long", {"type": "auth", "token": "t" * 4097}, "too_large", "token"),
    ("auth resume_from str", {"type": "auth", "token": "t", "resume_from": "3"}, "invalid_field",
     "resume_from"),
    ("send without content", send(envelope=...), "missing_field", "envelope"),
    ("send with both", send(text="hi"), "invalid_field", "text"),
    ("send text too long", send(envelope=..., text="x" * (MAX_TEXT_CHARS + 1)), "too_large",
     "text"),
    ("send text empty", send(envelope=..., text=""), "invalid_field", "text"),
    ("send text lone surrogate", send(envelope=..., text="a\ud800"), "invalid_field", "text"),
    ("send id too long", send(conversation_id="c" * 129), "too_large", "conversation_id"),
    ("send id empty", send(client_msg_id=""), "invalid_field", "client_msg_id"),
    ("send id number", send(client_msg_id=7), "invalid_field", "client_msg_id"),
    ("envelope a string", send(envelope="abc"), "invalid_field", "envelope"),
    ("envelope v2", send(envelope=envelope(v=2)), "invalid_envelope", "envelope.v"),
    ("envelope v bool", send(envelope=envelope(v=True)), "invalid_field", "envelope.v"),
    ("envelope alg", send(envelope=envelope(alg="RSA")), "invalid_envelope", "envelope.alg"),
    ("envelope without sig", send(envelope=envelope(sig=...)), "missing_field", "envelope.sig"),
    ("envelope extra", send(envelope=envelope(x="1")), "unexpected_field", "envelope.x"),
    ("epk compressed", send(envelope=envelope(epk=b64(b"\x02" + bytes(64)))),
     "invalid_envelope", "envelope.epk"),
    ("epk short", send(envelope=envelope(epk=b64(b"\x04" + bytes(32)))), "invalid_envelope",
     "envelope.epk"),
    ("iv padded", send(envelope=envelope(iv=IV[:-1] + "=")), "invalid_envelope", "envelope.iv"),
    ("iv 16 bytes", send(envelope=envelope(iv=b64(bytes(16)))), "invalid_envelope",
     "envelope.iv"),
    ("ct standard base64", send(envelope=envelope(ct="ab+/" * 8)), "invalid_envelope",
     "envelope.ct"),
    ("ct too short", send(envelope=envelope(ct=b64(bytes(8)))), "invalid_envelope",
     "envelope.ct"),
    ("sig DER-sized", send(envelope=envelope(sig=b64(bytes(70)))), "invalid_envelope",
     "envelope.sig"),
    ("keys empty", send(envelope=envelope(keys=[])), "invalid_envelope", "envelope.keys"),
    ("keys not a list", send(envelope=envelope(keys={"device": "d"})), "invalid_field",
     "envelope.keys"),
    ("keys too many", send(envelope=envelope(keys=[key(device=f"d{i}") for i in range(65)])),
     "invalid_envelope", "envelope.keys"),
    ("keys duplicate device", send(envelope=envelope(keys=[key(), key()])), "invalid_envelope",
     "envelope.keys[1].device"),
    ("wk wrong size", send(envelope=envelope(keys=[key(wk=b64(bytes(32)))])),
     "invalid_envelope", "envelope.keys[0].wk"),
    ("wk a number", send(envelope=envelope(keys=[key(), key(device="d", wk=5)])),
     "invalid_field", "envelope.keys[1].wk"),
    ("key without iv", send(envelope=envelope(keys=[{"device": "d", "wk": WK}])),
     "missing_field", "envelope.keys[0].iv"),
    ("envelope over 64 KiB", send(envelope=envelope(ct=b64(bytes(50_000)))), "too_large",
     "envelope"),
    ("typing id list", {"type": "typing", "conversation_id": ["c"]}, "invalid_field",
     "conversation_id"),
    ("read without up_to", {"type": "read", "conversation_id": "c"}, "missing_field", "up_to"),
    ("id with a pipe", {"type": "typing", "conversation_id": "a|b"}, "invalid_field",
     "conversation_id"),
    ("id with a space", {"type": "typing", "conversation_id": "a b"}, "invalid_field",
     "conversation_id"),
    ("slideshow no media", {"type": "slideshow_start", "conversation_id": "c", "media_ids": []},
     "invalid_field", "media_ids"),
    ("slideshow 101 media", {"type": "slideshow_start", "conversation_id": "c",
                             "media_ids": ["m"] * 101}, "too_large", "media_ids"),
    ("slideshow media id int", {"type": "slideshow_start", "conversation_id": "c",
                                "media_ids": ["m", 2]}, "invalid_field", "media_ids[1]"),
    ("slideshow autoplay 0", {"type": "slideshow_start", "conversation_id": "c",
                              "media_ids": ["m"], "autoplay_s": 0}, "invalid_field",
     "autoplay_s"),
    ("slideshow autoplay 3601", {"type": "slideshow_start", "conversation_id": "c",
                                 "media_ids": ["m"], "autoplay_s": 3601}, "invalid_field",
     "autoplay_s"),
    ("nav unknown action", {"type": "slideshow_nav", "conversation_id": "c", "action": "jump",
                            "base_version": 1}, "invalid_field", "action"),
    ("nav goto without target", {"type": "slideshow_nav", "conversation_id": "c",
                                 "action": "goto", "base_version": 1}, "invalid_field", "index"),
    ("nav next with index", {"type": "slideshow_nav", "conversation_id": "c", "action": "next",
                             "base_version": 1, "index": 2}, "invalid_field", "index"),
    ("nav without base_version", {"type": "slideshow_nav", "conversation_id": "c",
                                  "action": "next"}, "missing_field", "base_version"),
    ("ping with payload", {"type": "ping", "x": 1}, "unexpected_field", "x"),
    ("frame too big", b" " * (codec.MAX_FRAME_BYTES + 1), "too_large", None),
]  # fmt: skip


def decode_frame(raw: object) -> wire.ClientFrame:
    if isinstance(raw, bytes | str):
        return CODEC.decode_client_frame(raw)
    return CODEC.structure_client_frame(raw)


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [case[1:] for case in MALFORMED_FRAMES],
    ids=[case[0] for case in MALFORMED_FRAMES],
)
def test_malformed_client_frame_is_refused_with_its_code(
    raw: object, code: str, field: str | None
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frame(raw)
    assert info.value.code == code
    assert getattr(info.value, "field", None) == field
    if field:
        assert field in info.value.message


def test_error_classes_carry_their_http_status() -> None:
    statuses = {}
    for _, raw, code, _field in MALFORMED_FRAMES:
        try:
            decode_frame(raw)
        except ProtocolError as exc:
            statuses[code] = (type(exc), exc.status)
    assert statuses["too_large"] == (PayloadTooLarge, 413)
    assert statuses["invalid_envelope"] == (BadEnvelope, 400)
    assert statuses["missing_field"] == (InvalidFrame, 400)


MALFORMED_BODIES: list[tuple[str, type[Any], object, str, str | None]] = [
    ("username too short", wire.DevLoginBody, {"username": "ab"}, "invalid_field", "username"),
    ("username with space", wire.DevLoginBody, {"username": "a b c"}, "invalid_field",
     "username"),
    ("username 21 chars", wire.DevLoginBody, {"username": "a" * 21}, "invalid_field",
     "username"),
    ("body is a list", wire.DevLoginBody, b"[]", "invalid_frame", None),
    ("body not json", wire.ReadBody, b"up_to=1", "invalid_json", None),
    ("session without state", wire.SessionBody, {"code": "c"}, "missing_field", "state"),
    ("settings int for bool", wire.SettingsPatchBody, {"read_receipts": 1}, "invalid_field",
     "read_receipts"),
    ("settings unknown", wire.SettingsPatchBody, {"theme": "dark"}, "unexpected_field",
     "theme"),
    ("jwk private d", wire.DevicePutBody,
     {"public_key": {**JWK, "d": b64(bytes(32))}, "signing_key": JWK, "name": "n"},
     "unexpected_field", "public_key.d"),
    ("jwk RSA", wire.DevicePutBody,
     {"public_key": {**JWK, "kty": "RSA"}, "signing_key": JWK, "name": "n"},
     "invalid_field", "public_key.kty"),
    ("jwk P-384", wire.DevicePutBody,
     {"public_key": JWK, "signing_key": {**JWK, "crv": "P-384"}, "name": "n"},
     "invalid_field", "signing_key.crv"),
    ("jwk short x", wire.DevicePutBody,
     {"public_key": {**JWK, "x": b64(bytes(31))}, "signing_key": JWK, "name": "n"},
     "invalid_field", "public_key.x"),
    ("device name too long", wire.DevicePutBody,
     {"public_key": JWK, "signing_key": JWK, "name": "n" * 101}, "too_large", "name"),
    ("conversation with neither", wire.CreateConversationBody, {}, "missing_field", "user_id"),
    ("conversation with both", wire.CreateConversationBody,
     {"user_id": "u", "reddit_username": "someone"}, "invalid_field", "reddit_username"),
    ("conversation bad reddit name", wire.CreateConversationBody,
     {"reddit_username": "no way!"}, "invalid_field", "reddit_username"),
    ("post message both", wire.PostMessageBody,
     {"conversation_id": "c", "client_msg_id": "m", "envelope": envelope(), "text": "t"},
     "invalid_field", "text"),
    ("read up_to null", wire.ReadBody, {"up_to": None}, "invalid_field", "up_to"),
    ("conversation participants of 3", wire.WireConversation,
     {"id": "c", "participants": ["a", "b", "c"], "kind": "platform", "upgrade_state": "none",
      "last_message_at": None, "unread": 0}, "invalid_field", "participants"),
    ("time without zone", wire.WireMe,
     {"id": "u", "username": "abc", "reddit_id": None, "created_at": "2026-11-24T21:09:13",
      "settings": {}}, "invalid_field", "created_at"),
    ("events page unknown frame", wire.EventsPage, {"events": [{"type": "nope"}], "next": 1},
     "unknown_type", "events[0].type"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "raw", "code", "field"),
    [case[1:] for case in MALFORMED_BODIES],
    ids=[case[0] for case in MALFORMED_BODIES],
)
def test_malformed_body_is_refused_with_its_code(
    cls: type[Any], raw: object, code: str, field: str | None
) -> None:
    with pytest.raises(ProtocolError) as info:
        CODEC.decode_body(raw, cls)
    assert info.value.code == code
    assert getattr(info.value, "field", None) == field


# --- fuzz: nothing but ProtocolError escapes -------------------------------------------------

CLIENT_FIELDS = sorted({a.name for cls in CLIENT_FRAMES for a in attrs.fields(cls)} | {"x", "type"})
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)


def refuses_only_with_protocol_errors(action: Any, *args: Any) -> None:
    with contextlib.suppress(ProtocolError):
        action(*args)


@given(anything)
def test_arbitrary_json_never_raises_anything_but_protocol_errors(value: object) -> None:
    refuses_only_with_protocol_errors(CODEC.structure_client_frame, value)
    refuses_only_with_protocol_errors(CODEC.structure_server_frame, value)
    refuses_only_with_protocol_errors(CODEC.decode_body, value, wire.PostMessageBody)
    encoded = json.dumps(value)
    refuses_only_with_protocol_errors(CODEC.decode_client_frame, encoded)


@given(
    st.sampled_from([cls.TYPE for cls in CLIENT_FRAMES]),
    st.dictionaries(st.sampled_from(CLIENT_FIELDS), anything, max_size=6),
)
def test_arbitrary_fields_under_a_valid_type_never_raise_anything_but_protocol_errors(
    frame_type: str, fields: dict[str, Any]
) -> None:
    refuses_only_with_protocol_errors(CODEC.structure_client_frame, {**fields, "type": frame_type})


@given(envelopes, st.data())
def test_mutated_envelope_never_raises_anything_but_protocol_errors(
    env: Envelope, data: st.DataObject
) -> None:
    obj = CODEC.unstructure(env)
    target = data.draw(st.sampled_from(sorted(obj)))
    obj[target] = data.draw(anything)
    refuses_only_with_protocol_errors(
        CODEC.structure_client_frame,
        {"type": "send", "conversation_id": "c", "client_msg_id": "m", "envelope": obj},
    )


def test_deeply_nested_json_is_refused_not_crashed() -> None:
    with pytest.raises(ProtocolError):
        CODEC.decode_client_frame(b"[" * 100_000 + b"]" * 100_000)


# --- envelope size ---------------------------------------------------------------------------


@given(envelopes)
def test_envelope_size_is_the_length_of_its_compact_json(env: Envelope) -> None:
    assert envelope_size(env) == len(codec.encode(env))


def test_envelope_of_exactly_64_kib_is_accepted_and_one_byte_more_is_not() -> None:
    base = send(envelope=envelope(ct=""))
    overhead = envelope_size(CODEC.structure(base["envelope"] | {"ct": CT}, Envelope)) - len(CT)
    room = MAX_ENVELOPE_BYTES - overhead
    room -= room % 4 == 1  # a base64url length of 4k+1 cannot exist
    fits = send(envelope=envelope(ct="A" * room))
    frame = CODEC.structure_client_frame(fits)
    assert isinstance(frame, wire.SendFrame)
    assert frame.envelope is not None
    assert envelope_size(frame.envelope) in (MAX_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES - 1)
    with pytest.raises(PayloadTooLarge):
        CODEC.structure_client_frame(send(envelope=envelope(ct="A" * (room + 3))))


# --- encoding details ------------------------------------------------------------------------


def test_times_are_rfc3339_utc_with_milliseconds_and_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    frame = wire.PresenceFrame("u", True, datetime(2026, 11, 24, 23, 9, 13, 123456, plus_two))
    assert CODEC.unstructure_server_frame(frame)["last_seen"] == "2026-11-24T21:09:13.123Z"


def test_time_with_offset_is_read_as_utc() -> None:
    obj = {"type": "presence", "user_id": "u", "online": None,
           "last_seen": "2026-11-24T23:09:13.5+02:00"}  # fmt: skip
    frame = CODEC.structure_server_frame(obj)
    assert isinstance(frame, wire.PresenceFrame)
    assert frame.last_seen == datetime(2026, 11, 24, 21, 9, 13, 500000, tzinfo=UTC)
    assert frame.last_seen.tzinfo is UTC


def test_encoded_frame_is_compact_utf8_with_the_type_tag() -> None:
    frame = wire.TypingNoticeFrame("c1", "ünïcode")
    raw = codec.encode_server_frame(frame)
    assert raw == '{"conversation_id":"c1","user_id":"ünïcode","type":"typing"}'.encode()


def test_optional_fields_are_omitted_and_required_nulls_are_kept() -> None:
    lookup = CODEC.unstructure(wire.UserLookup(None, "someone", False))
    assert lookup == {"id": None, "username": "someone", "on_platform": False}
    ack = CODEC.unstructure_client_frame(wire.AuthFrame("t"))
    assert ack == {"token": "t", "type": "auth"}


def test_error_details_are_flattened_into_the_error_body() -> None:
    body = wire.ErrorBody.from_error(DeviceMismatch(missing=["d2", "d1"], stale=["d9"]))
    assert CODEC.unstructure(body) == {
        "error": {
            "code": "device_mismatch",
            "message": "the envelope's keys do not match the current devices",
            "missing": ["d1", "d2"],
            "stale": ["d9"],
        }
    }


def test_error_frame_from_a_protocol_error_names_the_field() -> None:
    with pytest.raises(ProtocolError) as info:
        CODEC.structure_client_frame({"type": "ack"})
    frame = wire.ErrorFrame.from_error(info.value, ref="m1")
    assert CODEC.unstructure_server_frame(frame) == {
        "type": "error",
        "code": "missing_field",
        "message": "seq: missing field",
        "ref": "m1",
        "field": "seq",
    }


def test_jwk_public_members_from_web_crypto_are_accepted_and_dropped() -> None:
    exported = {**JWK, "ext": True, "key_ops": ["verify"], "alg": "ES256"}
    body = CODEC.decode_body({"public_key": exported, "signing_key": JWK, "name": ""},
                             wire.DevicePutBody)  # fmt: skip
    assert body.public_key.to_mapping() == JWK


def test_module_functions_use_the_default_codec() -> None:
    frame = codec.decode_client_frame('{"type":"ack","seq":5}')
    assert frame == wire.AckFrame(5)
    assert codec.structure_client_frame({"type": "ping"}) == wire.PingFrame()
    assert codec.unstructure(wire.AckFrame(5)) == {"seq": 5, "type": "ack"}
    assert codec.decode_body(b'{"up_to":"m"}', wire.ReadBody) == wire.ReadBody("m")
    assert codec.unstructure_server_frame(wire.PongFrame()) == {"type": "pong"}


def test_codec_instances_are_independent_and_agree() -> None:
    assert Codec().structure_client_frame({"type": "ack", "seq": 1}) == wire.AckFrame(1)


# --- domain conversions ----------------------------------------------------------------------

ENV = Envelope(1, ENVELOPE_ALG, "dev-a", EPK, IV, CT, (WrappedKey("dev-a", IV, WK),), SIG)


def test_wire_message_from_domain_keeps_every_field() -> None:
    message = Message("m1", "c1", "u1", "cm1", Origin.PLATFORM, T0, envelope=ENV)
    wm = wire.WireMessage.from_domain(message, status=DeliveryStatus.PUSHED)
    assert CODEC.unstructure(wm) == {
        "id": "m1",
        "conversation_id": "c1",
        "sender_id": "u1",
        "client_msg_id": "cm1",
        "origin": "platform",
        "sent_at": "2026-11-24T21:09:13.123Z",
        "status": "pushed",
        "envelope": CODEC.unstructure(ENV),
    }


def test_conversation_user_and_device_from_domain() -> None:
    conv = Conversation("c1", ("u2", "u1"), ConversationKind.REDDIT, T0, UpgradeState.INVITED)
    page = wire.ConversationsPage.from_page(Page((ConversationView(conv, 3),), "next"))
    assert page.conversations[0] == wire.WireConversation(
        "c1", ("u1", "u2"), ConversationKind.REDDIT, UpgradeState.INVITED, None, 3
    )
    user = User("u1", "someone", T0, reddit_id="t2_x", settings=UserSettings(False, True))
    me = CODEC.unstructure(wire.WireMe.from_domain(user))
    assert me["settings"] == {"read_receipts": False, "presence_visible": True}
    assert wire.UserLookup.from_domain(None, username="ghost") == wire.UserLookup(
        None, "ghost", False
    )
    device = Device("u1", "d1", JWK, JWK, "phone", T0)
    assert wire.WireDevice.from_domain(device).public_key.to_mapping() == JWK


def test_settings_patch_changes_only_what_it_names() -> None:
    patch = CODEC.decode_body(b'{"presence_visible": false}', wire.SettingsPatchBody)
    assert patch.apply(UserSettings(True, True)) == UserSettings(True, False)


def test_stream_events_become_their_server_frames() -> None:
    message = Message("m1", "c1", "u1", "cm1", Origin.REDDIT, T0, text="hello")
    event = StreamEvent("u2", 7, EventKind.MESSAGE, T0, message=message)
    frame = CODEC.frame_from_event(event, status=DeliveryStatus.PUSHED)
    wire_message = wire.WireMessage.from_domain(message, status=DeliveryStatus.PUSHED)
    assert frame == wire.MessageFrame(7, wire_message)
    receipt = wire.ReceiptFrame(8, "m1", "u2", wire.ReceiptStatus.READ)
    stored = StreamEvent("u1", 8, EventKind.RECEIPT, T0, payload=CODEC.event_payload(receipt))
    assert CODEC.frame_from_event(stored) == receipt
    payload = {"conversation_id": "c1", "upgrade_state": "upgraded"}
    upgrade = StreamEvent("u1", 9, EventKind.UPGRADE, T0, payload=payload)
    assert CODEC.frame_from_event(upgrade) == wire.UpgradeFrame(9, "c1", UpgradeState.UPGRADED)
    broken = StreamEvent("u1", 10, EventKind.RECEIPT, T0, payload={"message_id": 1})
    with pytest.raises(InvalidFrame):
        CODEC.frame_from_event(broken)


# --- query strings ---------------------------------------------------------------------------


def test_page_query_defaults_and_limits() -> None:
    assert codec.decode_page_query({}) == wire.PageQuery(None, 50)
    assert codec.decode_page_query({"before": "cur", "limit": "100"}) == wire.PageQuery("cur", 100)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "1.5", "ten", "", "²", "9" * 30])
def test_page_query_refuses_a_limit_outside_1_to_100(limit: str) -> None:
    with pytest.raises(InvalidFrame) as info:
        codec.decode_page_query({"limit": limit})
    assert (info.value.code, info.value.field) == ("invalid_field", "limit")


def test_events_query_bounds_the_long_poll() -> None:
    assert codec.decode_events_query({"since": "12", "timeout": "30"}) == wire.EventsQuery(12, 30)
    with pytest.raises(InvalidFrame):
        codec.decode_events_query({"timeout": "31"})
    with pytest.raises(InvalidFrame):
        codec.decode_events_query({"since": "-3"})
