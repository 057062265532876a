"""The connection session: one client connection (WebSocket, or a long-poll loop).

Theory of operation (API.md "WebSocket /ws")
-------------------------------------------
The shell accepts a socket and feeds ``Connected``. The session is then
``AwaitingAuth``: the first client frame must be ``auth`` within 10 s; any other
frame is answered with an ``unauthenticated`` error. The shell validates the token
(JWT, revocation) itself and feeds ``AuthSucceeded(user_id, last_seq, resume_from)``
or ``AuthFailed``. When the deadline passes first, the session closes with 4401.

``Open`` streams the user's durable events. The core decides *which* seqs to send,
the shell loads and sends them: ``PushRange(after_seq, up_to_seq)`` means "send
every event with ``after_seq < seq <= up_to_seq``, in order". Pushes start right
after ``resume_from`` and are contiguous: the session never skips a seq and never
sends one twice. At most ``max_in_flight`` pushes may be unacknowledged; when the
window is full the session stops asking for more until the client acks (flow
control). ``EventsAvailable`` (a fan-out notice or the shell's own append) raises the
highest seq known to exist. Acks only move forward: a duplicate or lower ack is a
no-op, an ack above what was pushed is an error frame.

The shell pings every 30 s (WebSocket ping control frame) and the session closes
with 4408 when two pings in a row go unanswered. Typing notices are forwarded at
most once per 3 s per conversation. Every client frame passes a token bucket first:
the first frame over budget is refused with a ``rate_limited`` error frame, a
second one in a row closes the connection with 1008.

``Closed`` is terminal. Inputs that can race with a close (a fan-out notice, a
timer, a late pong, the socket's own close, a token check that finished late, a
second close request) are absorbed as no-ops; a client frame there is a shell bug
and raises ``IllegalTransition``.

Invariants (checked by ``tests/core/test_session.py``)
------------------------------------------------------
- pushed seqs are exactly ``resume_from + 1 .. pushed_seq``, each once;
- ``acked_seq <= pushed_seq <= available_seq``;
- ``in_flight == pushed_seq - acked_seq <= max_in_flight``, and the window is
  always used: ``pushed_seq == min(available_seq, acked_seq + max_in_flight)``;
- ``Closed`` never changes;
- a conversation's typing is forwarded at most once per window.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar, overload

import attrs

from omninudge_core.decision import Decision, TransitionRow
from omninudge_core.errors import IllegalTransition

__all__ = [
    "CLOSE_HEARTBEAT_TIMEOUT",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_UNAUTHENTICATED",
    "TRANSITIONS",
    "AckReceived",
    "AuthFailed",
    "AuthSucceeded",
    "AwaitingAuth",
    "Close",
    "CloseRequested",
    "Closed",
    "Connected",
    "Disconnected",
    "EventsAvailable",
    "ForwardTyping",
    "FrameBudget",
    "FrameReceived",
    "New",
    "Open",
    "PongReceived",
    "ProcessFrame",
    "PushRange",
    "RecordAck",
    "SendError",
    "SendHello",
    "SendPing",
    "SessionEffect",
    "SessionInput",
    "SessionLimits",
    "SessionState",
    "Tick",
    "Transition",
    "TransitionRow",
    "TypingRequested",
    "WakeAt",
    "describe_transitions",
    "handle",
    "next_deadline",
]

MACHINE = "session"

# WebSocket close codes (RFC 6455 §7.4; 4xxx mirror HTTP statuses, as errors.py does).
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
CLOSE_UNAUTHENTICATED = 4401
CLOSE_HEARTBEAT_TIMEOUT = 4408


@attrs.frozen
class SessionLimits:
    """Tunables; the defaults are the API.md contract."""

    auth_timeout: timedelta = timedelta(seconds=10)
    ping_interval: timedelta = timedelta(seconds=30)
    max_missed_pongs: int = 2
    max_in_flight: int = 256
    typing_window: timedelta = timedelta(seconds=3)
    frames_per_second: float = 10.0
    frame_burst: float = 30.0


@attrs.frozen
class FrameBudget:
    """Token bucket for client frames. ``strikes`` counts refused frames in a row."""

    tokens: float
    updated_at: datetime
    strikes: int = 0

    @classmethod
    def full(cls, limits: SessionLimits, now: datetime) -> FrameBudget:
        return cls(tokens=limits.frame_burst, updated_at=now)

    def take(self, limits: SessionLimits, now: datetime) -> FrameBudget:
        """Refill for the time elapsed, then take one token (``strikes`` grows when
        there was none)."""
        elapsed = max(0.0, (now - self.updated_at).total_seconds())
        tokens = min(limits.frame_burst, self.tokens + elapsed * limits.frames_per_second)
        if tokens >= 1.0:
            return FrameBudget(tokens=tokens - 1.0, updated_at=now, strikes=0)
        return FrameBudget(tokens=tokens, updated_at=now, strikes=self.strikes + 1)


# --- states ------------------------------------------------------------------------------


@attrs.frozen
class New:
    """Created by the shell; the socket is not accepted yet."""

    limits: SessionLimits = SessionLimits()


@attrs.frozen
class AwaitingAuth:
    limits: SessionLimits
    auth_deadline: datetime
    budget: FrameBudget


@attrs.frozen
class Open:
    """Authenticated and streaming. ``typing`` holds (conversation_id, last forwarded)
    pairs still inside the debounce window."""

    limits: SessionLimits
    user_id: str
    resume_from: int
    acked_seq: int
    pushed_seq: int
    available_seq: int
    next_ping_at: datetime
    budget: FrameBudget
    awaiting_pong: bool = False
    missed_pongs: int = 0
    typing: tuple[tuple[str, datetime], ...] = ()

    @property
    def in_flight(self) -> int:
        return self.pushed_seq - self.acked_seq


@attrs.frozen
class Closed:
    code: int
    reason: str = ""


SessionState: TypeAlias = New | AwaitingAuth | Open | Closed
_Authenticating = TypeVar("_Authenticating", AwaitingAuth, Open)


# --- inputs ------------------------------------------------------------------------------


@attrs.frozen
class Connected:
    """The shell accepted the socket."""


@attrs.frozen
class FrameReceived:
    """A decoded client frame of ``frame_type`` arrived (fed before acting on it)."""

    frame_type: str


@attrs.frozen
class AuthSucceeded:
    """The shell validated the token. ``last_seq`` is the user's stream head;
    ``resume_from`` is the client's last acked seq (None: only new events)."""

    user_id: str
    last_seq: int
    resume_from: int | None = None


@attrs.frozen
class AuthFailed:
    reason: str


@attrs.frozen
class EventsAvailable:
    """Events up to ``up_to_seq`` exist in the user's stream (committed)."""

    up_to_seq: int


@attrs.frozen
class AckReceived:
    seq: int


@attrs.frozen
class PongReceived:
    pass


@attrs.frozen
class TypingRequested:
    conversation_id: str


@attrs.frozen
class Tick:
    """The shell's timer fired (at or after ``next_deadline``)."""


@attrs.frozen
class CloseRequested:
    """The server closes the session (token revoked, shutdown)."""

    code: int = CLOSE_NORMAL
    reason: str = ""


@attrs.frozen
class Disconnected:
    """The peer or the network closed the socket."""

    code: int = CLOSE_NORMAL


SessionInput: TypeAlias = (
    Connected
    | FrameReceived
    | AuthSucceeded
    | AuthFailed
    | EventsAvailable
    | AckReceived
    | PongReceived
    | TypingRequested
    | Tick
    | CloseRequested
    | Disconnected
)


# --- effects -----------------------------------------------------------------------------


@attrs.frozen
class SendHello:
    """Send ``hello {user_id, resume_from}``."""

    user_id: str
    resume_from: int


@attrs.frozen
class PushRange:
    """Load the user's events with ``after_seq < seq <= up_to_seq`` and send them in
    order. They are counted as pushed from now on."""

    after_seq: int
    up_to_seq: int


@attrs.frozen
class RecordAck:
    """The client processed events ``after_seq < seq <= up_to_seq`` (e.g. mark the
    messages among them delivered to this device)."""

    user_id: str
    after_seq: int
    up_to_seq: int


@attrs.frozen
class ProcessFrame:
    """The frame passed auth and flood checks: decode and act on it."""

    frame_type: str


@attrs.frozen
class SendPing:
    """Send a WebSocket ping; feed ``PongReceived`` when its pong arrives."""


@attrs.frozen
class ForwardTyping:
    conversation_id: str


@attrs.frozen
class SendError:
    """Send ``error {code, message}``; the connection stays open."""

    code: str
    message: str


@attrs.frozen
class Close:
    code: int
    reason: str


@attrs.frozen
class WakeAt:
    """Feed ``Tick`` at (or after) ``deadline``; replaces any earlier timer."""

    deadline: datetime


SessionEffect: TypeAlias = (
    SendHello
    | PushRange
    | RecordAck
    | ProcessFrame
    | SendPing
    | ForwardTyping
    | SendError
    | Close
    | WakeAt
)

SessionDecision: TypeAlias = Decision[SessionState, SessionEffect]


# --- transition handlers -----------------------------------------------------------------


def _stay(state: SessionState, *effects: SessionEffect) -> SessionDecision:
    return Decision(state, effects)


def _close(code: int, reason: str, *before: SessionEffect) -> SessionDecision:
    return Decision(Closed(code, reason), (*before, Close(code, reason)))


def _connected(state: New, event: Connected, now: datetime) -> SessionDecision:
    deadline = now + state.limits.auth_timeout
    new = AwaitingAuth(state.limits, deadline, FrameBudget.full(state.limits, now))
    return Decision(new, (WakeAt(deadline),))


def _admit(state: _Authenticating, now: datetime) -> tuple[_Authenticating, SessionDecision | None]:
    """Charge the frame to the budget; return the refusal when it is over budget."""
    budget = state.budget.take(state.limits, now)
    if budget.strikes > 1:
        return state, _close(CLOSE_POLICY_VIOLATION, "too many frames")
    new = _charged(state, budget)
    if budget.strikes == 1:
        return new, _stay(new, SendError("rate_limited", "too many frames; slow down"))
    return new, None


@overload
def _charged(state: AwaitingAuth, budget: FrameBudget) -> AwaitingAuth: ...
@overload
def _charged(state: Open, budget: FrameBudget) -> Open: ...
def _charged(state: AwaitingAuth | Open, budget: FrameBudget) -> AwaitingAuth | Open:
    if isinstance(state, Open):  # every client frame of an open session comes here
        return _open_with(state, state.acked_seq, state.pushed_seq, state.available_seq, budget)
    return attrs.evolve(state, budget=budget)


def _frame_before_auth(state: AwaitingAuth, event: FrameReceived, now: datetime) -> SessionDecision:
    new, refused = _admit(state, now)
    if refused is not None:
        return refused
    if event.frame_type != "auth":
        return _stay(new, SendError("unauthenticated", "the first frame must be auth"))
    return _stay(new, ProcessFrame(event.frame_type))


def _authenticated(state: AwaitingAuth, event: AuthSucceeded, now: datetime) -> SessionDecision:
    resume_from = event.last_seq if event.resume_from is None else event.resume_from
    if not 0 <= resume_from <= event.last_seq:
        # The client claims a position the stream does not have (API.md resume).
        return _stay(
            state,
            SendError(
                "invalid_resume",
                f"resume_from must be between 0 and {event.last_seq}",
            ),
        )
    opened = Open(
        limits=state.limits,
        user_id=event.user_id,
        resume_from=resume_from,
        acked_seq=resume_from,
        pushed_seq=resume_from,
        available_seq=event.last_seq,
        next_ping_at=now + state.limits.ping_interval,
        budget=state.budget,
    )
    opened, push = _fill_window(opened)
    return Decision(
        opened, (SendHello(event.user_id, resume_from), *push, WakeAt(opened.next_ping_at))
    )


def _auth_failed(state: AwaitingAuth, event: AuthFailed, now: datetime) -> SessionDecision:
    return _close(CLOSE_UNAUTHENTICATED, event.reason, SendError("unauthenticated", event.reason))


def _ignore(state: SessionState, event: object, now: datetime) -> SessionDecision:
    return _stay(state)


def _tick_before_auth(state: AwaitingAuth, event: Tick, now: datetime) -> SessionDecision:
    if now < state.auth_deadline:
        return _stay(state)
    return _close(CLOSE_UNAUTHENTICATED, "authentication timeout")


def _close_requested(
    state: AwaitingAuth | Open, event: CloseRequested, now: datetime
) -> SessionDecision:
    return _close(event.code, event.reason)


def _disconnected(
    state: AwaitingAuth | Open, event: Disconnected, now: datetime
) -> SessionDecision:
    # The socket is already gone: nothing to send.
    return Decision(Closed(event.code, "disconnected"))


def _fill_window(state: Open) -> tuple[Open, tuple[SessionEffect, ...]]:
    """Push as far as both the stream and the in-flight window allow."""
    return _moved(state, state.acked_seq, state.available_seq)


def _moved(
    state: Open, acked_seq: int, available_seq: int
) -> tuple[Open, tuple[SessionEffect, ...]]:
    """``state`` with these stream positions, pushing as far as the window allows:
    ``_fill_window(evolve(state, acked_seq=..., available_seq=...))`` with one new
    state instead of two (the hot inputs, acks and new events, come through here)."""
    target = min(available_seq, acked_seq + state.limits.max_in_flight)
    if target <= state.pushed_seq:
        if acked_seq == state.acked_seq and available_seq == state.available_seq:
            return state, ()
        return _open_with(state, acked_seq, state.pushed_seq, available_seq, state.budget), ()
    new = _open_with(state, acked_seq, target, available_seq, state.budget)
    return new, (PushRange(state.pushed_seq, target),)


def _open_with(
    state: Open, acked_seq: int, pushed_seq: int, available_seq: int, budget: FrameBudget
) -> Open:
    # attrs.evolve, spelled out: it looks every field up by name, which costs several
    # times this on the per-frame path.
    return Open(
        state.limits,
        state.user_id,
        state.resume_from,
        acked_seq,
        pushed_seq,
        available_seq,
        state.next_ping_at,
        budget,
        state.awaiting_pong,
        state.missed_pongs,
        state.typing,
    )


def _frame_open(state: Open, event: FrameReceived, now: datetime) -> SessionDecision:
    new, refused = _admit(state, now)
    if refused is not None:
        return refused
    if event.frame_type == "auth":
        return _stay(new, SendError("already_authenticated", "this session is authenticated"))
    return _stay(new, ProcessFrame(event.frame_type))


def _events_available(state: Open, event: EventsAvailable, now: datetime) -> SessionDecision:
    if event.up_to_seq <= state.available_seq:
        return _stay(state)
    new, push = _moved(state, state.acked_seq, event.up_to_seq)
    return Decision(new, push)


def _ack(state: Open, event: AckReceived, now: datetime) -> SessionDecision:
    if event.seq > state.pushed_seq:
        return _stay(
            state, SendError("invalid_ack", f"seq {event.seq} was not pushed on this connection")
        )
    if event.seq <= state.acked_seq:
        return _stay(state)  # acks never move backwards; a duplicate is harmless
    record = RecordAck(state.user_id, state.acked_seq, event.seq)
    new, push = _moved(state, event.seq, state.available_seq)
    return Decision(new, (record, *push))


def _pong(state: Open, event: PongReceived, now: datetime) -> SessionDecision:
    return _stay(attrs.evolve(state, awaiting_pong=False, missed_pongs=0))


def _typing(state: Open, event: TypingRequested, now: datetime) -> SessionDecision:
    window = state.limits.typing_window
    recent = tuple((cid, at) for cid, at in state.typing if now - at < window)
    if any(cid == event.conversation_id for cid, _ in recent):
        return _stay(attrs.evolve(state, typing=recent))
    new = attrs.evolve(state, typing=(*recent, (event.conversation_id, now)))
    return _stay(new, ForwardTyping(event.conversation_id))


def _tick_open(state: Open, event: Tick, now: datetime) -> SessionDecision:
    if now < state.next_ping_at:
        return _stay(state)
    missed = state.missed_pongs + 1 if state.awaiting_pong else 0
    if missed >= state.limits.max_missed_pongs:
        return _close(CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")
    next_ping_at = now + state.limits.ping_interval
    new = attrs.evolve(state, awaiting_pong=True, missed_pongs=missed, next_ping_at=next_ping_at)
    return _stay(new, SendPing(), WakeAt(next_ping_at))


# --- the table ---------------------------------------------------------------------------


@attrs.frozen
class Transition:
    """One row: the handler, the states it may lead to, and the rule in words."""

    handler: Callable[[Any, Any, datetime], SessionDecision]
    targets: tuple[type[SessionState], ...]
    rule: str


TRANSITIONS: dict[tuple[type[SessionState], type[SessionInput]], Transition] = {
    (New, Connected): Transition(
        _connected, (AwaitingAuth,), "start the 10 s auth deadline; WakeAt"
    ),
    (AwaitingAuth, FrameReceived): Transition(
        _frame_before_auth,
        (AwaitingAuth, Closed),
        "auth: ProcessFrame; other: SendError unauthenticated; over budget: SendError "
        "rate_limited, then Close 1008",
    ),
    (AwaitingAuth, AuthSucceeded): Transition(
        _authenticated,
        (Open, AwaitingAuth),
        "SendHello, PushRange from resume_from, WakeAt ping; resume_from > last_seq: "
        "SendError invalid_resume and keep waiting",
    ),
    (AwaitingAuth, AuthFailed): Transition(
        _auth_failed, (Closed,), "SendError unauthenticated, Close 4401"
    ),
    (AwaitingAuth, EventsAvailable): Transition(
        _ignore, (AwaitingAuth,), "ignored: AuthSucceeded carries last_seq"
    ),
    (AwaitingAuth, Tick): Transition(
        _tick_before_auth, (AwaitingAuth, Closed), "at the deadline: Close 4401"
    ),
    (AwaitingAuth, CloseRequested): Transition(_close_requested, (Closed,), "Close"),
    (AwaitingAuth, Disconnected): Transition(_disconnected, (Closed,), "no effect"),
    (Open, FrameReceived): Transition(
        _frame_open,
        (Open, Closed),
        "ProcessFrame; auth again: SendError already_authenticated; over budget: SendError "
        "rate_limited, then Close 1008",
    ),
    (Open, EventsAvailable): Transition(
        _events_available, (Open,), "raise available_seq; PushRange while the window allows"
    ),
    (Open, AckReceived): Transition(
        _ack,
        (Open,),
        "forward: RecordAck, PushRange into the freed window; lower/duplicate: no-op; "
        "above pushed: SendError invalid_ack",
    ),
    (Open, PongReceived): Transition(_pong, (Open,), "reset missed pongs"),
    (Open, TypingRequested): Transition(
        _typing, (Open,), "ForwardTyping at most once per 3 s per conversation"
    ),
    (Open, Tick): Transition(
        _tick_open,
        (Open, Closed),
        "at next_ping_at: SendPing, WakeAt; second unanswered ping: Close 4408",
    ),
    (Open, CloseRequested): Transition(_close_requested, (Closed,), "Close"),
    (Open, Disconnected): Transition(_disconnected, (Closed,), "no effect"),
    # Closed is terminal; these inputs race with the close and are absorbed.
    (Closed, EventsAvailable): Transition(_ignore, (Closed,), "ignored (raced the close)"),
    (Closed, PongReceived): Transition(_ignore, (Closed,), "ignored (raced the close)"),
    (Closed, Tick): Transition(_ignore, (Closed,), "ignored (raced the close)"),
    (Closed, Disconnected): Transition(_ignore, (Closed,), "ignored (raced the close)"),
    (Closed, AuthSucceeded): Transition(_ignore, (Closed,), "ignored (raced the close)"),
    (Closed, AuthFailed): Transition(_ignore, (Closed,), "ignored (raced the close)"),
    (Closed, CloseRequested): Transition(_ignore, (Closed,), "ignored (raced the close)"),
}


def handle(state: SessionState, event: SessionInput, now: datetime) -> SessionDecision:
    """Apply one input at ``now`` (aware UTC); return the new state and the effects,
    to be performed in order.

    Raises IllegalTransition (nothing changed) when (state, input) is not in TRANSITIONS.
    """
    transition = TRANSITIONS.get((type(state), type(event)))
    if transition is None:
        raise IllegalTransition(MACHINE, type(state).__name__, type(event).__name__)
    return transition.handler(state, event, now)


def next_deadline(state: SessionState) -> datetime | None:
    """When the shell must feed ``Tick`` next, or None when no timer runs."""
    if isinstance(state, AwaitingAuth):
        return state.auth_deadline
    if isinstance(state, Open):
        return state.next_ping_at
    return None


def describe_transitions() -> list[TransitionRow]:
    """The transition table as rows, for generated docs (so they cannot drift)."""
    return [
        TransitionRow(
            state.__name__,
            event.__name__,
            ", ".join(target.__name__ for target in transition.targets),
            transition.rule,
        )
        for (state, event), transition in TRANSITIONS.items()
    ]
