"""The hot inputs (acks, new events) build their next ``Open`` state by hand rather
than with ``attrs.evolve``: every other field must come through unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs

from omninudge_core import session as s

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = s.SessionLimits(max_in_flight=8)

# Every field set, none to its default, so a field the shortcut forgets shows up.
BUSY = {
    "limits": LIMITS,
    "user_id": "u1",
    "resume_from": 3,
    "acked_seq": 5,
    "pushed_seq": 13,
    "available_seq": 20,
    "next_ping_at": T0 + timedelta(seconds=17),
    "budget": s.FrameBudget(tokens=2.5, updated_at=T0, strikes=1),
    "awaiting_pong": True,
    "missed_pongs": 1,
    "typing": (("c1", T0),),
}


def test_the_sample_state_sets_every_field_of_open() -> None:
    """Adding a field to Open fails here first: then teach ``session._open_with`` it."""
    assert set(BUSY) == {field.name for field in attrs.fields(s.Open)}


def test_an_ack_changes_only_the_stream_positions() -> None:
    state = s.Open(**BUSY)  # type: ignore[arg-type]
    decision = s.handle(state, s.AckReceived(9), T0)
    assert decision.state == attrs.evolve(state, acked_seq=9, pushed_seq=17)
    assert decision.effects == (s.RecordAck("u1", 5, 9), s.PushRange(13, 17))


def test_new_events_change_only_the_stream_positions() -> None:
    state = s.Open(**{**BUSY, "acked_seq": 7, "available_seq": 13})  # type: ignore[arg-type]
    decision = s.handle(state, s.EventsAvailable(14), T0)
    assert decision.state == attrs.evolve(state, pushed_seq=14, available_seq=14)
    assert decision.effects == (s.PushRange(13, 14),)
    full = s.handle(decision.state, s.EventsAvailable(40), T0)  # up to the window's end
    assert full.state == attrs.evolve(decision.state, pushed_seq=15, available_seq=40)
    assert full.effects == (s.PushRange(14, 15),)
    more = s.handle(full.state, s.EventsAvailable(41), T0)  # the window is full
    assert more.state == attrs.evolve(full.state, available_seq=41)
    assert more.effects == ()


def test_a_client_frame_changes_only_the_budget() -> None:
    state = s.Open(**BUSY)  # type: ignore[arg-type]
    later = T0 + timedelta(seconds=1)
    decision = s.handle(state, s.FrameReceived("send"), later)
    assert decision.state == attrs.evolve(state, budget=state.budget.take(LIMITS, later))
    assert decision.effects == (s.ProcessFrame("send"),)
