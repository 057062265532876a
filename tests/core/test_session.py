"""The connection session machine (omninudge_core.session)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from omninudge_core import session as s
from omninudge_core.decision import Decision
from omninudge_core.errors import IllegalTransition

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machines" / "session.md"


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def connect(limits: s.SessionLimits | None = None) -> s.AwaitingAuth:
    decision = s.handle(s.New(limits or s.SessionLimits()), s.Connected(), T0)
    assert isinstance(decision.state, s.AwaitingAuth)
    return decision.state


def open_session(
    last_seq: int = 0, resume_from: int | None = None, limits: s.SessionLimits | None = None
) -> s.Open:
    decision = s.handle(connect(limits), s.AuthSucceeded("u1", last_seq, resume_from), T0)
    assert isinstance(decision.state, s.Open)
    return decision.state


def of_type(effects: tuple[object, ...], kind: type) -> list[object]:
    return [e for e in effects if isinstance(e, kind)]


# --- authentication ----------------------------------------------------------------------


def test_connected_starts_a_ten_second_auth_deadline() -> None:
    decision = s.handle(s.New(), s.Connected(), T0)
    assert isinstance(decision.state, s.AwaitingAuth)
    assert s.next_deadline(decision.state) == T0 + seconds(10)
    assert decision.effects == (s.WakeAt(T0 + seconds(10)),)


def test_tick_before_the_auth_deadline_changes_nothing() -> None:
    state = connect()
    assert s.handle(state, s.Tick(), T0 + seconds(9.9)) == Decision(state, ())


def test_missing_auth_after_ten_seconds_closes_with_4401() -> None:
    decision = s.handle(connect(), s.Tick(), T0 + seconds(10))
    assert decision.state == s.Closed(4401, "authentication timeout")
    assert decision.effects == (s.Close(4401, "authentication timeout"),)
    assert s.next_deadline(decision.state) is None


def test_a_frame_other_than_auth_before_auth_is_answered_with_an_error() -> None:
    decision = s.handle(connect(), s.FrameReceived("send"), T0)
    assert isinstance(decision.state, s.AwaitingAuth)
    assert decision.effects == (s.SendError("unauthenticated", "the first frame must be auth"),)


def test_the_auth_frame_is_let_through_before_auth() -> None:
    decision = s.handle(connect(), s.FrameReceived("auth"), T0)
    assert decision.effects == (s.ProcessFrame("auth"),)


def test_failed_auth_sends_an_error_and_closes_with_4401() -> None:
    decision = s.handle(connect(), s.AuthFailed("token revoked"), T0)
    assert decision.state == s.Closed(4401, "token revoked")
    assert decision.effects == (
        s.SendError("unauthenticated", "token revoked"),
        s.Close(4401, "token revoked"),
    )


def test_resume_from_beyond_the_stream_head_is_an_error_and_auth_may_be_retried() -> None:
    state = connect()
    decision = s.handle(state, s.AuthSucceeded("u1", last_seq=5, resume_from=6), T0)
    assert decision.state == state
    [error] = decision.effects
    assert isinstance(error, s.SendError)
    assert error.code == "invalid_resume"
    retried = s.handle(state, s.AuthSucceeded("u1", last_seq=5, resume_from=5), T0)
    assert isinstance(retried.state, s.Open)


def test_negative_resume_from_is_an_error() -> None:
    decision = s.handle(connect(), s.AuthSucceeded("u1", last_seq=5, resume_from=-1), T0)
    assert isinstance(decision.state, s.AwaitingAuth)
    assert of_type(decision.effects, s.SendError)


def test_auth_without_resume_from_streams_only_new_events() -> None:
    decision = s.handle(connect(), s.AuthSucceeded("u1", last_seq=7), T0)
    assert isinstance(decision.state, s.Open)
    assert decision.state.pushed_seq == decision.state.acked_seq == 7
    assert decision.effects == (s.SendHello("u1", 7), s.WakeAt(T0 + seconds(30)))


def test_resume_pushes_everything_after_resume_from_then_arms_the_ping() -> None:
    decision = s.handle(connect(), s.AuthSucceeded("u1", last_seq=10, resume_from=4), T0)
    assert decision.effects == (
        s.SendHello("u1", 4),
        s.PushRange(4, 10),
        s.WakeAt(T0 + seconds(30)),
    )


def test_a_second_auth_frame_is_refused() -> None:
    decision = s.handle(open_session(), s.FrameReceived("auth"), T0)
    assert isinstance(decision.state, s.Open)
    assert [e.code for e in decision.effects if isinstance(e, s.SendError)] == [
        "already_authenticated"
    ]


# --- streaming and flow control ----------------------------------------------------------


def test_a_backlog_is_pushed_at_most_max_in_flight_at_a_time() -> None:
    decision = s.handle(connect(), s.AuthSucceeded("u1", last_seq=1000, resume_from=0), T0)
    state = decision.state
    assert isinstance(state, s.Open)
    assert of_type(decision.effects, s.PushRange) == [s.PushRange(0, 256)]
    assert state.in_flight == 256
    more = s.handle(state, s.EventsAvailable(1001), T0)
    assert of_type(more.effects, s.PushRange) == []  # the window is full


def test_an_ack_frees_the_window_and_the_next_range_follows_contiguously() -> None:
    state = open_session(last_seq=1000, resume_from=0)
    decision = s.handle(state, s.AckReceived(100), T0)
    assert decision.effects == (s.RecordAck("u1", 0, 100), s.PushRange(256, 356))
    assert isinstance(decision.state, s.Open)
    assert decision.state.in_flight == 256


def test_new_events_are_pushed_when_the_window_has_room() -> None:
    state = open_session(last_seq=3)
    decision = s.handle(state, s.EventsAvailable(5), T0)
    assert decision.effects == (s.PushRange(3, 5),)
    stale = s.handle(decision.state, s.EventsAvailable(4), T0)
    assert stale.effects == ()
    assert stale.state == decision.state


def test_an_ack_above_what_was_pushed_is_an_error_and_changes_nothing() -> None:
    state = open_session(last_seq=5, resume_from=2)
    decision = s.handle(state, s.AckReceived(6), T0)
    assert decision.state == state
    assert [e.code for e in decision.effects if isinstance(e, s.SendError)] == ["invalid_ack"]


@pytest.mark.parametrize("seq", [0, 3, 4])
def test_a_lower_or_duplicate_ack_is_a_no_op(seq: int) -> None:
    state = s.handle(open_session(last_seq=8, resume_from=2), s.AckReceived(4), T0).state
    assert s.handle(state, s.AckReceived(seq), T0) == Decision(state, ())


# --- heartbeat ---------------------------------------------------------------------------


def test_the_server_pings_every_thirty_seconds() -> None:
    state = open_session()
    assert s.next_deadline(state) == T0 + seconds(30)
    assert s.handle(state, s.Tick(), T0 + seconds(29)).effects == ()
    decision = s.handle(state, s.Tick(), T0 + seconds(30))
    assert decision.effects == (s.SendPing(), s.WakeAt(T0 + seconds(60)))


def test_two_missed_pongs_close_the_connection_with_4408() -> None:
    state: s.SessionState = open_session()
    state = s.handle(state, s.Tick(), T0 + seconds(30)).state  # ping 1
    state = s.handle(state, s.Tick(), T0 + seconds(60)).state  # ping 1 missed, ping 2
    assert isinstance(state, s.Open)
    decision = s.handle(state, s.Tick(), T0 + seconds(90))  # ping 2 missed
    assert decision.state == s.Closed(4408, "heartbeat timeout")
    assert decision.effects == (s.Close(4408, "heartbeat timeout"),)


def test_a_pong_resets_the_missed_count() -> None:
    state: s.SessionState = open_session()
    for at in (30, 60):
        state = s.handle(state, s.Tick(), T0 + seconds(at)).state
    state = s.handle(state, s.PongReceived(), T0 + seconds(61)).state
    decision = s.handle(state, s.Tick(), T0 + seconds(90))
    assert isinstance(decision.state, s.Open)
    assert of_type(decision.effects, s.SendPing)


# --- typing and flood control ------------------------------------------------------------


def test_typing_is_forwarded_at_most_once_per_three_seconds_per_conversation() -> None:
    state: s.SessionState = open_session()
    forwarded = []
    for at, conversation in [(0, "a"), (1, "a"), (1, "b"), (2.9, "a"), (3, "a"), (4, "b")]:
        decision = s.handle(state, s.TypingRequested(conversation), T0 + seconds(at))
        state = decision.state
        forwarded += [(at, e.conversation_id) for e in of_type(decision.effects, s.ForwardTyping)]
    assert forwarded == [(0, "a"), (1, "b"), (3, "a"), (4, "b")]


def test_a_frame_flood_is_warned_once_then_closed_with_1008() -> None:
    limits = s.SessionLimits(frames_per_second=1.0, frame_burst=3.0)
    state: s.SessionState = open_session(limits=limits)
    effects = []
    for _ in range(5):
        decision = s.handle(state, s.FrameReceived("send"), T0)
        state = decision.state
        effects.append(decision.effects)
    assert effects[:3] == [(s.ProcessFrame("send"),)] * 3
    assert effects[3] == (s.SendError("rate_limited", "too many frames; slow down"),)
    assert effects[4] == (s.Close(1008, "too many frames"),)
    assert state == s.Closed(1008, "too many frames")


def test_a_client_that_slows_down_after_the_warning_is_served_again() -> None:
    limits = s.SessionLimits(frames_per_second=1.0, frame_burst=1.0)
    state: s.SessionState = open_session(limits=limits)
    state = s.handle(state, s.FrameReceived("send"), T0).state
    warned = s.handle(state, s.FrameReceived("send"), T0)
    assert of_type(warned.effects, s.SendError)
    later = s.handle(warned.state, s.FrameReceived("send"), T0 + seconds(1))
    assert later.effects == (s.ProcessFrame("send"),)
    again = s.handle(later.state, s.FrameReceived("send"), T0 + seconds(1))
    assert of_type(again.effects, s.SendError)  # a fresh warning, not a close


def test_flood_control_applies_before_auth_too() -> None:
    limits = s.SessionLimits(frames_per_second=1.0, frame_burst=1.0)
    state: s.SessionState = connect(limits)
    for _ in range(3):
        state = s.handle(state, s.FrameReceived("auth"), T0).state
    assert state == s.Closed(1008, "too many frames")


# --- closing -----------------------------------------------------------------------------


def test_a_server_close_request_closes_with_its_code() -> None:
    decision = s.handle(open_session(), s.CloseRequested(1001, "shutdown"), T0)
    assert decision.state == s.Closed(1001, "shutdown")
    assert decision.effects == (s.Close(1001, "shutdown"),)


def test_a_peer_disconnect_closes_without_sending_anything() -> None:
    decision = s.handle(open_session(), s.Disconnected(1006), T0)
    assert decision.state == s.Closed(1006, "disconnected")
    assert decision.effects == ()


@pytest.mark.parametrize(
    "event",
    [
        s.EventsAvailable(9),
        s.PongReceived(),
        s.Tick(),
        s.Disconnected(),
        s.AuthSucceeded("u1", 0),
        s.AuthFailed("x"),
        s.CloseRequested(),
    ],
)
def test_closed_absorbs_inputs_that_race_with_the_close(event: s.SessionInput) -> None:
    closed = s.Closed(1000, "bye")
    assert s.handle(closed, event, T0) == Decision(closed, ())


@pytest.mark.parametrize(
    "event", [s.FrameReceived("send"), s.AckReceived(1), s.TypingRequested("c"), s.Connected()]
)
def test_closed_rejects_client_input(event: s.SessionInput) -> None:
    with pytest.raises(IllegalTransition):
        s.handle(s.Closed(1000, "bye"), event, T0)


# --- the table ---------------------------------------------------------------------------

SAMPLE_STATES: list[s.SessionState] = [
    s.New(),
    connect(),
    open_session(last_seq=3, resume_from=1),
    s.Closed(1000, "bye"),
]
SAMPLE_INPUTS: list[s.SessionInput] = [
    s.Connected(),
    s.FrameReceived("ack"),
    s.AuthSucceeded("u1", 3, 1),
    s.AuthFailed("bad"),
    s.EventsAvailable(5),
    s.AckReceived(2),
    s.PongReceived(),
    s.TypingRequested("c"),
    s.Tick(),
    s.CloseRequested(),
    s.Disconnected(),
]


def test_the_samples_cover_every_state_and_input_type() -> None:
    assert {type(x) for x in SAMPLE_STATES} == {t for t, _ in s.TRANSITIONS}
    assert {type(x) for x in SAMPLE_INPUTS} == {i for _, i in s.TRANSITIONS}


@pytest.mark.parametrize(
    ("state", "event"),
    list(itertools.product(SAMPLE_STATES, SAMPLE_INPUTS)),
    ids=lambda x: type(x).__name__,
)
def test_every_state_and_input_pair_is_in_the_table_or_raises(
    state: s.SessionState, event: s.SessionInput
) -> None:
    """Illegal pairs raise IllegalTransition; legal ones land in a listed target state."""
    transition = s.TRANSITIONS.get((type(state), type(event)))
    if transition is None:
        with pytest.raises(IllegalTransition) as raised:
            s.handle(state, event, T0)
        assert raised.value.state == type(state).__name__
        return
    decision = s.handle(state, event, T0 + seconds(100))
    assert isinstance(decision.state, transition.targets)


def test_the_docs_list_every_transition_row() -> None:
    page = DOC.read_text(encoding="utf-8")
    missing = [row.markdown() for row in s.describe_transitions() if row.markdown() not in page]
    assert missing == []


# --- the stateful property test ----------------------------------------------------------


class SessionMachine(RuleBasedStateMachine):
    """Random interleavings of client frames, stream growth, acks, timers and closes."""

    LIMITS = s.SessionLimits(max_in_flight=8, frames_per_second=2.0, frame_burst=4.0)

    @initialize(head=st.integers(0, 30), resume_back=st.integers(0, 30) | st.none())
    def connect(self, head: int, resume_back: int | None) -> None:
        self.now = T0
        self.head = head  # events that exist in the user's stream
        self.state: s.SessionState = s.New(self.LIMITS)
        self.pushed: list[int] = []
        self.acked_ranges: list[tuple[int, int]] = []
        self.resume_from: int | None = None
        self.closed: s.Closed | None = None
        self.typing_forwarded: dict[str, list[datetime]] = {}
        self.apply(s.Connected())
        if resume_back is not None:  # most runs start authenticated, so they go deep
            self.apply(s.AuthSucceeded("u1", head, max(0, head - resume_back)))

    def apply(self, event: s.SessionInput) -> None:
        before = self.state
        if (type(before), type(event)) not in s.TRANSITIONS:
            with pytest.raises(IllegalTransition):
                s.handle(before, event, self.now)
            return
        decision = s.handle(before, event, self.now)
        self.state = decision.state
        if isinstance(before, s.AwaitingAuth) and isinstance(self.state, s.Open):
            self.resume_from = self.state.resume_from
        for effect in decision.effects:
            if isinstance(effect, s.PushRange):
                # Contiguous: each range starts where the last one ended.
                assert effect.after_seq == (self.pushed[-1] if self.pushed else self.resume_from)
                assert effect.up_to_seq > effect.after_seq
                self.pushed.extend(range(effect.after_seq + 1, effect.up_to_seq + 1))
            elif isinstance(effect, s.RecordAck):
                # Acked ranges are contiguous and move forward only.
                start = self.acked_ranges[-1][1] if self.acked_ranges else self.resume_from
                assert effect.after_seq == start < effect.up_to_seq
                self.acked_ranges.append((effect.after_seq, effect.up_to_seq))
            elif isinstance(effect, s.ForwardTyping):
                self.typing_forwarded.setdefault(effect.conversation_id, []).append(self.now)
        if isinstance(self.state, s.Closed) and self.closed is None:
            self.closed = self.state

    @rule(by=st.floats(0, 5) | st.floats(0, 40))
    def time_passes(self, by: float) -> None:
        self.now += seconds(by)

    @precondition(lambda self: not isinstance(self.state, s.Closed))
    @rule(jump=st.booleans())
    def timer_fires(self, jump: bool) -> None:
        deadline = s.next_deadline(self.state)
        if jump and deadline is not None:
            self.now = max(self.now, deadline)
        self.apply(s.Tick())

    @precondition(lambda self: not isinstance(self.state, s.Closed))
    @rule(frame_type=st.sampled_from(["auth", "ack", "send", "typing", "ping"]))
    def frame_arrives(self, frame_type: str) -> None:
        self.apply(s.FrameReceived(frame_type))

    @precondition(lambda self: isinstance(self.state, s.AwaitingAuth))
    @rule(resume_offset=st.integers(-3, 3) | st.none())
    def auth_succeeds(self, resume_offset: int | None) -> None:
        resume_from = None if resume_offset is None else max(0, self.head + resume_offset - 3)
        self.apply(s.AuthSucceeded("u1", self.head, resume_from))

    @precondition(lambda self: isinstance(self.state, s.AwaitingAuth))
    @rule()
    def auth_fails(self) -> None:
        self.apply(s.AuthFailed("bad token"))

    @precondition(lambda self: not isinstance(self.state, s.Closed))
    @rule(count=st.integers(1, 12), notify=st.booleans())
    def events_appended(self, count: int, notify: bool) -> None:
        self.head += count
        if notify:  # fan-out is best effort: a notice may be lost
            self.apply(s.EventsAvailable(self.head))

    @precondition(lambda self: not isinstance(self.state, s.Closed))
    @rule(back=st.integers(0, 10))
    def stale_notice(self, back: int) -> None:
        self.apply(s.EventsAvailable(max(0, self.head - back)))

    @precondition(lambda self: not isinstance(self.state, s.Closed))
    @rule(offset=st.integers(-2, 10))
    def client_acks(self, offset: int) -> None:
        base = self.state.acked_seq if isinstance(self.state, s.Open) else 0
        self.apply(s.AckReceived(base + offset))

    @precondition(lambda self: not isinstance(self.state, s.Closed))
    @rule()
    def pong_arrives(self) -> None:
        self.apply(s.PongReceived())

    @precondition(lambda self: not isinstance(self.state, s.Closed))
    @rule(conversation=st.sampled_from(["c1", "c2"]))
    def typing(self, conversation: str) -> None:
        self.apply(s.TypingRequested(conversation))

    @precondition(lambda self: not isinstance(self.state, s.Closed))
    @rule(disconnect=st.booleans())
    def goes_away(self, disconnect: bool) -> None:
        self.apply(s.Disconnected(1006) if disconnect else s.CloseRequested(1001, "shutdown"))

    @precondition(lambda self: isinstance(self.state, s.Closed))
    @rule(
        event=st.sampled_from(
            [s.EventsAvailable(99), s.PongReceived(), s.Tick(), s.Disconnected(), s.AckReceived(1)]
        )
    )
    def input_after_close(self, event: s.SessionInput) -> None:
        self.apply(event)

    @invariant()
    def pushes_are_contiguous_from_resume_from_and_never_repeat(self) -> None:
        if self.resume_from is not None:
            expected_end = self.resume_from + len(self.pushed)
            assert self.pushed == list(range(self.resume_from + 1, expected_end + 1))
        if isinstance(self.state, s.Open):
            assert self.pushed == list(range(self.state.resume_from + 1, self.state.pushed_seq + 1))

    @invariant()
    def acked_pushed_available_are_ordered_and_the_window_is_bounded_and_used(self) -> None:
        state = self.state
        if isinstance(state, s.Open):
            assert state.acked_seq <= state.pushed_seq <= state.available_seq <= self.head
            assert state.in_flight == state.pushed_seq - state.acked_seq
            assert 0 <= state.in_flight <= self.LIMITS.max_in_flight
            # Never stalls: everything the window allows has been asked for.
            assert state.pushed_seq == min(
                state.available_seq, state.acked_seq + self.LIMITS.max_in_flight
            )
            assert state.missed_pongs < self.LIMITS.max_missed_pongs

    @invariant()
    def closed_is_terminal(self) -> None:
        if self.closed is not None:
            assert self.state == self.closed
            assert s.next_deadline(self.state) is None

    @invariant()
    def typing_is_forwarded_at_most_once_per_window(self) -> None:
        for times in self.typing_forwarded.values():
            for earlier, later in itertools.pairwise(times):
                assert later - earlier >= self.LIMITS.typing_window


TestSessionMachine = SessionMachine.TestCase
