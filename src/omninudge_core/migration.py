"""Reddit -> platform migration: one per conversation with a Reddit-only contact.

Theory of operation (DESIGN.md "Reddit -> platform migration")
-------------------------------------------------------------
``RedditOnly``: messages to the contact are relayed through Reddit. When the
relay carrying an invitation link succeeds the shell feeds ``InviteSent(token)``
(``Invited``); a failed relay is recorded and changes nothing else. When the
contact logs in with Reddit (through the link or on their own) the shell feeds
``InviteeJoined`` and the migration is ``Joined``; the contact's Reddit username
must be the one this conversation was opened with.

``Joined`` is persisted at once and the history import starts on the next
``Tick`` (its deadline is the join time): the OAuth callback stays fast and a
worker, not the request, talks to Reddit.

``Importing`` reads the inviter's Reddit ``inbox`` then ``sent`` box, newest
first, pages of 100 (REDDIT.md §5: there is no per-correspondent filter). It keeps
the ``t4`` messages between the pair (author/dest compared case-insensitively,
both directions), dedupes them by fullname and keeps the 100 newest by
``created_utc``. A box stops when Reddit says there is no next page, when that box
alone has yielded 100 matching messages (older ones cannot enter the newest 100),
or after 10 pages. Rate limits wait until ``retry_at``; failures back off
exponentially (5 s doubling, capped at 15 min) and after 8 failures in a row (or a
permanent one, e.g. revoked consent) the import keeps what it has: the history is
best effort, the upgrade is not.

``Storing`` asks the shell to import the collected messages in ascending
``created_utc`` order; ``MessagesImported`` makes the migration ``Upgraded``
(terminal) and notifies both people.

Crash safety: the cursor and the collected messages live in the state, and every
transition emits ``PersistMigration``. After a restart ``resume(state, now)``
re-emits the effect of the current step (the page fetch at the cursor, or the
import again: the store's import is idempotent by fullname). Effects are performed
in order; ``PersistMigration`` follows the effects whose loss would be visible
(``SetUpgradeState``, ``NotifyUpgraded``) and precedes requests whose answers come
back as inputs (``FetchRedditPage``, ``ImportMessages``, ``WakeAt``).

Invariants (checked by ``tests/core/test_migration.py``)
-------------------------------------------------------
- an import never holds a message twice, never more than 100, only the pair's,
  sorted by ``created_utc``;
- encode -> decode is the identity on every state, so a crash at any point followed
  by ``resume`` ends with the same imported messages as no crash;
- ``Upgraded`` never changes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, cast

import attrs
import cattrs
from cattrs.strategies import configure_tagged_union

from omninudge_core.decision import Decision, TransitionRow
from omninudge_core.errors import Forbidden, IllegalTransition, InvalidFrame
from omninudge_core.models import Message, Origin, RedditMessage, UpgradeState

__all__ = [
    "FORMAT_VERSION",
    "MAX_FETCH_ATTEMPTS",
    "MAX_IMPORT",
    "MAX_PAGES_PER_BOX",
    "PAGE_LIMIT",
    "TRANSITIONS",
    "Box",
    "FetchRedditPage",
    "ImportCursor",
    "ImportMessages",
    "Importing",
    "InviteSent",
    "Invited",
    "InviteeJoined",
    "Joined",
    "MessagesImported",
    "MigrationContext",
    "MigrationEffect",
    "MigrationInput",
    "MigrationState",
    "NotifyUpgraded",
    "PersistMigration",
    "RedditFetchFailed",
    "RedditOnly",
    "RedditPageFetched",
    "RedditRateLimited",
    "RelayFailed",
    "SetUpgradeState",
    "Storing",
    "Tick",
    "Transition",
    "TransitionRow",
    "Upgraded",
    "WakeAt",
    "decode_state",
    "describe_transitions",
    "encode_state",
    "handle",
    "is_finished",
    "make_converter",
    "next_deadline",
    "resume",
    "retry_delay",
    "upgrade_state_of",
]

MACHINE = "migration"

PAGE_LIMIT = 100  # Reddit's listing maximum (REDDIT.md §3)
MAX_IMPORT = 100  # DESIGN.md: at most the last 100 messages
MAX_PAGES_PER_BOX = 10
MAX_FETCH_ATTEMPTS = 8
RETRY_BASE = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=15)
FORMAT_VERSION = 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Box(enum.Enum):
    INBOX = "inbox"
    SENT = "sent"


@attrs.frozen
class MigrationContext:
    """Who the migration is about. Usernames are Reddit usernames as given
    (compared case-insensitively)."""

    conversation_id: str
    inviter_id: str
    inviter_username: str
    contact_username: str


@attrs.frozen
class ImportCursor:
    """Where the import stands in the current box: the ``after`` cursor of the next
    page, the pages read and the matching messages yielded so far in this box."""

    box: Box
    after: str | None = None
    pages: int = 0
    matched: int = 0


# --- states ------------------------------------------------------------------------------


@attrs.frozen
class RedditOnly:
    ctx: MigrationContext
    last_error: str | None = None


@attrs.frozen
class Invited:
    ctx: MigrationContext
    token: str
    invited_at: datetime
    last_error: str | None = None


@attrs.frozen
class Joined:
    ctx: MigrationContext
    invitee_id: str
    joined_at: datetime


@attrs.frozen
class Importing:
    """Fetching pages. ``retry_at`` is set while waiting to retry a fetch; None means
    the fetch at ``cursor`` is outstanding. ``collected`` is ascending, deduped, at
    most ``MAX_IMPORT``."""

    ctx: MigrationContext
    invitee_id: str
    cursor: ImportCursor
    collected: tuple[RedditMessage, ...] = ()
    attempts: int = 0
    retry_at: datetime | None = None


@attrs.frozen
class Storing:
    """All pages read; waiting for the store to import ``messages`` (ascending)."""

    ctx: MigrationContext
    invitee_id: str
    messages: tuple[RedditMessage, ...]


@attrs.frozen
class Upgraded:
    ctx: MigrationContext
    invitee_id: str
    imported: int
    upgraded_at: datetime


MigrationState: TypeAlias = RedditOnly | Invited | Joined | Importing | Storing | Upgraded

# The tag in the encoded state, and the conversation's upgrade_state, per state class.
_TAGS: dict[type[Any], str] = {
    RedditOnly: "reddit_only",
    Invited: "invited",
    Joined: "joined",
    Importing: "importing",
    Storing: "storing",
    Upgraded: "upgraded",
}
_UPGRADE_STATES: dict[type[Any], UpgradeState] = {
    RedditOnly: UpgradeState.REDDIT_ONLY,
    Invited: UpgradeState.INVITED,
    Joined: UpgradeState.JOINED,
    Importing: UpgradeState.IMPORTING,
    Storing: UpgradeState.IMPORTING,
    Upgraded: UpgradeState.UPGRADED,
}


def upgrade_state_of(state: MigrationState) -> UpgradeState:
    """The conversation's ``upgrade_state`` for this migration state."""
    return _UPGRADE_STATES[type(state)]


# --- inputs ------------------------------------------------------------------------------


@attrs.frozen
class InviteSent:
    """The relay carrying the invitation link reached Reddit."""

    token: str


@attrs.frozen
class RelayFailed:
    reason: str


@attrs.frozen
class InviteeJoined:
    """The contact completed Reddit OAuth and has platform account ``user_id``."""

    user_id: str
    reddit_username: str


@attrs.frozen
class RedditPageFetched:
    """The answer to ``FetchRedditPage(box, requested_after)``; ``after`` is the next
    page's cursor (None at the end of the listing)."""

    box: Box
    requested_after: str | None
    messages: tuple[RedditMessage, ...]
    after: str | None

    @classmethod
    def answering(
        cls, request: FetchRedditPage, messages: Sequence[RedditMessage], after: str | None
    ) -> RedditPageFetched:
        return cls(request.box, request.after, tuple(messages), after)


@attrs.frozen
class RedditRateLimited:
    retry_at: datetime


@attrs.frozen
class RedditFetchFailed:
    """``permanent`` when retrying cannot help (e.g. the inviter revoked consent)."""

    reason: str
    permanent: bool = False


@attrs.frozen
class MessagesImported:
    """The store imported the messages; ``count`` were new."""

    count: int


@attrs.frozen
class Tick:
    """The shell's timer fired (at or after ``next_deadline``)."""


MigrationInput: TypeAlias = (
    InviteSent
    | RelayFailed
    | InviteeJoined
    | RedditPageFetched
    | RedditRateLimited
    | RedditFetchFailed
    | MessagesImported
    | Tick
)


# --- effects -----------------------------------------------------------------------------


@attrs.frozen
class FetchRedditPage:
    """Read one page of ``as_user``'s Reddit ``box``; answer with RedditPageFetched,
    RedditRateLimited or RedditFetchFailed."""

    as_user: str
    box: Box
    after: str | None
    limit: int = PAGE_LIMIT


@attrs.frozen
class ImportMessages:
    """Import ``messages`` (ascending) into the conversation, skipping fullnames it
    already holds (``MessageStore.import_reddit``); answer with MessagesImported."""

    conversation_id: str
    messages: tuple[RedditMessage, ...]
    inviter_id: str
    inviter_username: str
    invitee_id: str

    def to_messages(self, message_ids: Sequence[str]) -> tuple[Message, ...]:
        """The platform messages to store, one fresh id per Reddit message: origin
        ``reddit``, Reddit's timestamp, the fullname as ``client_msg_id``.

        Raises ValueError when the number of ids differs from the number of messages.
        """
        inviter = self.inviter_username.lower()
        return tuple(
            Message(
                id=message_id,
                conversation_id=self.conversation_id,
                sender_id=self.inviter_id
                if (reddit.author or "").lower() == inviter
                else self.invitee_id,
                client_msg_id=reddit.fullname,
                origin=Origin.REDDIT,
                sent_at=_EPOCH + timedelta(seconds=reddit.created_utc),
                text=reddit.body,
                reddit_fullname=reddit.fullname,
            )
            for reddit, message_id in zip(self.messages, message_ids, strict=True)
        )


@attrs.frozen
class SetUpgradeState:
    conversation_id: str
    state: UpgradeState


@attrs.frozen
class NotifyUpgraded:
    """Tell both participants (an ``upgrade`` event in their streams)."""

    conversation_id: str


@attrs.frozen
class PersistMigration:
    """Save ``encode_state(state)`` with ``MigrationStore.save``."""

    conversation_id: str
    state: MigrationState


@attrs.frozen
class WakeAt:
    """Feed ``Tick`` at (or after) ``deadline``."""

    deadline: datetime


MigrationEffect: TypeAlias = (
    FetchRedditPage | ImportMessages | SetUpgradeState | NotifyUpgraded | PersistMigration | WakeAt
)

MigrationDecision: TypeAlias = Decision[MigrationState, MigrationEffect]


# --- the import rules ----------------------------------------------------------------------


def _between_pair(ctx: MigrationContext, message: RedditMessage) -> bool:
    if message.author is None or not message.fullname.startswith("t4_"):
        return False  # system or subreddit mail, or a comment reply in the inbox
    pair = {ctx.inviter_username.lower(), ctx.contact_username.lower()}
    return {message.author.lower(), message.dest.lower()} == pair and len(pair) == 2


def _newest(
    collected: Iterable[RedditMessage], new: Iterable[RedditMessage]
) -> tuple[RedditMessage, ...]:
    """Union by fullname (first seen wins), the MAX_IMPORT newest, ascending."""
    by_fullname: dict[str, RedditMessage] = {}
    for message in (*collected, *new):
        by_fullname.setdefault(message.fullname, message)
    ordered = sorted(by_fullname.values(), key=lambda m: (m.created_utc, m.fullname))
    return tuple(ordered[-MAX_IMPORT:])


def retry_delay(attempts: int) -> timedelta:
    """Back-off before retry number ``attempts`` (1-based): 5 s doubling, capped."""
    if attempts > 20:  # past the cap long before; avoids huge numbers
        return RETRY_CAP
    return min(RETRY_BASE * (1 << max(0, attempts - 1)), RETRY_CAP)


# --- transition handlers -------------------------------------------------------------------


def _enter(
    old: MigrationState, new: MigrationState, *requests: MigrationEffect
) -> MigrationDecision:
    """The standard effect order: upgrade state (if it changed), persist, requests."""
    effects: list[MigrationEffect] = []
    if upgrade_state_of(old) != upgrade_state_of(new):
        effects.append(SetUpgradeState(new.ctx.conversation_id, upgrade_state_of(new)))
    effects.append(PersistMigration(new.ctx.conversation_id, new))
    effects.extend(requests)
    return Decision(new, tuple(effects))


def _fetch(state: Importing) -> FetchRedditPage:
    return FetchRedditPage(state.ctx.inviter_id, state.cursor.box, state.cursor.after)


def _import(state: Storing) -> ImportMessages:
    ctx = state.ctx
    return ImportMessages(
        ctx.conversation_id, state.messages, ctx.inviter_id, ctx.inviter_username, state.invitee_id
    )


def _invite_sent(
    state: RedditOnly | Invited, event: InviteSent, now: datetime
) -> MigrationDecision:
    return _enter(state, Invited(state.ctx, event.token, now))


def _relay_failed(
    state: RedditOnly | Invited, event: RelayFailed, now: datetime
) -> MigrationDecision:
    return _enter(state, attrs.evolve(state, last_error=event.reason))


def _check_invitee(ctx: MigrationContext, event: InviteeJoined) -> None:
    if event.reddit_username.lower() != ctx.contact_username.lower():
        raise Forbidden(
            f"this conversation is with u/{ctx.contact_username}, not u/{event.reddit_username}",
            code="wrong_invitee",
        )


def _joined(state: RedditOnly | Invited, event: InviteeJoined, now: datetime) -> MigrationDecision:
    _check_invitee(state.ctx, event)
    return _enter(state, Joined(state.ctx, event.user_id, now), WakeAt(now))


def _joined_again(
    state: Joined | Importing | Storing | Upgraded, event: InviteeJoined, now: datetime
) -> MigrationDecision:
    _check_invitee(state.ctx, event)
    if event.user_id != state.invitee_id:
        raise Forbidden("another account already joined this conversation", code="wrong_invitee")
    return Decision(state)  # the invitation link opened twice


def _start_import(state: Joined, event: Tick, now: datetime) -> MigrationDecision:
    if now < state.joined_at:
        return Decision(state)
    importing = Importing(state.ctx, state.invitee_id, ImportCursor(Box.INBOX))
    return _enter(state, importing, _fetch(importing))


def _store(state: Importing) -> MigrationDecision:
    storing = Storing(state.ctx, state.invitee_id, state.collected)
    return _enter(state, storing, _import(storing))


def _page_fetched(state: Importing, event: RedditPageFetched, now: datetime) -> MigrationDecision:
    cursor = state.cursor
    if state.retry_at is not None or (event.box, event.requested_after) != (
        cursor.box,
        cursor.after,
    ):
        return Decision(state)  # an answer to a request we no longer wait for
    matching = [m for m in event.messages if _between_pair(state.ctx, m)]
    cursor = attrs.evolve(
        cursor, after=event.after, pages=cursor.pages + 1, matched=cursor.matched + len(matching)
    )
    collected = _newest(state.collected, matching)
    box_done = (
        event.after is None
        or cursor.matched >= MAX_IMPORT  # older messages of this box cannot make the cut
        or cursor.pages >= MAX_PAGES_PER_BOX
    )
    if box_done and cursor.box is Box.SENT:
        return _store(attrs.evolve(state, collected=collected))
    if box_done:
        cursor = ImportCursor(Box.SENT)
    importing = attrs.evolve(state, cursor=cursor, collected=collected, attempts=0)
    return _enter(state, importing, _fetch(importing))


def _rate_limited(state: Importing, event: RedditRateLimited, now: datetime) -> MigrationDecision:
    if state.retry_at is not None:
        return Decision(state)  # no fetch outstanding: a stale answer
    retry_at = max(event.retry_at, now)
    return _enter(state, attrs.evolve(state, retry_at=retry_at), WakeAt(retry_at))


def _fetch_failed(state: Importing, event: RedditFetchFailed, now: datetime) -> MigrationDecision:
    if state.retry_at is not None:
        return Decision(state)  # no fetch outstanding: a stale answer
    attempts = state.attempts + 1
    if event.permanent or attempts >= MAX_FETCH_ATTEMPTS:
        return _store(state)  # the history is best effort; the upgrade is not
    retry_at = now + retry_delay(attempts)
    return _enter(
        state, attrs.evolve(state, attempts=attempts, retry_at=retry_at), WakeAt(retry_at)
    )


def _retry_due(state: Importing, event: Tick, now: datetime) -> MigrationDecision:
    if state.retry_at is None or now < state.retry_at:
        return Decision(state)
    importing = attrs.evolve(state, retry_at=None)
    return _enter(state, importing, _fetch(importing))


def _imported(state: Storing, event: MessagesImported, now: datetime) -> MigrationDecision:
    upgraded = Upgraded(state.ctx, state.invitee_id, event.count, now)
    conversation_id = state.ctx.conversation_id
    return Decision(
        upgraded,
        (
            SetUpgradeState(conversation_id, UpgradeState.UPGRADED),
            NotifyUpgraded(conversation_id),
            PersistMigration(conversation_id, upgraded),
        ),
    )


def _no_timer(state: MigrationState, event: Tick, now: datetime) -> MigrationDecision:
    return Decision(state)


# --- the table -----------------------------------------------------------------------------


@attrs.frozen
class Transition:
    """One row: the handler, the states it may lead to, and the rule in words."""

    handler: Callable[[Any, Any, datetime], MigrationDecision]
    targets: tuple[type[Any], ...]
    rule: str


TRANSITIONS: dict[tuple[type[Any], type[Any]], Transition] = {
    (RedditOnly, InviteSent): Transition(
        _invite_sent, (Invited,), "remember the token; SetUpgradeState invited"
    ),
    (RedditOnly, RelayFailed): Transition(_relay_failed, (RedditOnly,), "record the error"),
    (RedditOnly, InviteeJoined): Transition(
        _joined, (Joined,), "the contact joined on their own; WakeAt now (wrong user: Forbidden)"
    ),
    (RedditOnly, Tick): Transition(_no_timer, (RedditOnly,), "no timer: no-op"),
    (Invited, InviteSent): Transition(_invite_sent, (Invited,), "re-sent: the new token"),
    (Invited, RelayFailed): Transition(
        _relay_failed, (Invited,), "record the error; the last invitation stands"
    ),
    (Invited, InviteeJoined): Transition(
        _joined, (Joined,), "SetUpgradeState joined; WakeAt now (wrong user: Forbidden)"
    ),
    (Invited, Tick): Transition(_no_timer, (Invited,), "no timer: no-op"),
    (Joined, Tick): Transition(
        _start_import,
        (Importing, Joined),
        "at joined_at: SetUpgradeState importing; FetchRedditPage inbox",
    ),
    (Joined, InviteeJoined): Transition(_joined_again, (Joined,), "same user: no-op"),
    (Importing, RedditPageFetched): Transition(
        _page_fetched,
        (Importing, Storing),
        "keep the pair's messages; next page, then the sent box, then ImportMessages; "
        "stale answer: no-op",
    ),
    (Importing, RedditRateLimited): Transition(_rate_limited, (Importing,), "WakeAt retry_at"),
    (Importing, RedditFetchFailed): Transition(
        _fetch_failed,
        (Importing, Storing),
        "WakeAt after back-off; permanent or 8th failure: ImportMessages with what was read",
    ),
    (Importing, Tick): Transition(
        _retry_due, (Importing,), "retry due: FetchRedditPage at the cursor"
    ),
    (Importing, InviteeJoined): Transition(_joined_again, (Importing,), "same user: no-op"),
    (Storing, MessagesImported): Transition(
        _imported, (Upgraded,), "SetUpgradeState upgraded; NotifyUpgraded"
    ),
    (Storing, InviteeJoined): Transition(_joined_again, (Storing,), "same user: no-op"),
    (Storing, Tick): Transition(_no_timer, (Storing,), "no timer: no-op"),
    (Upgraded, InviteeJoined): Transition(_joined_again, (Upgraded,), "same user: no-op"),
}


def handle(state: MigrationState, event: MigrationInput, now: datetime) -> MigrationDecision:
    """Apply one input at ``now`` (aware UTC); return the new state and the effects,
    to be performed in order.

    Raises IllegalTransition when (state, input) is not in TRANSITIONS, Forbidden
    (code ``wrong_invitee``) when InviteeJoined names someone else; nothing changes.
    """
    transition = TRANSITIONS.get((type(state), type(event)))
    if transition is None:
        raise IllegalTransition(MACHINE, _TAGS[type(state)], type(event).__name__)
    return transition.handler(state, event, now)


def resume(state: MigrationState, now: datetime) -> MigrationDecision:
    """After a restart: the state unchanged and the effects that carry on its step
    (the conversation's upgrade state again, then the pending fetch, import or timer)."""
    effects: list[MigrationEffect] = [
        SetUpgradeState(state.ctx.conversation_id, upgrade_state_of(state))
    ]
    if isinstance(state, Joined):
        effects.append(WakeAt(state.joined_at))
    elif isinstance(state, Importing):
        effects.append(_fetch(state) if state.retry_at is None else WakeAt(state.retry_at))
    elif isinstance(state, Storing):
        effects.append(_import(state))
    return Decision(state, tuple(effects))


def next_deadline(state: MigrationState) -> datetime | None:
    """When the shell must feed ``Tick`` next, or None when no timer runs."""
    if isinstance(state, Joined):
        return state.joined_at
    if isinstance(state, Importing):
        return state.retry_at
    return None


def describe_transitions() -> list[TransitionRow]:
    """The transition table as rows, for generated docs (so they cannot drift)."""
    return [
        TransitionRow(
            _TAGS[state],
            event.__name__,
            ", ".join(_TAGS[target] for target in transition.targets),
            transition.rule,
        )
        for (state, event), transition in TRANSITIONS.items()
    ]


# --- persistence -----------------------------------------------------------------------------


def _structure_datetime(value: object, _: type[Any]) -> datetime:
    if not isinstance(value, str):
        raise TypeError("a time must be an RFC 3339 string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("a time must carry its UTC offset")
    return parsed.astimezone(UTC)


def make_converter() -> cattrs.Converter:
    """A converter for migration states: JSON-safe mappings with a ``state`` tag."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_unstructure_hook(datetime, lambda value: value.isoformat())
    converter.register_structure_hook(datetime, _structure_datetime)
    configure_tagged_union(
        MigrationState, converter, tag_generator=lambda cls: _TAGS[cls], tag_name="state"
    )
    return converter


_CONVERTER = make_converter()


def encode_state(state: MigrationState) -> dict[str, Any]:
    """The state as a JSON-safe mapping, for ``MigrationStore.save``."""
    encoded = cast(dict[str, Any], _CONVERTER.unstructure(state, MigrationState))
    return {"v": FORMAT_VERSION, **encoded}


def decode_state(obj: Mapping[str, object]) -> MigrationState:
    """The state saved by ``encode_state``.

    Raises InvalidFrame (code ``invalid_migration_state``) for anything else.
    """
    data = dict(obj)
    if data.pop("v", None) != FORMAT_VERSION:
        raise InvalidFrame("unknown migration state version", code="invalid_migration_state")
    try:
        return cast(MigrationState, _CONVERTER.structure(data, cast(Any, MigrationState)))
    except (cattrs.BaseValidationError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidFrame(f"not a migration state: {exc}", code="invalid_migration_state") from exc


def is_finished(obj: Mapping[str, object]) -> bool:
    """True for an encoded state that needs no more work (for ``MigrationStore.unfinished``)."""
    return obj.get("state") == _TAGS[Upgraded]
