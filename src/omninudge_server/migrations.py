"""The migration worker: drives ``omninudge_core.migration`` for every conversation
with a Reddit-only contact, from the first relay to the imported history.

Requests feed the inputs that happen in them (``InviteSent`` and ``RelayFailed`` from
the relay, ``InviteeJoined`` from a Reddit login) with ``feed``; the effects that take
time (``FetchRedditPage``, ``ImportMessages``, ``WakeAt``) run in one background task
per conversation, which feeds their answers back. Every transition's
``PersistMigration`` is carried out before the next request goes out, so a crash at
any point resumes where it stood: ``start`` calls ``migration.resume`` for every
unfinished migration. The import is idempotent by Reddit fullname, and messages
that were relayed from here (stored before Reddit gave them a fullname) are matched by
their text, so nothing is imported twice.

Several processes may resume the same migration after a restart; that costs Reddit
calls, never duplicates.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from omninudge_core import codec, migration, wire
from omninudge_core.errors import (
    IllegalTransition,
    InvalidFrame,
    OmniNudgeError,
    ProtocolError,
    RateLimited,
    Unavailable,
)
from omninudge_core.models import (
    ConversationKind,
    EventKind,
    Message,
    Origin,
    RedditMessage,
    UpgradeState,
    User,
)
from omninudge_core.ports import NewEvent
from omninudge_server.realtime import Hub
from omninudge_server.reddit_access import RedditAccess, RedditLoginRequired
from omninudge_server.reddit_feature import RedditFeature

if TYPE_CHECKING:
    from omninudge_server.wiring import Services

__all__ = ["MigrationWorker", "relay_body"]

logger = logging.getLogger("omninudge.migrations")

HISTORY_SCAN_PAGES = 20  # relayed messages are looked for in the newest 2,000 messages
TIMER_SLACK_S = 0.01
DRIVER_RETRY_S = 10.0  # after an unexpected failure (e.g. the database), resume this later


def relay_body(text: str, invite_url: str | None) -> str:
    """What is sent through Reddit: the text, and the invitation with the first message."""
    if invite_url is None:
        return text
    return (
        f"{text}\n\n---\n\nThis message was sent from OmniNudge. Reply there, end-to-end "
        f"encrypted, and bring this conversation along: {invite_url}"
    )


class MigrationWorker:
    """One per process; ``start`` resumes unfinished migrations, ``stop`` cancels."""

    def __init__(self, services: Services, feature: RedditFeature) -> None:
        self._services = services
        self._feature = feature
        self._access = RedditAccess(services, feature)
        self._hub = Hub(services.fanout)  # publish only: notices reach every instance
        self._locks: dict[str, asyncio.Lock] = {}
        self._drivers: dict[str, asyncio.Task[None]] = {}

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        now = self._services.clock()
        for conversation_id in await self._services.storage.migrations.unfinished():
            try:
                state = await self.load(conversation_id)
            except InvalidFrame:
                logger.error("unreadable migration state of %s skipped", conversation_id)
                continue
            # Before the join (and after the upgrade) there is nothing to carry on.
            if isinstance(state, migration.Joined | migration.Importing | migration.Storing):
                logger.info(
                    "resuming the migration of %s (%s)",
                    conversation_id,
                    migration.upgrade_state_of(state).value,
                )
                decision = migration.resume(state, now)
                self._spawn(conversation_id, decision.state, decision.effects)

    async def stop(self) -> None:
        drivers = list(self._drivers.values())
        for task in drivers:
            task.cancel()
        for task in drivers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._drivers.clear()

    async def idle(self) -> None:
        """Wait until no migration task runs here (for tests and shutdown)."""
        while self._drivers:
            await asyncio.gather(*list(self._drivers.values()), return_exceptions=True)

    # --- inputs from requests -----------------------------------------------------------

    async def load(self, conversation_id: str) -> migration.MigrationState | None:
        """Raises InvalidFrame(code="invalid_migration_state") for a damaged row."""
        stored = await self._services.storage.migrations.load(conversation_id)
        return None if stored is None else migration.decode_state(stored)

    async def begin(self, ctx: migration.MigrationContext) -> migration.MigrationState:
        """The migration of ``ctx.conversation_id``, created as ``RedditOnly`` if new."""
        async with self._lock(ctx.conversation_id):
            state = await self.load(ctx.conversation_id)
            if state is None:
                state = migration.RedditOnly(ctx)
                await self._save(state)
            return state

    async def feed(self, conversation_id: str, event: migration.MigrationInput) -> None:
        """Apply one input and carry out its effects (the slow ones in the background).

        Raises IllegalTransition or Forbidden (``wrong_invitee``): nothing changed."""
        async with self._lock(conversation_id):
            state = await self.load(conversation_id)
            if state is None:
                raise IllegalTransition(migration.MACHINE, "none", type(event).__name__)
            decision = migration.handle(state, event, self._services.clock())
            pending = await self._perform_quick(decision.state, decision.effects)
        if pending:
            self._spawn(conversation_id, decision.state, pending)

    async def on_login(self, user: User) -> None:
        """``user`` logged in with Reddit: every Reddit conversation they were reached
        in moves to ``Joined`` (the import starts in the background)."""
        storage = self._services.storage
        cursor: str | None = None
        for _ in range(100):
            page = await storage.conversations.list_for_user(user.id, before=cursor, limit=100)
            for view in page.items:
                conversation = view.conversation
                done = conversation.upgrade_state in (UpgradeState.UPGRADED, UpgradeState.NONE)
                if conversation.kind is not ConversationKind.REDDIT or done:
                    continue
                await self._joined(conversation.id, user)
            cursor = page.next_cursor
            if cursor is None:
                break

    async def _joined(self, conversation_id: str, user: User) -> None:
        with contextlib.suppress(OmniNudgeError):
            await self._services.storage.invitations.accept(
                self._feature.invite_token(conversation_id), self._services.clock()
            )
        try:
            await self.feed(conversation_id, migration.InviteeJoined(user.id, user.username))
        except ProtocolError as exc:
            # The inviter logging in, or a state with no place for a join: not an error.
            logger.info("join of %s ignored for %s: %s", user.id, conversation_id, exc.code)

    # --- effects ----------------------------------------------------------------------------

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        return self._locks.setdefault(conversation_id, asyncio.Lock())

    async def _save(self, state: migration.MigrationState) -> None:
        await self._services.storage.migrations.save(
            state.ctx.conversation_id, migration.encode_state(state)
        )

    async def _perform_quick(
        self, state: migration.MigrationState, effects: Sequence[migration.MigrationEffect]
    ) -> list[migration.MigrationEffect]:
        """Carry out effects in order up to the first slow one; return the rest."""
        for index, effect in enumerate(effects):
            if isinstance(effect, migration.SetUpgradeState):
                await self._services.storage.conversations.set_upgrade_state(
                    effect.conversation_id, effect.state
                )
            elif isinstance(effect, migration.PersistMigration):
                await self._save(effect.state)
            elif isinstance(effect, migration.NotifyUpgraded):
                await self._notify(effect.conversation_id)
            else:
                return list(effects[index:])
        return []

    def _spawn(
        self,
        conversation_id: str,
        state: migration.MigrationState,
        effects: Sequence[migration.MigrationEffect],
    ) -> None:
        if conversation_id in self._drivers:
            return  # one driver per conversation; it already holds the newest state
        task = asyncio.create_task(self._drive(conversation_id, state, list(effects)))
        self._drivers[conversation_id] = task
        task.add_done_callback(lambda _: self._drivers.pop(conversation_id, None))

    async def _drive(
        self,
        conversation_id: str,
        state: migration.MigrationState,
        effects: list[migration.MigrationEffect],
    ) -> None:
        queue = collections.deque(effects)
        while queue:
            try:
                state = await self._step(conversation_id, state, queue)
            except asyncio.CancelledError:
                raise
            except Exception:
                # E.g. the database was briefly unreachable. What is on disk is the last
                # persisted state: carry on from it a little later, as after a restart.
                logger.exception("migration of %s failed; resuming later", conversation_id)
                await asyncio.sleep(DRIVER_RETRY_S)
                stored = await self.load(conversation_id)
                if stored is None:
                    return
                state = stored
                queue = collections.deque(migration.resume(state, self._services.clock()).effects)

    async def _step(
        self,
        conversation_id: str,
        state: migration.MigrationState,
        queue: collections.deque[migration.MigrationEffect],
    ) -> migration.MigrationState:
        """Carry out the next effect; feed its answer, queueing the effects that follow."""
        effect = queue.popleft()
        answer: migration.MigrationInput
        if isinstance(effect, migration.FetchRedditPage):
            answer = await self._fetch(effect)
        elif isinstance(effect, migration.ImportMessages):
            answer = migration.MessagesImported(await self._import(effect))
        elif isinstance(effect, migration.WakeAt):
            # asyncio's monotonic clock may wake us a hair before the wall-clock deadline
            # (a Tick before it is a no-op, and the timer is set again below): add slack.
            delay = (effect.deadline - self._services.clock()).total_seconds()
            await asyncio.sleep(max(0.0, delay) + TIMER_SLACK_S)
            answer = migration.Tick()
        else:
            await self._perform_quick(state, [effect])
            return state
        async with self._lock(conversation_id):
            decision = migration.handle(state, answer, self._services.clock())
            queue.extend(await self._perform_quick(decision.state, decision.effects))
        deadline = migration.next_deadline(decision.state)
        if not queue and deadline is not None:
            queue.append(migration.WakeAt(deadline))  # never leave a timer unattended
        return decision.state

    async def _fetch(self, request: migration.FetchRedditPage) -> migration.MigrationInput:
        client = self._feature.client
        try:
            page = await self._access.call(
                request.as_user,
                lambda token: client.messages(
                    token, box=request.box.value, after=request.after, limit=request.limit
                ),
            )
        except RateLimited as exc:
            return migration.RedditRateLimited(exc.retry_at)
        except RedditLoginRequired as exc:
            return migration.RedditFetchFailed(exc.code, permanent=True)
        except Unavailable as exc:
            return migration.RedditFetchFailed(exc.code)
        except OmniNudgeError as exc:
            return migration.RedditFetchFailed(exc.code, permanent=True)
        return migration.RedditPageFetched.answering(request, page.messages, page.after)

    async def _import(self, request: migration.ImportMessages) -> int:
        fresh = await self._not_relayed_from_here(request)
        storage = self._services.storage
        ids = [self._services.new_id() for _ in fresh]
        messages = attrs.evolve(request, messages=tuple(fresh)).to_messages(ids)
        return await storage.messages.import_reddit(request.conversation_id, messages)

    async def _not_relayed_from_here(
        self, request: migration.ImportMessages
    ) -> list[RedditMessage]:
        """The Reddit messages minus those this server relayed (already stored, with the
        text the inviter typed; Reddit's copy may carry the invitation)."""
        invite_url = f"{self._services.settings.public_url}/invite/" + self._feature.invite_token(
            request.conversation_id
        )
        relayed: collections.Counter[str] = collections.Counter()
        for message in await self._history(request.conversation_id):
            if (
                message.origin is Origin.REDDIT
                and message.reddit_fullname is None
                and message.sender_id == request.inviter_id
                and message.text is not None
            ):
                relayed[message.text] += 1
                relayed[relay_body(message.text, invite_url)] += 1
        inviter = request.inviter_username.lower()
        fresh: list[RedditMessage] = []
        for reddit in request.messages:
            if (reddit.author or "").lower() == inviter and relayed[reddit.body] > 0:
                relayed[reddit.body] -= 1
                continue
            fresh.append(reddit)
        return fresh

    async def _history(self, conversation_id: str) -> list[Message]:
        found: list[Message] = []
        cursor: str | None = None
        for _ in range(HISTORY_SCAN_PAGES):
            page = await self._services.storage.messages.history(
                conversation_id, before=cursor, limit=100
            )
            found.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        return found

    async def _notify(self, conversation_id: str) -> None:
        conversation = await self._services.storage.conversations.get(conversation_id)
        payload = codec.default_codec().event_payload(
            wire.UpgradeFrame(
                seq=0, conversation_id=conversation_id, upgrade_state=UpgradeState.UPGRADED
            )
        )
        events = await self._services.storage.events.append(
            [
                NewEvent(user_id=user_id, kind=EventKind.UPGRADE, payload=payload)
                for user_id in conversation.participants
            ]
        )
        for event in events:
            await self._hub.notify_events(event.user_id, event.seq)
