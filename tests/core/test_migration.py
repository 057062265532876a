"""The Reddit -> platform migration machine (omninudge_core.migration)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from omninudge_core import migration as m
from omninudge_core.decision import Decision
from omninudge_core.errors import Forbidden, IllegalTransition, InvalidFrame
from omninudge_core.models import Origin, RedditMessage, UpgradeState

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CTX = m.MigrationContext("conv1", "alice-id", "Alice", "Bob")
DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machines" / "migration.md"


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def pm(name: str, author: str | None, dest: str, at: float) -> RedditMessage:
    return RedditMessage(f"t4_{name}", author, dest, f"body {name}", at)


def joined() -> m.Joined:
    decision = m.handle(m.RedditOnly(CTX), m.InviteeJoined("bob-id", "bob"), T0)
    assert isinstance(decision.state, m.Joined)
    return decision.state


def importing() -> m.Importing:
    decision = m.handle(joined(), m.Tick(), T0)
    assert isinstance(decision.state, m.Importing)
    return decision.state


def of_type(effects: Sequence[object], kind: type) -> list[object]:
    return [e for e in effects if isinstance(e, kind)]


class FakeReddit:
    """Two boxes, newest first, paged by fullname cursors like Reddit's listings."""

    def __init__(self, inbox: Sequence[RedditMessage], sent: Sequence[RedditMessage], size: int):
        order = {m.Box.INBOX: inbox, m.Box.SENT: sent}
        self.boxes = {
            box: sorted(msgs, key=lambda x: (-x.created_utc, x.fullname))
            for box, msgs in order.items()
        }
        self.size = size
        self.requests: list[m.FetchRedditPage] = []

    def page(self, request: m.FetchRedditPage) -> m.RedditPageFetched:
        self.requests.append(request)
        messages = self.boxes[request.box]
        start = 0
        if request.after is not None:
            start = 1 + [x.fullname for x in messages].index(request.after)
        chunk = messages[start : start + min(self.size, request.limit)]
        more = start + len(chunk) < len(messages)
        return m.RedditPageFetched.answering(request, chunk, chunk[-1].fullname if more else None)

    def readable(self) -> list[RedditMessage]:
        """What the page cap lets an import see, both boxes."""
        cap = self.size * m.MAX_PAGES_PER_BOX
        return [x for box in self.boxes.values() for x in box[:cap]]


def is_pair(message: RedditMessage) -> bool:
    names = {(message.author or "").lower(), message.dest.lower()}
    return message.fullname.startswith("t4_") and names == {"alice", "bob"}


class Store:
    """The store's import: idempotent by fullname (MessageStore.import_reddit)."""

    def __init__(self) -> None:
        self.messages: dict[str, RedditMessage] = {}

    def import_(self, effect: m.ImportMessages) -> int:
        new = [x for x in effect.messages if x.fullname not in self.messages]
        self.messages.update((x.fullname, x) for x in new)
        return len(new)


def check_import(effect: m.ImportMessages) -> None:
    names = [x.fullname for x in effect.messages]
    assert len(names) == len(set(names)) <= m.MAX_IMPORT
    assert [x.created_utc for x in effect.messages] == sorted(
        x.created_utc for x in effect.messages
    )
    assert all(is_pair(x) for x in effect.messages)


# --- invitation and join -----------------------------------------------------------------


def test_a_sent_invitation_moves_to_invited_and_persists() -> None:
    decision = m.handle(m.RedditOnly(CTX), m.InviteSent("tok1"), T0)
    state = m.Invited(CTX, "tok1", T0)
    assert decision.state == state
    assert decision.effects == (
        m.SetUpgradeState("conv1", UpgradeState.INVITED),
        m.PersistMigration("conv1", state),
    )


def test_a_failed_relay_is_recorded_and_changes_nothing_else() -> None:
    invited = m.Invited(CTX, "tok1", T0)
    decision = m.handle(invited, m.RelayFailed("reddit down"), T0)
    assert decision.state == m.Invited(CTX, "tok1", T0, last_error="reddit down")
    assert of_type(decision.effects, m.SetUpgradeState) == []


def test_joining_persists_joined_and_asks_for_an_immediate_wake_up() -> None:
    decision = m.handle(m.Invited(CTX, "tok1", T0), m.InviteeJoined("bob-id", "BOB"), T0)
    assert decision.state == m.Joined(CTX, "bob-id", T0)
    assert decision.effects[0] == m.SetUpgradeState("conv1", UpgradeState.JOINED)
    assert decision.effects[-1] == m.WakeAt(T0)
    assert m.next_deadline(decision.state) == T0


def test_someone_else_joining_through_the_invitation_is_forbidden() -> None:
    with pytest.raises(Forbidden) as raised:
        m.handle(m.Invited(CTX, "tok1", T0), m.InviteeJoined("carol-id", "carol"), T0)
    assert raised.value.code == "wrong_invitee"


def test_opening_the_invitation_again_is_a_no_op() -> None:
    state = joined()
    assert m.handle(state, m.InviteeJoined("bob-id", "Bob"), T0) == Decision(state, ())
    with pytest.raises(Forbidden):
        m.handle(state, m.InviteeJoined("other-id", "Bob"), T0)


def test_the_import_starts_on_the_first_tick_with_the_inbox() -> None:
    decision = m.handle(joined(), m.Tick(), T0 + seconds(1))
    assert isinstance(decision.state, m.Importing)
    assert decision.effects == (
        m.SetUpgradeState("conv1", UpgradeState.IMPORTING),
        m.PersistMigration("conv1", decision.state),
        m.FetchRedditPage("alice-id", m.Box.INBOX, None, 100),
    )


# --- paging and filtering ------------------------------------------------------------------


def test_only_the_pairs_messages_are_kept_both_directions_case_insensitively() -> None:
    page = [
        pm("a", "BOB", "alice", 5),
        pm("b", "alice", "Bob", 4),
        pm("c", "carol", "alice", 3),
        pm("d", None, "alice", 2),
        RedditMessage("t1_e", "bob", "alice", "a comment reply", 1),
        pm("f", "bob", "bob", 0),
    ]
    state = importing()
    decision = m.handle(state, m.RedditPageFetched(m.Box.INBOX, None, tuple(page), None), T0)
    assert isinstance(decision.state, m.Importing)
    assert [x.fullname for x in decision.state.collected] == ["t4_b", "t4_a"]
    assert decision.state.cursor == m.ImportCursor(m.Box.SENT)
    assert decision.effects[-1] == m.FetchRedditPage("alice-id", m.Box.SENT, None, 100)


def test_the_sent_box_ends_the_fetch_and_imports_deduplicated_ascending() -> None:
    state = attrs.evolve(
        importing(),
        cursor=m.ImportCursor(m.Box.SENT),
        collected=(pm("a", "bob", "alice", 1), pm("b", "bob", "alice", 3)),
    )
    page = (pm("c", "alice", "bob", 2), pm("a", "bob", "alice", 1))
    decision = m.handle(state, m.RedditPageFetched(m.Box.SENT, None, page, None), T0)
    assert isinstance(decision.state, m.Storing)
    [effect] = of_type(decision.effects, m.ImportMessages)
    assert isinstance(effect, m.ImportMessages)
    assert [x.fullname for x in effect.messages] == ["t4_a", "t4_c", "t4_b"]


def test_a_box_stops_once_it_alone_yielded_a_hundred_matching_messages() -> None:
    page = tuple(pm(f"x{i}", "bob", "alice", 1000 - i) for i in range(100))
    decision = m.handle(importing(), m.RedditPageFetched(m.Box.INBOX, None, page, "t4_x99"), T0)
    assert isinstance(decision.state, m.Importing)
    assert decision.state.cursor.box is m.Box.SENT


def test_a_box_stops_at_the_page_cap() -> None:
    state = attrs.evolve(importing(), cursor=m.ImportCursor(m.Box.INBOX, "t4_p9", pages=9))
    decision = m.handle(state, m.RedditPageFetched(m.Box.INBOX, "t4_p9", (), "t4_p10"), T0)
    assert isinstance(decision.state, m.Importing)
    assert decision.state.cursor == m.ImportCursor(m.Box.SENT)


def test_the_next_page_follows_the_after_cursor() -> None:
    page = (pm("a", "bob", "alice", 5),)
    decision = m.handle(importing(), m.RedditPageFetched(m.Box.INBOX, None, page, "t4_a"), T0)
    assert isinstance(decision.state, m.Importing)
    assert decision.state.cursor == m.ImportCursor(m.Box.INBOX, "t4_a", pages=1, matched=1)
    assert decision.effects[-1] == m.FetchRedditPage("alice-id", m.Box.INBOX, "t4_a", 100)


def test_an_answer_to_an_old_request_is_ignored() -> None:
    state = importing()
    stale = m.RedditPageFetched(m.Box.SENT, None, (pm("a", "bob", "alice", 1),), None)
    assert m.handle(state, stale, T0) == Decision(state, ())
    waiting = attrs.evolve(state, retry_at=T0 + seconds(5))
    fresh_looking = m.RedditPageFetched(m.Box.INBOX, None, (), None)
    assert m.handle(waiting, fresh_looking, T0) == Decision(waiting, ())


def test_only_the_hundred_newest_are_kept() -> None:
    inbox = tuple(pm(f"i{i}", "bob", "alice", i) for i in range(80))
    sent = tuple(pm(f"s{i}", "alice", "bob", i + 0.5) for i in range(80))
    state: m.MigrationState = importing()
    state = m.handle(state, m.RedditPageFetched(m.Box.INBOX, None, inbox, None), T0).state
    decision = m.handle(state, m.RedditPageFetched(m.Box.SENT, None, sent, None), T0)
    [effect] = of_type(decision.effects, m.ImportMessages)
    assert isinstance(effect, m.ImportMessages)
    assert len(effect.messages) == 100
    assert min(x.created_utc for x in effect.messages) == 30


# --- retries --------------------------------------------------------------------------------


def test_a_rate_limit_waits_until_retry_at_then_fetches_the_same_page() -> None:
    state = importing()
    decision = m.handle(state, m.RedditRateLimited(T0 + seconds(42)), T0)
    assert m.next_deadline(decision.state) == T0 + seconds(42)
    assert decision.effects[-1] == m.WakeAt(T0 + seconds(42))
    early = m.handle(decision.state, m.Tick(), T0 + seconds(41))
    assert early.effects == ()
    due = m.handle(decision.state, m.Tick(), T0 + seconds(42))
    assert due.effects[-1] == m.FetchRedditPage("alice-id", m.Box.INBOX, None, 100)
    assert m.next_deadline(due.state) is None


def test_failures_back_off_exponentially_with_a_cap() -> None:
    delays = [m.retry_delay(n) for n in range(1, 12)]
    assert delays[:4] == [seconds(5), seconds(10), seconds(20), seconds(40)]
    assert delays[-1] == timedelta(minutes=15)
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert m.retry_delay(1000) == timedelta(minutes=15)


def test_a_failed_fetch_is_retried_after_the_back_off() -> None:
    state: m.MigrationState = importing()
    deadlines = []
    now = T0
    for _ in range(3):
        state = m.handle(state, m.RedditFetchFailed("503"), now).state
        deadline = m.next_deadline(state)
        assert deadline is not None
        deadlines.append(deadline - now)
        now = deadline
        state = m.handle(state, m.Tick(), now).state
    assert deadlines == [seconds(5), seconds(10), seconds(20)]


def test_a_successful_page_resets_the_failure_count() -> None:
    state = attrs.evolve(importing(), attempts=5)
    page = m.RedditPageFetched(m.Box.INBOX, None, (), "t4_z")
    decision = m.handle(state, page, T0)
    assert isinstance(decision.state, m.Importing)
    assert decision.state.attempts == 0


@pytest.mark.parametrize(
    ("attempts", "event"),
    [(0, m.RedditFetchFailed("consent revoked", permanent=True)), (7, m.RedditFetchFailed("x"))],
)
def test_giving_up_imports_what_was_read(attempts: int, event: m.RedditFetchFailed) -> None:
    state = attrs.evolve(importing(), attempts=attempts, collected=(pm("a", "bob", "alice", 1),))
    decision = m.handle(state, event, T0)
    assert isinstance(decision.state, m.Storing)
    assert [x.fullname for x in decision.state.messages] == ["t4_a"]


def test_imported_messages_upgrade_and_notify() -> None:
    storing = m.Storing(CTX, "bob-id", (pm("a", "bob", "alice", 1),))
    decision = m.handle(storing, m.MessagesImported(1), T0)
    upgraded = m.Upgraded(CTX, "bob-id", 1, T0)
    assert decision == Decision(
        upgraded,
        (
            m.SetUpgradeState("conv1", UpgradeState.UPGRADED),
            m.NotifyUpgraded("conv1"),
            m.PersistMigration("conv1", upgraded),
        ),
    )
    assert m.next_deadline(upgraded) is None


def test_import_effect_builds_reddit_origin_messages_with_reddit_times() -> None:
    effect = m.ImportMessages(
        "conv1",
        (pm("a", "bob", "alice", 60), pm("b", "ALICE", "bob", 120)),
        "alice-id",
        "Alice",
        "bob-id",
    )
    first, second = effect.to_messages(["m1", "m2"])
    assert (first.sender_id, second.sender_id) == ("bob-id", "alice-id")
    assert first.origin is Origin.REDDIT
    assert first.sent_at == datetime(1970, 1, 1, 0, 1, tzinfo=UTC)
    assert (first.reddit_fullname, first.client_msg_id, first.text) == ("t4_a", "t4_a", "body a")
    with pytest.raises(ValueError, match="zip"):
        effect.to_messages(["m1"])


# --- resume and persistence -----------------------------------------------------------------


def test_resume_re_emits_the_current_step() -> None:
    fetching = importing()
    assert m.resume(fetching, T0).effects == (
        m.SetUpgradeState("conv1", UpgradeState.IMPORTING),
        m.FetchRedditPage("alice-id", m.Box.INBOX, None, 100),
    )
    waiting = attrs.evolve(fetching, retry_at=T0 + seconds(9))
    assert m.resume(waiting, T0).effects[-1] == m.WakeAt(T0 + seconds(9))
    storing = m.Storing(CTX, "bob-id", (pm("a", "bob", "alice", 1),))
    [_, again] = m.resume(storing, T0).effects
    assert isinstance(again, m.ImportMessages)
    assert again.messages == storing.messages
    assert m.resume(joined(), T0).effects[-1] == m.WakeAt(T0)
    assert m.resume(storing, T0).state == storing


ALL_STATES: list[m.MigrationState] = [
    m.RedditOnly(CTX),
    m.RedditOnly(CTX, last_error="boom"),
    m.Invited(CTX, "tok", T0),
    joined(),
    attrs.evolve(
        importing(),
        cursor=m.ImportCursor(m.Box.SENT, "t4_q", 3, 17),
        collected=(pm("a", None, "bob", 1.5), pm("b", "bob", "alice", 2)),
        attempts=2,
        retry_at=T0 + seconds(10),
    ),
    m.Storing(CTX, "bob-id", (pm("a", "bob", "alice", 1),)),
    m.Upgraded(CTX, "bob-id", 3, T0),
]


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda x: type(x).__name__)
def test_every_state_survives_a_json_round_trip(state: m.MigrationState) -> None:
    encoded = json.loads(json.dumps(m.encode_state(state)))
    assert m.decode_state(encoded) == state
    assert m.is_finished(encoded) == isinstance(state, m.Upgraded)


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"v": 2, "state": "reddit_only"},
        {"v": 1, "state": "nope"},
        {"v": 1, "state": "joined"},
        {"v": 1, "state": "invited", "ctx": attrs.asdict(CTX), "token": "t", "invited_at": "x"},
        {**m.encode_state(m.Invited(CTX, "t", T0)), "invited_at": "2025-01-01T00:00:00"},
        {**m.encode_state(m.RedditOnly(CTX)), "surprise": 1},
    ],
)
def test_anything_else_fails_to_decode_with_invalid_frame(obj: dict[str, object]) -> None:
    with pytest.raises(InvalidFrame) as raised:
        m.decode_state(obj)
    assert raised.value.code == "invalid_migration_state"


# --- the table ------------------------------------------------------------------------------

SAMPLE_INPUTS: list[m.MigrationInput] = [
    m.InviteSent("tok2"),
    m.RelayFailed("x"),
    m.InviteeJoined("bob-id", "bob"),
    m.RedditPageFetched(m.Box.INBOX, None, (), None),
    m.RedditRateLimited(T0),
    m.RedditFetchFailed("x"),
    m.MessagesImported(0),
    m.Tick(),
]


def test_the_samples_cover_every_state_and_input_type() -> None:
    assert {type(x) for x in ALL_STATES} == {t for t, _ in m.TRANSITIONS}
    assert {type(x) for x in SAMPLE_INPUTS} == {i for _, i in m.TRANSITIONS}


@pytest.mark.parametrize(
    ("state", "event"),
    list(itertools.product(ALL_STATES, SAMPLE_INPUTS)),
    ids=lambda x: type(x).__name__,
)
def test_every_state_and_input_pair_is_in_the_table_or_raises(
    state: m.MigrationState, event: m.MigrationInput
) -> None:
    transition = m.TRANSITIONS.get((type(state), type(event)))
    if transition is None:
        with pytest.raises(IllegalTransition):
            m.handle(state, event, T0)
        return
    decision = m.handle(state, event, T0 + seconds(100))
    assert isinstance(decision.state, transition.targets)


def test_upgraded_is_terminal() -> None:
    upgraded = m.Upgraded(CTX, "bob-id", 3, T0)
    assert [i for s, i in m.TRANSITIONS if s is m.Upgraded] == [m.InviteeJoined]
    assert m.handle(upgraded, m.InviteeJoined("bob-id", "bob"), T0).state == upgraded


def test_the_docs_list_every_transition_row() -> None:
    page = DOC.read_text(encoding="utf-8")
    missing = [row.markdown() for row in m.describe_transitions() if row.markdown() not in page]
    assert missing == []


# --- whole imports against a fake Reddit ----------------------------------------------------

AUTHORS = [("bob", "alice"), ("Alice", "BOB"), ("carol", "alice"), (None, "alice"), ("bob", "#sub")]


@st.composite
def mailboxes(draw: st.DrawFn) -> FakeReddit:
    """Inbox and sent box: the pair's messages (some in both boxes), strangers, system mail."""
    boxes: dict[str, list[RedditMessage]] = {"i": [], "s": []}
    for box in boxes:
        size = draw(st.integers(0, 300))  # uniform, so large boxes are common
        entry = st.tuples(st.integers(0, 4), st.integers(0, 400))
        entries = draw(st.lists(entry, min_size=size, max_size=size))
        for n, (who, at) in enumerate(entries):
            author, dest = AUTHORS[who]
            boxes[box].append(pm(f"{box}{n}", author, dest, at))
    shared = draw(st.lists(st.integers(0, 400), max_size=20))
    for n, at in enumerate(shared):  # the same fullname listed in both boxes
        message = pm(f"both{n}", "bob", "alice", at)
        boxes["i"].append(message)
        boxes["s"].append(message)
    page_size = draw(st.sampled_from([7, 13, 30, 100]) | st.integers(7, 100))
    return FakeReddit(boxes["i"], boxes["s"], page_size)


def drive(
    reddit: FakeReddit, faults: Sequence[str] = (), crash_after: frozenset[int] = frozenset()
) -> tuple[m.MigrationState, Store, list[m.ImportMessages]]:
    """Run a migration from Invited to the end like a shell would; crash (reload the
    last saved state and resume) after the effect numbers in ``crash_after``."""
    now = T0
    store = Store()
    imports: list[m.ImportMessages] = []
    remaining_faults = iter(faults)
    invited = m.Invited(CTX, "tok", T0)
    saved: dict[str, object] = m.encode_state(invited)
    decision = m.handle(invited, m.InviteeJoined("bob-id", "bob"), now)
    state, effects = decision.state, list(decision.effects)
    performed = 0
    for _ in range(2000):
        if isinstance(state, m.Upgraded):
            return state, store, imports
        answer: m.MigrationInput | None = None
        crashed = False
        for effect in effects:
            performed += 1
            if isinstance(effect, m.PersistMigration):
                saved = json.loads(json.dumps(m.encode_state(effect.state)))
            elif isinstance(effect, m.FetchRedditPage):
                fault = next(remaining_faults, "ok")
                if fault == "rate":
                    answer = m.RedditRateLimited(now + seconds(2))
                elif fault == "fail":
                    answer = m.RedditFetchFailed("503")
                else:
                    answer = reddit.page(effect)
            elif isinstance(effect, m.ImportMessages):
                check_import(effect)
                imports.append(effect)
                answer = m.MessagesImported(store.import_(effect))
            elif isinstance(effect, m.WakeAt):
                now = max(now, effect.deadline)
                answer = m.Tick()
            if performed in crash_after:
                crashed = True
                break
        if crashed:
            state = m.decode_state(saved)
            decision = m.resume(state, now)
        else:
            if answer is None and isinstance(state, m.Invited):
                # The join was lost in a crash: the contact opens the link again.
                answer = m.InviteeJoined("bob-id", "bob")
            assert answer is not None, f"stuck in {state}"
            decision = m.handle(state, answer, now)
        state, effects = decision.state, list(decision.effects)
    raise AssertionError("the migration did not finish")


@given(mailboxes())
def test_an_import_brings_the_hundred_newest_pair_messages_once_in_order(
    reddit: FakeReddit,
) -> None:
    state, store, imports = drive(reddit)
    assert isinstance(state, m.Upgraded)
    [effect] = imports
    readable = {x.fullname: x for x in reddit.readable() if is_pair(x)}
    expected = sorted(x.created_utc for x in readable.values())[-m.MAX_IMPORT :]
    # Ties at the 100th place may be broken either way; the times cannot differ.
    assert [x.created_utc for x in effect.messages] == expected
    assert set(store.messages) <= set(readable)
    assert state.imported == len(effect.messages)


@given(
    mailboxes(),
    st.lists(st.sampled_from(["ok", "rate", "fail"]), max_size=6),
    st.frozensets(st.integers(1, 60), max_size=4),
)
def test_a_crash_at_any_point_ends_with_the_same_import(
    reddit: FakeReddit, faults: list[str], crash_after: frozenset[int]
) -> None:
    _, expected, _ = drive(reddit)
    state, store, imports = drive(reddit, faults, crash_after)
    assert isinstance(state, m.Upgraded)
    assert store.messages == expected.messages
    assert {x.fullname for x in imports[-1].messages} == set(expected.messages)


# --- the stateful property test -------------------------------------------------------------


class MigrationMachine(RuleBasedStateMachine):
    """Random inputs, answers, stale answers and crashes against one mailbox."""

    @initialize(reddit=mailboxes())
    def start(self, reddit: FakeReddit) -> None:
        self.reddit = reddit
        self.now = T0
        self.state: m.MigrationState = m.RedditOnly(CTX)
        self.saved: dict[str, object] = m.encode_state(self.state)
        self.pending: m.FetchRedditPage | m.ImportMessages | None = None
        self.store = Store()
        self.upgraded: m.Upgraded | None = None

    def apply(self, event: m.MigrationInput) -> None:
        if (type(self.state), type(event)) not in m.TRANSITIONS:
            with pytest.raises(IllegalTransition):
                m.handle(self.state, event, self.now)
            return
        self.perform(m.handle(self.state, event, self.now))

    def perform(self, decision: Decision[m.MigrationState, m.MigrationEffect]) -> None:
        self.state = decision.state
        for effect in decision.effects:
            if isinstance(effect, m.PersistMigration):
                assert effect.state == self.state
                self.saved = json.loads(json.dumps(m.encode_state(effect.state)))
            elif isinstance(effect, m.FetchRedditPage | m.ImportMessages):
                self.pending = effect
            if isinstance(effect, m.ImportMessages):
                check_import(effect)
        if isinstance(self.state, m.Upgraded) and self.upgraded is None:
            self.upgraded = self.state

    @rule(token=st.sampled_from(["t1", "t2"]))
    def invitation_sent(self, token: str) -> None:
        self.apply(m.InviteSent(token))

    @rule()
    def relay_failed(self) -> None:
        self.apply(m.RelayFailed("reddit down"))

    @rule(username=st.sampled_from(["bob", "BOB", "carol"]))
    def contact_joins(self, username: str) -> None:
        if username == "carol" and (type(self.state), m.InviteeJoined) in m.TRANSITIONS:
            with pytest.raises(Forbidden):
                m.handle(self.state, m.InviteeJoined("carol-id", username), self.now)
            return
        self.apply(m.InviteeJoined("bob-id", username))

    @rule(jump=st.booleans(), by=st.floats(0, 60))
    def timer_fires(self, jump: bool, by: float) -> None:
        deadline = m.next_deadline(self.state)
        self.now = max(self.now, deadline) if jump and deadline else self.now + seconds(by)
        self.apply(m.Tick())

    @precondition(lambda self: isinstance(self.pending, m.FetchRedditPage))
    @rule(answer=st.sampled_from(["ok", "ok", "ok", "rate", "fail", "permanent"]))
    def reddit_answers(self, answer: str) -> None:
        request = self.pending
        assert isinstance(request, m.FetchRedditPage)
        self.pending = None
        if answer == "ok":
            self.apply(self.reddit.page(request))
        elif answer == "rate":
            self.apply(m.RedditRateLimited(self.now + seconds(30)))
        else:
            self.apply(m.RedditFetchFailed("x", permanent=answer == "permanent"))

    @precondition(lambda self: isinstance(self.state, m.Importing))
    @rule(box=st.sampled_from(m.Box), after=st.sampled_from([None, "t4_i0", "t4_s3"]))
    def a_stale_answer_arrives(self, box: m.Box, after: str | None) -> None:
        assert isinstance(self.state, m.Importing)
        current = self.state.cursor
        if self.state.retry_at is None and (box, after) == (current.box, current.after):
            return  # that would be the real answer
        before = self.state
        self.apply(m.RedditPageFetched(box, after, (pm("zz", "bob", "alice", 999),), None))
        assert self.state == before

    @precondition(lambda self: isinstance(self.pending, m.ImportMessages))
    @rule()
    def store_imports(self) -> None:
        request = self.pending
        assert isinstance(request, m.ImportMessages)
        self.pending = None
        self.apply(m.MessagesImported(self.store.import_(request)))

    @rule()
    def crash_and_resume(self) -> None:
        self.pending = None  # in-flight requests die with the process
        self.perform(m.resume(m.decode_state(self.saved), self.now))

    @invariant()
    def the_saved_state_is_the_current_state(self) -> None:
        assert m.decode_state(self.saved) == self.state

    @invariant()
    def collected_messages_are_the_pairs_unique_sorted_and_at_most_a_hundred(self) -> None:
        messages = getattr(self.state, "collected", getattr(self.state, "messages", ()))
        names = [x.fullname for x in messages]
        assert len(names) == len(set(names)) <= m.MAX_IMPORT
        assert list(messages) == sorted(messages, key=lambda x: (x.created_utc, x.fullname))
        assert all(is_pair(x) for x in messages)
        assert len(self.store.messages) <= m.MAX_IMPORT

    @invariant()
    def upgraded_is_terminal(self) -> None:
        if self.upgraded is not None:
            assert self.state == self.upgraded
            assert m.next_deadline(self.state) is None


TestMigrationMachine = MigrationMachine.TestCase
