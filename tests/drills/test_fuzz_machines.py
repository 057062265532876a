"""Hostile input for the core: arbitrary SEQUENCES of inputs with arbitrary field values
(any ints, unknown ids, out-of-range indexes, odd strings) through every state machine,
and arbitrary JSON frame sequences through the codec into the session machine.

Only typed errors (``OmniNudgeError``) may come out, and a refused input must leave the
machine able to go on. tests/core covers valid sequences (RuleBasedStateMachine), every
state x input pair, and single arbitrary JSON values; this adds the long hostile runs.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core import codec, delivery, migration, session, slideshow
from omninudge_core.errors import OmniNudgeError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
IDS = ["u1", "u2", "u3", "c1", "m1", "m2", "d1", "d2", "t4_1", ""]

instants = st.integers(-(10**6), 10**7).map(lambda ms: NOW + timedelta(milliseconds=ms))
texts = st.sampled_from(IDS) | st.text(max_size=8)
numbers = st.integers(-3, 300) | st.integers()


def _for_type(hint: Any) -> st.SearchStrategy[Any]:
    """A hostile strategy for a field of type ``hint`` (valid type, any value)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_for_type(arg) for arg in args))
    if hint is type(None):
        return st.none()
    if hint is str:
        return texts
    if hint is bool:
        return st.booleans()
    if hint is int:
        return numbers
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e9)
    if hint is datetime:
        return instants
    if hint is timedelta:
        return st.integers(0, 10**5).map(lambda s: timedelta(seconds=s))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_for_type(args[0]), max_size=4).map(tuple)
        return st.tuples(*(_for_type(arg) for arg in args))
    if origin in (Mapping, dict, typing.Mapping):
        return st.dictionaries(_for_type(args[0]), _for_type(args[1]), max_size=4)
    if origin in (list,):
        return st.lists(_for_type(args[0]), max_size=4)
    if attrs.has(hint):
        return arbitrary(hint)
    return st.from_type(hint)


def arbitrary(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Any instance of the attrs class ``cls`` its type hints allow."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: _for_type(hints[f.name]) for f in attrs.fields(cls) if f.init}
    return st.builds(cls, **fields)


def inputs_of(union: Any) -> st.SearchStrategy[Any]:
    return st.one_of(*(arbitrary(cls) for cls in typing.get_args(union)))


def run_hostile(
    state: Any, handle: Callable[[Any, Any, datetime], Any], events: list[tuple[Any, datetime]]
) -> int:
    """Feed every event; refused ones (typed errors) leave ``state`` as it was.
    Returns how many were accepted. Any other exception fails the test."""
    accepted = 0
    for event, now in events:
        try:
            state = handle(state, event, now).state
        except OmniNudgeError:
            continue
        accepted += 1
    return accepted


def timed(events: st.SearchStrategy[Any]) -> st.SearchStrategy[list[tuple[Any, datetime]]]:
    return st.lists(st.tuples(events, instants), max_size=40)


@given(events=timed(inputs_of(session.SessionInput)))
def test_any_session_input_sequence_raises_only_typed_errors(events: list[Any]) -> None:
    state = session.handle(session.New(session.SessionLimits()), session.Connected(), NOW).state
    run_hostile(state, session.handle, events)


@given(events=timed(inputs_of(delivery.DeliveryInput)), reddit_only=st.booleans())
def test_any_delivery_input_sequence_raises_only_typed_errors(
    events: list[Any], reddit_only: bool
) -> None:
    start = delivery.accept(
        message_id="m1",
        conversation_id="c1",
        sender_id="u1",
        recipient_id="u2",
        device_ids=[] if reddit_only else ["d1", "d2"],
        reddit_only=reddit_only,
        now=NOW,
    )
    run_hostile(start.state, delivery.handle, events)


@given(events=timed(inputs_of(slideshow.SlideshowInput)))
def test_any_slideshow_input_sequence_raises_only_typed_errors(events: list[Any]) -> None:
    run_hostile(slideshow.Slideshow.idle("c1", ("u1", "u2")), slideshow.handle, events)


@given(events=timed(inputs_of(migration.MigrationInput)))
def test_any_migration_input_sequence_raises_only_typed_errors(events: list[Any]) -> None:
    context = migration.MigrationContext("c1", "u1", "alice_1", "bob_2")
    run_hostile(migration.RedditOnly(context), migration.handle, events)


json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
frame_types = st.sampled_from(
    ["auth", "ack", "send", "typing", "read", "ping", "slideshow_start", "slideshow_nav",
     "slideshow_stop", "hello", "message", "", "AUTH"]
)  # fmt: skip
frame_like = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    frame_types,
    st.dictionaries(st.sampled_from(["seq", "token", "conversation_id", "client_msg_id",
                                     "envelope", "up_to", "resume_from", "action", "index",
                                     "base_version", "media_ids", "text"]),
                    json_values, max_size=5),
)  # fmt: skip
raw_frames = (
    (frame_like | json_values).map(lambda v: json.dumps(v))
    | st.binary(max_size=64)
    | st.text(max_size=64)
)


@given(frames=st.lists(st.tuples(raw_frames, instants), max_size=40))
def test_arbitrary_frame_sequences_through_the_codec_raise_only_typed_errors(
    frames: list[tuple[str | bytes, datetime]],
) -> None:
    """What ws_connection does with every client frame: decode, then feed the session."""
    state = session.handle(session.New(session.SessionLimits()), session.Connected(), NOW).state
    for data, now in frames:
        try:
            frame = codec.decode_client_frame(data)
            decision = session.handle(state, session.FrameReceived(frame.TYPE), now)
        except OmniNudgeError:
            continue
        state = decision.state
