"""The delivery state machine: examples, a sweep of every (state, input) pair, and a
stateful hypothesis test asserting the invariants of docs/state-machines/delivery.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from omninudge_core import delivery
from omninudge_core.decision import Decision
from omninudge_core.delivery import (
    PLATFORM_STATUSES,
    RANK,
    REDDIT_DEVICE,
    REDDIT_STATUSES,
    TRANSITIONS,
    DeliveryInput,
    DeviceAcked,
    PersistDeliveries,
    PushedToDevice,
    PushToDevice,
    ReadByRecipient,
    RecipientDelivery,
    RecordRelayFailure,
    RelayFailed,
    RelayRetryDue,
    RelaySucceeded,
    RelayToReddit,
    Route,
    SendReceipt,
    accept,
    handle,
    next_deadline,
    overall_status,
)
from omninudge_core.errors import IllegalTransition
from omninudge_core.models import DeliveryRecord, DeliveryStatus

ACCEPTED = DeliveryStatus.ACCEPTED
PUSHED = DeliveryStatus.PUSHED
DELIVERED = DeliveryStatus.DELIVERED
READ = DeliveryStatus.READ
RELAYED = DeliveryStatus.RELAYED_TO_REDDIT
FAILED = DeliveryStatus.RELAY_FAILED

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machines" / "delivery.md"


def start(
    devices: tuple[str, ...] = ("phone", "laptop"),
    *,
    reddit_only: bool = False,
    read_receipts: bool = True,
) -> RecipientDelivery:
    return accept(
        message_id="m1",
        conversation_id="c1",
        sender_id="alice",
        recipient_id="bob",
        device_ids=devices,
        reddit_only=reddit_only,
        now=T0,
        read_receipts_enabled=read_receipts,
    ).state


def receipts(
    decision: Decision[RecipientDelivery, delivery.DeliveryEffect],
) -> list[DeliveryStatus]:
    return [e.status for e in decision.effects if isinstance(e, SendReceipt)]


def run(state: RecipientDelivery, *events: DeliveryInput) -> RecipientDelivery:
    for event in events:
        state = handle(state, event, T0).state
    return state


# --- accept -----------------------------------------------------------------------------


def test_accept_persists_accepted_rows_and_pushes_to_every_device() -> None:
    decision = accept(
        message_id="m1",
        conversation_id="c1",
        sender_id="alice",
        recipient_id="bob",
        device_ids=["phone", "laptop", "phone"],
        reddit_only=False,
        now=T0,
    )
    assert decision.state.devices == {"laptop": ACCEPTED, "phone": ACCEPTED}
    persist, *pushes = decision.effects
    assert persist == PersistDeliveries(
        (
            DeliveryRecord("m1", "bob", "laptop", ACCEPTED, T0),
            DeliveryRecord("m1", "bob", "phone", ACCEPTED, T0),
        )
    )
    assert pushes == [PushToDevice("bob", "laptop", "m1"), PushToDevice("bob", "phone", "m1")]


def test_accept_for_a_reddit_only_recipient_relays_through_reddit() -> None:
    decision = accept(
        message_id="m1",
        conversation_id="c1",
        sender_id="alice",
        recipient_id="bob",
        device_ids=(),
        reddit_only=True,
        now=T0,
    )
    assert decision.state.route is Route.REDDIT
    assert decision.state.devices == {REDDIT_DEVICE: ACCEPTED}
    assert decision.effects[1:] == (RelayToReddit("m1", "bob"),)


def test_accept_refuses_devices_for_a_reddit_only_recipient() -> None:
    with pytest.raises(ValueError, match="Reddit-only"):
        start(("phone",), reddit_only=True)


def test_the_device_map_cannot_be_mutated_through_the_state() -> None:
    state = start()
    with pytest.raises(TypeError):
        state.devices["phone"] = READ  # type: ignore[index]


# --- platform route ---------------------------------------------------------------------


def test_first_ack_sends_one_delivered_receipt_and_later_acks_send_none() -> None:
    state = run(start(), PushedToDevice("phone"), PushedToDevice("laptop"))
    first = handle(state, DeviceAcked("phone"), T0)
    assert receipts(first) == [DELIVERED]
    assert first.effects[0] == PersistDeliveries(
        (DeliveryRecord("m1", "bob", "phone", DELIVERED, T0),)
    )
    second = handle(first.state, DeviceAcked("laptop"), T0)
    assert receipts(second) == []
    assert second.state.devices == {"phone": DELIVERED, "laptop": DELIVERED}


def test_duplicate_ack_and_repush_are_no_ops_without_effects() -> None:
    state = run(start(), PushedToDevice("phone"), DeviceAcked("phone"))
    for duplicate in (DeviceAcked("phone"), PushedToDevice("phone")):
        assert handle(state, duplicate, T0) == Decision(state, ())


def test_an_ack_may_overtake_the_push_report() -> None:
    decision = handle(start(), DeviceAcked("phone"), T0)
    assert decision.state.devices["phone"] is DELIVERED
    # The late push report does not move the status back.
    assert handle(decision.state, PushedToDevice("phone"), T0).state == decision.state


def test_read_before_any_ack_sends_only_a_read_receipt_and_no_delivered_follows() -> None:
    read = handle(start(), ReadByRecipient("phone"), T0)
    assert read.state.devices["phone"] is READ
    assert receipts(read) == [READ]
    assert read.state.receipts_sent == {DELIVERED, READ}
    later = handle(read.state, DeviceAcked("laptop"), T0)
    assert later.state.devices["laptop"] is DELIVERED
    assert receipts(later) == []


def test_read_with_read_receipts_disabled_sends_only_delivered() -> None:
    read = handle(start(read_receipts=False), ReadByRecipient("phone"), T0)
    assert receipts(read) == [DELIVERED]
    assert read.state.receipts_sent == {DELIVERED}


def test_read_after_delivered_with_receipts_disabled_tells_the_sender_nothing() -> None:
    state = run(start(read_receipts=False), DeviceAcked("phone"))
    read = handle(state, ReadByRecipient("phone"), T0)
    assert receipts(read) == []
    assert [type(e) for e in read.effects] == [PersistDeliveries]


def test_the_readers_current_setting_decides_the_read_receipt() -> None:
    state = start(read_receipts=True)
    read = handle(state, ReadByRecipient(None, read_receipts_enabled=False), T0)
    assert receipts(read) == [DELIVERED]
    assert read.state.read_receipts_enabled is False


def test_read_without_a_device_marks_every_device_read() -> None:
    decision = handle(run(start(), DeviceAcked("phone")), ReadByRecipient(), T0)
    assert decision.state.devices == {"phone": READ, "laptop": READ}
    persisted = decision.effects[0]
    assert isinstance(persisted, PersistDeliveries)
    assert {r.device_id for r in persisted.records} == {"phone", "laptop"}
    assert overall_status(decision.state) is READ


def test_overall_status_is_the_most_advanced_device() -> None:
    assert overall_status(start(())) is ACCEPTED
    assert overall_status(run(start(), PushedToDevice("laptop"))) is PUSHED


def test_an_event_for_an_untracked_device_is_illegal() -> None:
    with pytest.raises(IllegalTransition, match="untracked device"):
        handle(start(), DeviceAcked("tablet"), T0)


def test_relay_events_are_illegal_for_a_platform_recipient() -> None:
    for event in (RelaySucceeded("t4_1"), RelayFailed("boom"), RelayRetryDue()):
        with pytest.raises(IllegalTransition):
            handle(start(), event, T0)


# --- Reddit route -----------------------------------------------------------------------


def test_relay_success_records_the_fullname() -> None:
    decision = handle(start((), reddit_only=True), RelaySucceeded("t4_abc"), T0)
    assert decision.state.devices == {REDDIT_DEVICE: RELAYED}
    assert decision.state.reddit_fullname == "t4_abc"
    assert decision.effects == (
        PersistDeliveries((DeliveryRecord("m1", "bob", REDDIT_DEVICE, RELAYED, T0),)),
    )


def test_relay_failure_schedules_a_retry_that_relays_again_when_due() -> None:
    retry_at = T0 + timedelta(minutes=5)
    failed = handle(start((), reddit_only=True), RelayFailed("ratelimited", retry_at), T0)
    assert failed.state.devices[REDDIT_DEVICE] is FAILED
    assert RecordRelayFailure("m1", "ratelimited", 1, retry_at) in failed.effects
    assert next_deadline(failed.state) == retry_at

    early = handle(failed.state, RelayRetryDue(), retry_at - timedelta(seconds=1))
    assert early == Decision(failed.state, ())

    due = handle(failed.state, RelayRetryDue(), retry_at)
    assert due.effects == (RelayToReddit("m1", "bob"),)
    assert next_deadline(due.state) is None
    assert handle(due.state, RelayRetryDue(), retry_at) == Decision(due.state, ())

    relayed = handle(due.state, RelaySucceeded("t4_x"), retry_at)
    assert relayed.state.devices[REDDIT_DEVICE] is RELAYED
    assert next_deadline(relayed.state) is None


def test_a_second_failure_counts_but_does_not_persist_again() -> None:
    state = run(start((), reddit_only=True), RelayFailed("a"))
    again = handle(state, RelayFailed("b"), T0)
    assert again.effects == (RecordRelayFailure("m1", "b", 2, None),)
    assert again.state.relay_failures == 2


def test_a_failure_reported_after_a_success_changes_nothing() -> None:
    state = run(start((), reddit_only=True), RelaySucceeded("t4_1"))
    assert handle(state, RelayFailed("late"), T0) == Decision(state, ())
    assert handle(state, RelaySucceeded("t4_1"), T0) == Decision(state, ())


def test_device_events_are_illegal_for_a_reddit_only_recipient() -> None:
    state = start((), reddit_only=True)
    for event in (
        PushedToDevice(REDDIT_DEVICE),
        DeviceAcked(REDDIT_DEVICE),
        ReadByRecipient(),
        RelayRetryDue(),
    ):
        with pytest.raises(IllegalTransition):
            handle(state, event, T0)


def test_from_records_rebuilds_the_state_with_receipts_already_sent() -> None:
    live = run(start(), DeviceAcked("phone"), ReadByRecipient("laptop"))
    rebuilt = RecipientDelivery.from_records(
        message_id="m1",
        conversation_id="c1",
        sender_id="alice",
        recipient_id="bob",
        records=[DeliveryRecord("m1", "bob", d, s, T0) for d, s in live.devices.items()],
        reddit_only=False,
        read_receipts_enabled=True,
    )
    assert rebuilt == live


def test_the_state_round_trips_through_a_cattrs_converter() -> None:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, lambda v, _: datetime.fromisoformat(v))
    state = run(start(), DeviceAcked("phone"))
    raw = converter.unstructure(state)
    assert raw["devices"] == {"laptop": "accepted", "phone": "delivered"}
    assert converter.structure(raw, RecipientDelivery) == state


# --- the table --------------------------------------------------------------------------


def test_no_row_of_the_table_moves_a_status_backwards_or_across_routes() -> None:
    for (route, status, _event), transition in TRANSITIONS.items():
        assert RANK[transition.to] >= RANK[status]
        allowed = PLATFORM_STATUSES if route is Route.PLATFORM else REDDIT_STATUSES
        assert {status, transition.to} <= allowed


def test_the_doc_page_lists_every_row_of_the_table() -> None:
    page = DOC.read_text(encoding="utf-8")
    for row in delivery.describe_transitions():
        assert "| " + " | ".join(row) + " |" in page


# --- hypothesis: every (state, input) pair ----------------------------------------------

DEVICE_POOL = ("phone", "laptop", "tablet")
TIMES = st.integers(min_value=-3600, max_value=3600).map(lambda s: T0 + timedelta(seconds=s))


@st.composite
def any_state(draw: st.DrawFn) -> RecipientDelivery:
    """Any well-typed state, reachable or not."""
    route = draw(st.sampled_from(Route))
    if route is Route.REDDIT:
        devices = {
            REDDIT_DEVICE: draw(st.sampled_from(sorted(REDDIT_STATUSES, key=RANK.__getitem__)))
        }
    else:
        devices = draw(
            st.dictionaries(
                st.sampled_from(DEVICE_POOL[:2]),
                st.sampled_from(sorted(PLATFORM_STATUSES, key=RANK.__getitem__)),
            )
        )
    return RecipientDelivery(
        message_id="m1",
        conversation_id="c1",
        sender_id="alice",
        recipient_id="bob",
        route=route,
        devices=devices,
        receipts_sent=draw(st.frozensets(st.sampled_from([DELIVERED, READ]))),
        read_receipts_enabled=draw(st.booleans()),
        relay_failures=draw(st.integers(0, 3)),
        relay_retry_at=draw(st.none() | TIMES),
    )


DEVICE_IDS = st.sampled_from((*DEVICE_POOL, REDDIT_DEVICE))
ANY_INPUT: st.SearchStrategy[DeliveryInput] = st.one_of(
    st.builds(PushedToDevice, DEVICE_IDS),
    st.builds(DeviceAcked, DEVICE_IDS),
    st.builds(ReadByRecipient, st.none() | DEVICE_IDS, st.none() | st.booleans()),
    st.builds(RelaySucceeded, st.just("t4_x")),
    st.builds(RelayFailed, st.just("boom"), st.none() | TIMES),
    st.just(RelayRetryDue()),
)


@given(state=any_state(), event=ANY_INPUT, now=TIMES)
def test_every_state_and_input_gives_a_decision_or_an_illegal_transition(
    state: RecipientDelivery, event: DeliveryInput, now: datetime
) -> None:
    before = attrs.evolve(state)
    try:
        decision = handle(state, event, now)
    except IllegalTransition:
        assert state == before
        return
    assert isinstance(decision, Decision)
    assert isinstance(decision.state, RecipientDelivery)
    assert set(decision.state.devices) == set(state.devices)
    for device_id, status in state.devices.items():
        assert RANK[decision.state.devices[device_id]] >= RANK[status]
    assert state == before


# --- hypothesis: a stateful run and its invariants --------------------------------------


class DeliveryMachine(RuleBasedStateMachine):
    """Random wire histories (with duplicates and reordering) against the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.receipts: list[DeliveryStatus] = []
        self.persisted: list[tuple[str, DeliveryStatus]] = []
        self.last_applied: DeliveryInput | None = None

    @initialize(
        devices=st.lists(st.sampled_from(DEVICE_POOL[:2]), max_size=2, unique=True),
        reddit_only=st.booleans(),
        read_receipts=st.booleans(),
    )
    def accept_message(self, devices: list[str], reddit_only: bool, read_receipts: bool) -> None:
        decision = accept(
            message_id="m1",
            conversation_id="c1",
            sender_id="alice",
            recipient_id="bob",
            device_ids=[] if reddit_only else devices,
            reddit_only=reddit_only,
            now=self.now,
            read_receipts_enabled=read_receipts,
        )
        self.state = decision.state
        self.record(decision)

    def record(self, decision: Decision[RecipientDelivery, delivery.DeliveryEffect]) -> None:
        for effect in decision.effects:
            if isinstance(effect, SendReceipt):
                assert effect.to == "alice"
                assert effect.user_id == "bob"
                self.receipts.append(effect.status)
            elif isinstance(effect, PersistDeliveries):
                self.persisted.extend((r.device_id, r.status) for r in effect.records)

    def apply(self, event: DeliveryInput) -> None:
        before = self.state
        try:
            decision = handle(before, event, self.now)
        except IllegalTransition:
            assert self.state is before
            return
        for device_id, status in before.devices.items():
            assert RANK[decision.state.devices[device_id]] >= RANK[status], "moved backwards"
        self.record(decision)
        self.state = decision.state
        self.last_applied = event

    @rule(device=st.sampled_from(DEVICE_POOL))
    def pushed(self, device: str) -> None:
        self.apply(PushedToDevice(device))

    @rule(device=st.sampled_from(DEVICE_POOL))
    def acked(self, device: str) -> None:
        self.apply(DeviceAcked(device))

    @rule(device=st.none() | st.sampled_from(DEVICE_POOL), setting=st.none() | st.booleans())
    def read(self, device: str | None, setting: bool | None) -> None:
        self.apply(ReadByRecipient(device, setting))

    @rule()
    def relay_succeeded(self) -> None:
        self.apply(RelaySucceeded("t4_x"))

    @rule(retry_in=st.none() | st.integers(1, 600))
    def relay_failed(self, retry_in: int | None) -> None:
        retry_at = None if retry_in is None else self.now + timedelta(seconds=retry_in)
        self.apply(RelayFailed("boom", retry_at))

    @rule(seconds=st.integers(0, 900))
    def time_passes_and_the_timer_fires(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.apply(RelayRetryDue())

    @precondition(
        lambda self: (
            self.last_applied is not None and not isinstance(self.last_applied, RelayFailed)
        )
    )
    @rule()
    def the_wire_repeats_the_last_event(self) -> None:
        assert self.last_applied is not None
        again = handle(self.state, self.last_applied, self.now)
        assert again == Decision(self.state, ())

    @invariant()
    def routes_never_mix(self) -> None:
        statuses = set(self.state.devices.values())
        if self.state.route is Route.REDDIT:
            assert set(self.state.devices) == {REDDIT_DEVICE}
            assert statuses <= REDDIT_STATUSES
            assert self.receipts == []
        else:
            assert statuses <= PLATFORM_STATUSES

    @invariant()
    def at_most_one_receipt_of_each_kind_and_no_delivered_after_read(self) -> None:
        assert self.receipts.count(DELIVERED) <= 1
        assert self.receipts.count(READ) <= 1
        if READ in self.receipts:
            assert self.receipts[-1] is READ

    @invariant()
    def read_implies_delivered(self) -> None:
        if READ in self.state.receipts_sent:
            assert DELIVERED in self.state.receipts_sent
        if READ in self.state.devices.values():
            assert DELIVERED in self.state.receipts_sent

    @invariant()
    def receipts_sent_matches_what_was_emitted(self) -> None:
        emitted = set(self.receipts) | ({DELIVERED} if READ in self.receipts else set())
        assert self.state.receipts_sent == emitted

    @invariant()
    def each_status_of_a_device_is_persisted_once(self) -> None:
        assert len(self.persisted) == len(set(self.persisted))

    @invariant()
    def a_timer_exists_only_while_a_failed_relay_awaits_its_retry(self) -> None:
        deadline = next_deadline(self.state)
        if deadline is not None:
            assert self.state.devices.get(REDDIT_DEVICE) is FAILED


TestDeliveryMachine = DeliveryMachine.TestCase
