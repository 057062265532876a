"""The shared slideshow of one conversation: a Sans-I/O state machine.

Theory of operation
-------------------
Either participant of a conversation can start a slideshow of media owned by the two
of them; both then see the same slide. The server orders every command: the state
carries a ``version`` that goes up by exactly one on every accepted change, each
change is broadcast (``BroadcastSlideshow``, which the shell appends to both
participants' streams), and a ``Navigate`` carries the ``base_version`` it was made
from. A command based on an older version is refused with ``StaleCommand`` carrying
the current state, so the client re-syncs and the user retries if they still want
to. Clients apply broadcast states in version order (ignoring older ones) and so
converge on the server's state.

Phases: ``idle`` (never started) -> ``active`` -> ``ended``; ``idle`` or ``ended``
-> ``active`` again on a new start. A start while active is refused: stop first.

Choices (also in docs/state-machines/slideshow.md):

- ``next`` on the last slide wraps to the first, ``prev`` on the first wraps to the
  last. Every accepted command bumps the version, even one that leaves the index
  where it was (a one-slide show, ``pause`` when already paused).
- Autoplay advances one slide every ``autoplay_s`` seconds while not paused and
  *stops on the last slide* (no wrap), so an abandoned show stops producing events.
  Navigating back, or ``resume``, restarts it from the current slide.
- ``controller`` is who made the last accepted command; an autoplay step keeps it.
- Only the two participants may drive (``Forbidden``); ``start`` and ``navigate`` are
  refused with ``Blocked`` when either blocks the other (the shell passes ``blocked``
  in the command). ``stop`` is always allowed to a participant so a show can be
  ended after a block.
- Every media must be owned by a participant (``Forbidden``); 1 to 100 distinct media.

Invariants
----------
1. A refused command (stale, forbidden, invalid, illegal) never changes the state.
2. ``version`` increases by exactly one with each accepted change and each change is
   broadcast once.
3. While active, ``0 <= index < len(media_ids)``.
4. ``controller`` is always a participant (or None before the first start).
5. Two clients applying the broadcast states in version order converge.

Timers: ``next_deadline(state)`` is ``next_tick_at``; the shell feeds
``AutoplayTick`` when it is reached. A tick that comes early or after the show
stopped or was paused is ignored (no change, no effects).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType

import attrs

from omninudge_core.decision import Decision
from omninudge_core.errors import (
    Blocked,
    Forbidden,
    IllegalTransition,
    InvalidFrame,
    StaleCommand,
)
from omninudge_core.models import ConversationId, Instant, MediaId, UserId, pair_key

__all__ = [
    "AUTOPLAY_MAX_S",
    "AUTOPLAY_MIN_S",
    "MAX_MEDIA",
    "TRANSITIONS",
    "AutoplayTick",
    "BroadcastSlideshow",
    "NavAction",
    "Navigate",
    "Phase",
    "Slideshow",
    "SlideshowEffect",
    "SlideshowInput",
    "StartSlideshow",
    "StopSlideshow",
    "Transition",
    "WakeAt",
    "describe_transitions",
    "handle",
    "next_deadline",
]

MACHINE = "slideshow"
MAX_MEDIA = 100
AUTOPLAY_MIN_S = 1
AUTOPLAY_MAX_S = 3600


# --- states -----------------------------------------------------------------------------


class Phase(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"
    ENDED = "ended"


def _as_pair(participants: tuple[UserId, UserId]) -> tuple[UserId, UserId]:
    return pair_key(*participants)


@attrs.frozen
class Slideshow:
    """The slideshow of ``conversation_id``. Plain fields only, so the codec can
    (un)structure it and the broadcast state is exactly this object.

    ``next_tick_at`` is set only while autoplay has a next slide to go to.
    An ended show keeps its last media and index (what was on screen).
    """

    conversation_id: ConversationId
    participants: tuple[UserId, UserId] = attrs.field(converter=_as_pair)
    phase: Phase = Phase.IDLE
    version: int = 0
    media_ids: tuple[MediaId, ...] = ()
    index: int = 0
    autoplay_s: int | None = None
    paused: bool = False
    controller: UserId | None = None
    next_tick_at: Instant | None = None

    @classmethod
    def idle(
        cls, conversation_id: ConversationId, participants: tuple[UserId, UserId]
    ) -> Slideshow:
        """The state of a conversation that has never had a slideshow."""
        return cls(conversation_id=conversation_id, participants=participants)


# --- inputs -----------------------------------------------------------------------------


@attrs.frozen
class StartSlideshow:
    """Start a show of ``media_ids`` (command). ``media_owners`` maps each media id
    to its uploader, as looked up by the shell; ``blocked`` is whether either
    participant blocks the other."""

    by: UserId
    media_ids: tuple[MediaId, ...]
    media_owners: Mapping[MediaId, UserId]
    autoplay_s: int | None = None
    blocked: bool = False


class NavAction(enum.Enum):
    NEXT = "next"
    PREV = "prev"
    GOTO = "goto"
    PAUSE = "pause"
    RESUME = "resume"


@attrs.frozen
class Navigate:
    """Move or pause the show (command), based on ``base_version``. ``goto`` takes
    exactly one of ``index`` or ``media_id``; the other actions take neither."""

    by: UserId
    action: NavAction
    base_version: int
    index: int | None = None
    media_id: MediaId | None = None
    blocked: bool = False


@attrs.frozen
class StopSlideshow:
    """End the show (command)."""

    by: UserId
    blocked: bool = False


@attrs.frozen
class AutoplayTick:
    """The shell's timer for ``next_deadline`` fired."""


SlideshowInput = StartSlideshow | Navigate | StopSlideshow | AutoplayTick


# --- effects ----------------------------------------------------------------------------


@attrs.frozen
class BroadcastSlideshow:
    """Append a ``slideshow`` event with ``state`` to both participants' streams and
    push it."""

    conversation_id: ConversationId
    state: Slideshow


@attrs.frozen
class WakeAt:
    """Feed ``AutoplayTick`` at ``deadline`` (replaces any earlier wake-up)."""

    deadline: Instant


SlideshowEffect = BroadcastSlideshow | WakeAt


# --- the transition table ---------------------------------------------------------------


@attrs.frozen
class Transition:
    to: Phase
    effects: str


_CHANGE = "version+1; BroadcastSlideshow; WakeAt if autoplay has a next slide"
_IGNORED = "none (stale timer)"

TRANSITIONS: Mapping[tuple[Phase, type[SlideshowInput]], Transition] = MappingProxyType(
    {
        (Phase.IDLE, StartSlideshow): Transition(Phase.ACTIVE, _CHANGE),
        (Phase.IDLE, AutoplayTick): Transition(Phase.IDLE, _IGNORED),
        (Phase.ACTIVE, Navigate): Transition(Phase.ACTIVE, _CHANGE),
        (Phase.ACTIVE, AutoplayTick): Transition(
            Phase.ACTIVE, "if due: index+1, version+1; BroadcastSlideshow; WakeAt if not last"
        ),
        (Phase.ACTIVE, StopSlideshow): Transition(Phase.ENDED, "version+1; BroadcastSlideshow"),
        (Phase.ENDED, StartSlideshow): Transition(Phase.ACTIVE, _CHANGE),
        (Phase.ENDED, AutoplayTick): Transition(Phase.ENDED, _IGNORED),
    }
)


def describe_transitions() -> list[tuple[str, str, str, str]]:
    """The table as rows ``(phase, input, next phase, effects)`` for docs."""
    return [
        (phase.value, event.__name__, t.to.value, t.effects)
        for (phase, event), t in TRANSITIONS.items()
    ]


# --- entry points -----------------------------------------------------------------------


def handle(
    state: Slideshow, event: SlideshowInput, now: Instant
) -> Decision[Slideshow, SlideshowEffect]:
    """Apply one input; return the new state and the effects for the shell to perform.

    Raises (the state unchanged):
    Forbidden - ``by`` is not a participant, or a media is not owned by one;
    Blocked - start/navigate while either participant blocks the other;
    StaleCommand (with the current state) - ``event.base_version != state.version``;
    IllegalTransition - the input is not in ``TRANSITIONS`` for the current phase;
    InvalidFrame(code="invalid_field" | "missing_field" | "unexpected_field") - bad
    media list, autoplay period, index or media id.
    """
    match event:
        case StartSlideshow() | Navigate() | StopSlideshow():
            if event.by not in state.participants:
                raise Forbidden("only the conversation's participants may drive its slideshow")
            if event.blocked and not isinstance(event, StopSlideshow):
                raise Blocked("a block between the participants forbids the slideshow")
        case AutoplayTick():
            pass
    if isinstance(event, Navigate) and event.base_version != state.version:
        raise StaleCommand(
            f"based on version {event.base_version}, current is {state.version}",
            current=state,
            current_version=state.version,
        )
    transition = TRANSITIONS.get((state.phase, type(event)))
    if transition is None:
        raise IllegalTransition(MACHINE, state.phase.value, type(event).__name__)

    match event:
        case StartSlideshow():
            return _changed(_start(state, event), now)
        case Navigate():
            return _changed(_navigate(state, event), now)
        case StopSlideshow():
            stopped = attrs.evolve(state, phase=Phase.ENDED, controller=event.by, next_tick_at=None)
            return _changed(stopped, now)
        case AutoplayTick():
            if state.next_tick_at is None or now < state.next_tick_at:
                return Decision(state)
            return _changed(attrs.evolve(state, index=state.index + 1), now)


def next_deadline(state: Slideshow) -> Instant | None:
    """When the shell should feed ``AutoplayTick`` (None: no timer)."""
    return state.next_tick_at


# --- helpers ----------------------------------------------------------------------------


def _changed(proposed: Slideshow, now: Instant) -> Decision[Slideshow, SlideshowEffect]:
    """Bump the version, reschedule autoplay and broadcast: every accepted change ends here."""
    new = attrs.evolve(
        proposed, version=proposed.version + 1, next_tick_at=_tick_after(proposed, now)
    )
    effects: list[SlideshowEffect] = [BroadcastSlideshow(new.conversation_id, new)]
    if new.next_tick_at is not None:
        effects.append(WakeAt(new.next_tick_at))
    return Decision(new, tuple(effects))


def _tick_after(state: Slideshow, now: Instant) -> Instant | None:
    # Autoplay stops on the last slide (see the module docstring).
    if (
        state.phase is not Phase.ACTIVE
        or state.autoplay_s is None
        or state.paused
        or state.index >= len(state.media_ids) - 1
    ):
        return None
    return now + timedelta(seconds=state.autoplay_s)


def _start(state: Slideshow, event: StartSlideshow) -> Slideshow:
    media = tuple(event.media_ids)
    if not 1 <= len(media) <= MAX_MEDIA:
        raise InvalidFrame(
            f"a slideshow shows 1 to {MAX_MEDIA} media", code="invalid_field", field="media_ids"
        )
    if len(set(media)) != len(media):
        raise InvalidFrame("media_ids repeats a media", code="invalid_field", field="media_ids")
    if event.autoplay_s is not None and not AUTOPLAY_MIN_S <= event.autoplay_s <= AUTOPLAY_MAX_S:
        raise InvalidFrame(
            f"autoplay_s must be {AUTOPLAY_MIN_S} to {AUTOPLAY_MAX_S} seconds",
            code="invalid_field",
            field="autoplay_s",
        )
    for media_id in media:
        if event.media_owners.get(media_id) not in state.participants:
            raise Forbidden(f"media {media_id} does not belong to this conversation's participants")
    return attrs.evolve(
        state,
        phase=Phase.ACTIVE,
        media_ids=media,
        index=0,
        autoplay_s=event.autoplay_s,
        paused=False,
        controller=event.by,
    )


def _navigate(state: Slideshow, event: Navigate) -> Slideshow:
    count = len(state.media_ids)
    if event.action is not NavAction.GOTO and (
        event.index is not None or event.media_id is not None
    ):
        field = "index" if event.index is not None else "media_id"
        raise InvalidFrame(
            f"{event.action.value} takes no {field}", code="unexpected_field", field=field
        )
    index, paused = state.index, state.paused
    match event.action:
        case NavAction.NEXT:
            index = (state.index + 1) % count
        case NavAction.PREV:
            index = (state.index - 1) % count
        case NavAction.PAUSE:
            paused = True
        case NavAction.RESUME:
            paused = False
        case NavAction.GOTO:
            index = _goto_index(state, event)
    return attrs.evolve(state, index=index, paused=paused, controller=event.by)


def _goto_index(state: Slideshow, event: Navigate) -> int:
    if (event.index is None) == (event.media_id is None):
        raise InvalidFrame(
            "goto takes exactly one of index or media_id", code="missing_field", field="index"
        )
    if event.media_id is not None:
        if event.media_id not in state.media_ids:
            raise InvalidFrame(
                "media_id is not in this slideshow", code="invalid_field", field="media_id"
            )
        return state.media_ids.index(event.media_id)
    if event.index is None or not 0 <= event.index < len(state.media_ids):
        raise InvalidFrame(
            f"index must be 0 to {len(state.media_ids) - 1}", code="invalid_field", field="index"
        )
    return event.index
