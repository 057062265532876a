"""The slideshow state machine: examples, a sweep of every (state, input) pair, and a
stateful hypothesis test asserting the invariants of docs/state-machines/slideshow.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from omninudge_core import slideshow
from omninudge_core.decision import Decision
from omninudge_core.errors import (
    Blocked,
    Forbidden,
    IllegalTransition,
    InvalidFrame,
    ProtocolError,
    StaleCommand,
)
from omninudge_core.slideshow import (
    MAX_MEDIA,
    AutoplayTick,
    BroadcastSlideshow,
    NavAction,
    Navigate,
    Phase,
    Slideshow,
    SlideshowInput,
    StartSlideshow,
    StopSlideshow,
    WakeAt,
    handle,
    next_deadline,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machines" / "slideshow.md"
OWNERS = {"m1": "alice", "m2": "bob", "m3": "alice", "m4": "bob", "evil": "mallory"}


def idle() -> Slideshow:
    return Slideshow.idle("c1", ("bob", "alice"))


def start_cmd(
    media: tuple[str, ...] = ("m1", "m2", "m3"), *, by: str = "alice", autoplay_s: int | None = None
) -> StartSlideshow:
    return StartSlideshow(by=by, media_ids=media, media_owners=OWNERS, autoplay_s=autoplay_s)


def active(**kwargs: Any) -> Slideshow:
    return handle(idle(), start_cmd(**kwargs), T0).state


def nav(state: Slideshow, action: NavAction, by: str = "bob", **kwargs: Any) -> Navigate:
    return Navigate(by=by, action=action, base_version=state.version, **kwargs)


# --- start and stop ---------------------------------------------------------------------


def test_start_activates_at_the_first_slide_and_broadcasts_version_1() -> None:
    decision = handle(idle(), start_cmd(), T0)
    state = decision.state
    assert (state.phase, state.index, state.version, state.controller) == (
        Phase.ACTIVE,
        0,
        1,
        "alice",
    )
    assert state.participants == ("alice", "bob")
    assert decision.effects == (BroadcastSlideshow("c1", state),)
    assert next_deadline(state) is None


def test_start_with_autoplay_asks_to_be_woken() -> None:
    decision = handle(idle(), start_cmd(autoplay_s=5), T0)
    assert decision.state.next_tick_at == T0 + timedelta(seconds=5)
    assert decision.effects[1] == WakeAt(T0 + timedelta(seconds=5))


def test_only_participants_may_drive() -> None:
    state = active()
    for current, command in (
        (idle(), start_cmd(by="mallory")),
        (state, nav(state, NavAction.NEXT, by="mallory")),
        (state, StopSlideshow(by="mallory")),
    ):
        with pytest.raises(Forbidden) as info:
            handle(current, command, T0)
        assert type(info.value) is Forbidden


def test_a_block_refuses_start_and_navigate_but_not_stop() -> None:
    with pytest.raises(Blocked):
        handle(idle(), attrs.evolve(start_cmd(), blocked=True), T0)
    state = active()
    with pytest.raises(Blocked):
        handle(state, attrs.evolve(nav(state, NavAction.NEXT), blocked=True), T0)
    stopped = handle(state, StopSlideshow(by="bob", blocked=True), T0)
    assert stopped.state.phase is Phase.ENDED


def test_media_of_someone_else_is_forbidden() -> None:
    with pytest.raises(Forbidden):
        handle(idle(), start_cmd(("m1", "evil")), T0)
    with pytest.raises(Forbidden):
        handle(idle(), start_cmd(("m1", "unknown")), T0)


@pytest.mark.parametrize(
    ("media", "autoplay_s", "field"),
    [
        ((), None, "media_ids"),
        (tuple(f"x{i}" for i in range(MAX_MEDIA + 1)), None, "media_ids"),
        (("m1", "m1"), None, "media_ids"),
        (("m1",), 0, "autoplay_s"),
        (("m1",), 3601, "autoplay_s"),
    ],
)
def test_a_bad_start_is_an_invalid_field(
    media: tuple[str, ...], autoplay_s: int | None, field: str
) -> None:
    owners = {**OWNERS, **{m: "alice" for m in media}}
    command = StartSlideshow("alice", media, owners, autoplay_s)
    with pytest.raises(InvalidFrame) as info:
        handle(idle(), command, T0)
    assert (info.value.code, info.value.field) == ("invalid_field", field)


def test_a_hundred_media_are_allowed() -> None:
    media = tuple(f"x{i}" for i in range(MAX_MEDIA))
    state = handle(idle(), StartSlideshow("bob", media, dict.fromkeys(media, "bob")), T0).state
    assert len(state.media_ids) == MAX_MEDIA


def test_start_while_active_is_illegal_stop_first() -> None:
    with pytest.raises(IllegalTransition):
        handle(active(), start_cmd(by="bob"), T0)


def test_stop_ends_the_show_and_a_new_start_continues_the_version() -> None:
    stopped = handle(active(autoplay_s=5), StopSlideshow(by="bob"), T0)
    assert stopped.state.phase is Phase.ENDED
    assert stopped.state.version == 2
    assert stopped.state.controller == "bob"
    assert next_deadline(stopped.state) is None
    assert stopped.effects == (BroadcastSlideshow("c1", stopped.state),)
    with pytest.raises(IllegalTransition):
        handle(stopped.state, StopSlideshow(by="bob"), T0)
    again = handle(stopped.state, start_cmd(("m4",), by="bob"), T0)
    assert (again.state.phase, again.state.version, again.state.media_ids) == (
        Phase.ACTIVE,
        3,
        ("m4",),
    )


def test_navigate_or_stop_before_any_start_is_illegal() -> None:
    with pytest.raises(IllegalTransition):
        handle(idle(), nav(idle(), NavAction.NEXT), T0)
    with pytest.raises(IllegalTransition):
        handle(idle(), StopSlideshow(by="bob"), T0)


# --- navigation -------------------------------------------------------------------------


def test_next_and_prev_wrap_around_and_bump_the_version() -> None:
    state = active()
    prev = handle(state, nav(state, NavAction.PREV), T0).state
    assert (prev.index, prev.version, prev.controller) == (2, 2, "bob")
    wrapped = handle(prev, nav(prev, NavAction.NEXT, by="alice"), T0).state
    assert (wrapped.index, wrapped.version, wrapped.controller) == (0, 3, "alice")


def test_next_on_a_one_slide_show_stays_but_still_bumps_the_version() -> None:
    state = active(media=("m1",))
    decision = handle(state, nav(state, NavAction.NEXT), T0)
    assert (decision.state.index, decision.state.version) == (0, 2)
    assert decision.effects == (BroadcastSlideshow("c1", decision.state),)


def test_goto_by_index_and_by_media_id() -> None:
    state = active()
    by_index = handle(state, nav(state, NavAction.GOTO, index=2), T0).state
    assert by_index.index == 2
    by_media = handle(by_index, nav(by_index, NavAction.GOTO, media_id="m2"), T0).state
    assert by_media.index == 1


@pytest.mark.parametrize(
    ("kwargs", "code", "field"),
    [
        ({"index": 3}, "invalid_field", "index"),
        ({"index": -1}, "invalid_field", "index"),
        ({"media_id": "m4"}, "invalid_field", "media_id"),
        ({}, "missing_field", "index"),
        ({"index": 0, "media_id": "m1"}, "missing_field", "index"),
    ],
)
def test_a_bad_goto_is_refused_and_changes_nothing(
    kwargs: dict[str, Any], code: str, field: str
) -> None:
    state = active()
    with pytest.raises(InvalidFrame) as info:
        handle(state, nav(state, NavAction.GOTO, **kwargs), T0)
    assert (info.value.code, info.value.field) == (code, field)


def test_an_index_on_a_non_goto_action_is_an_unexpected_field() -> None:
    state = active()
    with pytest.raises(InvalidFrame) as info:
        handle(state, nav(state, NavAction.NEXT, index=1), T0)
    assert info.value.code == "unexpected_field"


def test_a_stale_command_is_refused_with_the_current_state() -> None:
    state = active()
    moved = handle(state, nav(state, NavAction.NEXT), T0).state
    stale = Navigate(by="alice", action=NavAction.NEXT, base_version=state.version)
    with pytest.raises(StaleCommand) as info:
        handle(moved, stale, T0)
    assert info.value.current == moved
    assert info.value.current_version == 2


def test_a_navigate_based_on_an_old_show_after_it_ended_is_stale_not_illegal() -> None:
    state = active()
    ended = handle(state, StopSlideshow(by="alice"), T0).state
    with pytest.raises(StaleCommand):
        handle(ended, nav(state, NavAction.NEXT), T0)


# --- autoplay ---------------------------------------------------------------------------


def test_autoplay_advances_when_due_and_stops_on_the_last_slide() -> None:
    state = active(autoplay_s=10)
    assert handle(state, AutoplayTick(), T0 + timedelta(seconds=9)) == Decision(state, ())

    t1 = T0 + timedelta(seconds=10)
    step = handle(state, AutoplayTick(), t1)
    assert (step.state.index, step.state.version, step.state.controller) == (1, 2, "alice")
    assert step.effects == (
        BroadcastSlideshow("c1", step.state),
        WakeAt(t1 + timedelta(seconds=10)),
    )

    t2 = t1 + timedelta(seconds=10)
    last = handle(step.state, AutoplayTick(), t2)
    assert last.state.index == 2
    assert last.effects == (BroadcastSlideshow("c1", last.state),)
    assert next_deadline(last.state) is None
    assert handle(last.state, AutoplayTick(), t2 + timedelta(hours=1)).effects == ()


def test_pause_stops_autoplay_and_resume_restarts_it_from_now() -> None:
    state = active(autoplay_s=10)
    paused = handle(state, nav(state, NavAction.PAUSE), T0).state
    assert paused.paused
    assert next_deadline(paused) is None
    assert handle(paused, AutoplayTick(), T0 + timedelta(minutes=5)) == Decision(paused, ())

    later = T0 + timedelta(minutes=5)
    resumed = handle(paused, nav(paused, NavAction.RESUME), later)
    assert not resumed.state.paused
    assert resumed.effects[-1] == WakeAt(later + timedelta(seconds=10))


def test_a_tick_after_the_show_ended_is_ignored() -> None:
    ended = handle(active(autoplay_s=1), StopSlideshow(by="bob"), T0).state
    assert handle(ended, AutoplayTick(), T0 + timedelta(seconds=5)) == Decision(ended, ())
    assert handle(idle(), AutoplayTick(), T0) == Decision(idle(), ())


# --- the state is plain data ------------------------------------------------------------


def test_the_state_round_trips_through_a_cattrs_converter() -> None:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, lambda v, _: datetime.fromisoformat(v))
    state = active(autoplay_s=5)
    raw = converter.unstructure(state)
    assert raw["phase"] == "active"
    assert raw["media_ids"] == ["m1", "m2", "m3"]
    assert converter.structure(raw, Slideshow) == state


def test_the_doc_page_lists_every_row_of_the_table() -> None:
    page = DOC.read_text(encoding="utf-8")
    rows = slideshow.describe_transitions()
    assert len(rows) == len(slideshow.TRANSITIONS)
    for row in rows:
        assert "| " + " | ".join(row) + " |" in page


# --- hypothesis: every (state, input) pair ----------------------------------------------

PEOPLE = st.sampled_from(("alice", "bob", "mallory"))
MEDIA = st.sampled_from(sorted(OWNERS))
TIMES = st.integers(min_value=0, max_value=3600).map(lambda s: T0 + timedelta(seconds=s))


@st.composite
def any_state(draw: st.DrawFn) -> Slideshow:
    phase = draw(st.sampled_from(Phase))
    media = tuple(draw(st.lists(st.sampled_from(("m1", "m2", "m3")), min_size=1, unique=True)))
    autoplay = draw(st.none() | st.integers(1, 60))
    index = draw(st.integers(0, len(media) - 1))
    return Slideshow(
        conversation_id="c1",
        participants=("alice", "bob"),
        phase=phase,
        version=draw(st.integers(0, 5)),
        media_ids=media,
        index=index,
        autoplay_s=autoplay,
        paused=draw(st.booleans()),
        controller=draw(st.none() | st.sampled_from(("alice", "bob"))),
        next_tick_at=draw(st.none() | TIMES)
        if phase is Phase.ACTIVE and index < len(media) - 1
        else None,
    )


ANY_INPUT: st.SearchStrategy[SlideshowInput] = st.one_of(
    st.builds(
        StartSlideshow,
        by=PEOPLE,
        media_ids=st.lists(MEDIA, max_size=4).map(tuple),
        media_owners=st.just(OWNERS),
        autoplay_s=st.none() | st.integers(0, 4000),
        blocked=st.booleans(),
    ),
    st.builds(
        Navigate,
        by=PEOPLE,
        action=st.sampled_from(NavAction),
        base_version=st.integers(0, 5),
        index=st.none() | st.integers(-1, 4),
        media_id=st.none() | MEDIA,
        blocked=st.booleans(),
    ),
    st.builds(StopSlideshow, by=PEOPLE, blocked=st.booleans()),
    st.just(AutoplayTick()),
)


@given(state=any_state(), event=ANY_INPUT, now=TIMES)
def test_every_state_and_input_gives_a_decision_or_a_typed_refusal(
    state: Slideshow, event: SlideshowInput, now: datetime
) -> None:
    before = attrs.evolve(state)
    try:
        decision = handle(state, event, now)
    except (IllegalTransition, StaleCommand, Forbidden, InvalidFrame):
        assert state == before
        return
    assert state == before
    assert isinstance(decision.state, Slideshow)
    if decision.state == state:
        assert decision.effects == ()
    else:
        assert decision.state.version == state.version + 1
        assert decision.effects[0] == BroadcastSlideshow("c1", decision.state)
        if decision.state.phase is Phase.ACTIVE:
            assert 0 <= decision.state.index < len(decision.state.media_ids)


# --- hypothesis: a stateful run and its invariants --------------------------------------


def _version(state: Slideshow) -> int:
    return state.version


class SlideshowMachine(RuleBasedStateMachine):
    """Two participants and an outsider race commands (some stale) against autoplay."""

    def __init__(self) -> None:
        super().__init__()
        self.state = idle()
        self.now = T0
        self.accepted = 0
        self.broadcasts: list[Slideshow] = []
        self.wakes: list[datetime] = []

    def apply(self, event: SlideshowInput) -> None:
        before = self.state
        try:
            decision = handle(before, event, self.now)
        except ProtocolError:
            assert self.state == before
            return
        broadcasts = [e.state for e in decision.effects if isinstance(e, BroadcastSlideshow)]
        if decision.state == before:
            assert decision.effects == ()
            return
        if not isinstance(event, AutoplayTick):
            assert event.by in ("alice", "bob"), "an outsider's command was accepted"
            assert decision.state.controller == event.by
        assert broadcasts == [decision.state]
        assert decision.state.version == before.version + 1
        self.wakes.extend(e.deadline for e in decision.effects if isinstance(e, WakeAt))
        self.accepted += 1
        self.broadcasts.extend(broadcasts)
        self.state = decision.state

    @rule(
        by=PEOPLE,
        media=st.lists(MEDIA, min_size=0, max_size=4, unique=True),
        autoplay=st.none() | st.integers(1, 30),
        blocked=st.booleans(),
    )
    def start(self, by: str, media: list[str], autoplay: int | None, blocked: bool) -> None:
        before = self.state
        self.apply(StartSlideshow(by, tuple(media), OWNERS, autoplay, blocked))
        if blocked:
            assert self.state == before, "a blocked start changed the state"

    @rule(
        by=PEOPLE,
        action=st.sampled_from(NavAction),
        lag=st.sampled_from((0, 0, 0, 1, 2)),
        goto=st.none() | st.integers(-1, 4) | MEDIA,
        blocked=st.booleans(),
    )
    def navigate(
        self, by: str, action: NavAction, lag: int, goto: int | str | None, blocked: bool
    ) -> None:
        index = goto if isinstance(goto, int) else None
        media_id = goto if isinstance(goto, str) else None
        before = self.state
        self.apply(Navigate(by, action, before.version - lag, index, media_id, blocked))
        if lag or blocked:
            assert self.state == before, "a stale or blocked command changed the state"

    @rule(by=PEOPLE, blocked=st.booleans())
    def stop(self, by: str, blocked: bool) -> None:
        self.apply(StopSlideshow(by, blocked))

    @rule(seconds=st.integers(0, 40))
    def time_passes_and_the_timer_fires(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.apply(AutoplayTick())

    @rule(data=st.data())
    def two_clients_applying_broadcasts_in_version_order_converge(
        self, data: st.DataObject
    ) -> None:
        if not self.broadcasts:
            return
        in_order: Slideshow | None = None
        for received in sorted(data.draw(st.permutations(self.broadcasts)), key=_version):
            assert in_order is None or received.version > in_order.version
            in_order = received
        # A client that receives them in any order and ignores older versions.
        latest: Slideshow | None = None
        for received in data.draw(st.permutations(self.broadcasts)):
            if latest is None or received.version > latest.version:
                latest = received
        assert in_order == latest == self.state

    @invariant()
    def version_counts_the_accepted_changes(self) -> None:
        assert self.state.version == self.accepted
        versions = [b.version for b in self.broadcasts]
        assert versions == list(range(1, len(versions) + 1))

    @invariant()
    def index_stays_within_the_media(self) -> None:
        if self.state.phase is Phase.ACTIVE:
            assert 1 <= len(self.state.media_ids) <= MAX_MEDIA
            assert 0 <= self.state.index < len(self.state.media_ids)

    @invariant()
    def controller_is_a_participant(self) -> None:
        assert self.state.controller in (None, "alice", "bob")

    @invariant()
    def media_belong_to_the_participants(self) -> None:
        assert all(OWNERS[m] in ("alice", "bob") for m in self.state.media_ids)

    @invariant()
    def a_timer_runs_only_while_autoplay_has_a_next_slide(self) -> None:
        deadline = next_deadline(self.state)
        if deadline is not None:
            assert self.state.phase is Phase.ACTIVE
            assert not self.state.paused
            assert self.state.autoplay_s is not None
            assert self.state.index < len(self.state.media_ids) - 1
            assert deadline in self.wakes


TestSlideshowMachine = SlideshowMachine.TestCase
