"""In-memory relational storage: every store of ``omninudge_core.ports.Storage``.

A real product for single-process embedded use (and the reference the contract suite
holds SQLite and PostgreSQL to): the semantics are those of the SQL adapters, to the
cursor and the ordering. Writes take one ``asyncio.Lock`` so a multi-step write is
atomic even if a future change adds an ``await`` inside it; reads never await while
they look at the data, so they see a consistent snapshot.

JSON-shaped values (event payloads, migration states, settings) are stored encoded and
decoded on read, like a database would: a caller mutating what it passed in or got
back never changes the stored value.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import attrs

from omninudge_adapters.rows import decode_cursor, encode_cursor
from omninudge_core.errors import Conflict, NotFound
from omninudge_core.migration import is_finished
from omninudge_core.models import (
    Block,
    Conversation,
    ConversationId,
    DeliveryRecord,
    Device,
    DeviceId,
    EventKind,
    Instant,
    Invitation,
    Media,
    MediaId,
    Message,
    MessageId,
    RedditTokens,
    StreamEvent,
    UpgradeState,
    User,
    UserId,
    pair_key,
)
from omninudge_core.ports import Appended, ConversationView, NewEvent, Page

__all__ = [
    "MemoryBlockStore",
    "MemoryConversationStore",
    "MemoryDeviceStore",
    "MemoryEventStore",
    "MemoryInvitationStore",
    "MemoryMediaStore",
    "MemoryMessageStore",
    "MemoryMigrationStore",
    "MemoryRedditTokenStore",
    "MemoryStorage",
    "MemoryUserStore",
    "open_memory_storage",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Sort keys are (epoch microseconds, id): the same keyset the SQL adapters page on.
_Key = tuple[int, str]


def _micros(at: Instant) -> int:
    return (at - _EPOCH) // _MICROSECOND


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _json_copy(value: Mapping[str, object]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@attrs.define
class _Data:
    """Every table, shared by the stores of one ``MemoryStorage``."""

    lock: asyncio.Lock
    clock: Callable[[], datetime]
    users: dict[UserId, User] = attrs.Factory(dict)
    user_by_name: dict[str, UserId] = attrs.Factory(dict)
    user_by_reddit_id: dict[str, UserId] = attrs.Factory(dict)
    devices: dict[DeviceId, Device] = attrs.Factory(dict)
    blocks: dict[tuple[UserId, UserId], Block] = attrs.Factory(dict)
    conversations: dict[ConversationId, Conversation] = attrs.Factory(dict)
    conversation_by_pair: dict[tuple[UserId, UserId], ConversationId] = attrs.Factory(dict)
    conversations_of_user: dict[UserId, set[ConversationId]] = attrs.Factory(dict)
    messages: dict[MessageId, Message] = attrs.Factory(dict)
    message_by_client_id: dict[tuple[UserId, str], MessageId] = attrs.Factory(dict)
    message_by_fullname: dict[tuple[ConversationId, str], MessageId] = attrs.Factory(dict)
    # Per conversation, message keys kept sorted ascending (bisect) for keyset pages.
    message_keys: dict[ConversationId, list[_Key]] = attrs.Factory(dict)
    deliveries: dict[MessageId, dict[tuple[UserId, DeviceId], DeliveryRecord]] = attrs.Factory(dict)
    read_marks: dict[tuple[ConversationId, UserId], _Key] = attrs.Factory(dict)
    # Per user, the stream in seq order: seq == index + 1, so it is gap-free by construction.
    events: dict[UserId, list[tuple[EventKind, datetime, MessageId | None, str | None]]] = (
        attrs.Factory(dict)
    )
    media: dict[MediaId, Media] = attrs.Factory(dict)
    media_shares: dict[MediaId, set[ConversationId]] = attrs.Factory(dict)
    invitations: dict[str, Invitation] = attrs.Factory(dict)
    migrations: dict[ConversationId, str] = attrs.Factory(dict)
    reddit_tokens: dict[UserId, RedditTokens] = attrs.Factory(dict)

    def conversation(self, conversation_id: ConversationId) -> Conversation:
        try:
            return self.conversations[conversation_id]
        except KeyError:
            raise NotFound(f"no conversation {conversation_id}") from None

    def insert_message(self, message: Message) -> None:
        """Insert one message and bump its conversation's activity; raises Conflict."""
        if message.id in self.messages:
            raise Conflict(f"message {message.id} exists")
        fullname = message.reddit_fullname
        if fullname is not None and (message.conversation_id, fullname) in (
            self.message_by_fullname
        ):
            raise Conflict(f"reddit message {fullname} exists in the conversation")
        conversation = self.conversation(message.conversation_id)
        self.messages[message.id] = message
        self.message_by_client_id[(message.sender_id, message.client_msg_id)] = message.id
        if fullname is not None:
            self.message_by_fullname[(message.conversation_id, fullname)] = message.id
        keys = self.message_keys.setdefault(message.conversation_id, [])
        bisect.insort(keys, (_micros(message.sent_at), message.id))
        last = conversation.last_message_at
        if last is None or message.sent_at > last:
            self.conversations[conversation.id] = attrs.evolve(
                conversation, last_message_at=message.sent_at
            )

    def append_event(self, event: NewEvent, created_at: datetime) -> StreamEvent:
        if event.message_id is not None and event.message_id not in self.messages:
            raise NotFound(f"no message {event.message_id}")
        payload = None if event.payload is None else _json_copy(event.payload)
        stream = self.events.setdefault(event.user_id, [])
        stream.append((event.kind, created_at, event.message_id, payload))
        return self.stream_event(event.user_id, len(stream))

    def stream_event(self, user_id: UserId, seq: int) -> StreamEvent:
        kind, created_at, message_id, payload = self.events[user_id][seq - 1]
        return StreamEvent(
            user_id=user_id,
            seq=seq,
            kind=kind,
            created_at=created_at,
            message=None if message_id is None else self.messages[message_id],
            payload=None if payload is None else json.loads(payload),
        )


class MemoryUserStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def create(self, user: User) -> User:
        """Insert a user. Raises Conflict on a taken id, username or reddit_id."""
        async with self._data.lock:
            if user.id in self._data.users:
                raise Conflict(f"user {user.id} exists")
            self._check_unique(user)
            self._index(user)
            return user

    async def get(self, user_id: UserId) -> User:
        """Raises NotFound."""
        try:
            return self._data.users[user_id]
        except KeyError:
            raise NotFound(f"no user {user_id}") from None

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        users = self._data.users
        return {uid: users[uid] for uid in user_ids if uid in users}

    async def by_username(self, username: str) -> User | None:
        user_id = self._data.user_by_name.get(username.lower())
        return None if user_id is None else self._data.users[user_id]

    async def by_usernames(self, usernames: Sequence[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for name in usernames:
            user_id = self._data.user_by_name.get(name.lower())
            if user_id is not None:
                found[name.lower()] = self._data.users[user_id]
        return found

    async def by_reddit_id(self, reddit_id: str) -> User | None:
        user_id = self._data.user_by_reddit_id.get(reddit_id)
        return None if user_id is None else self._data.users[user_id]

    async def update(self, user: User) -> User:
        """Replace username, reddit_id, on_platform and settings (created_at is kept).
        Raises NotFound, or Conflict on a taken username/reddit_id."""
        async with self._data.lock:
            old = await self.get(user.id)
            self._check_unique(user)
            del self._data.user_by_name[old.username.lower()]
            if old.reddit_id is not None:
                del self._data.user_by_reddit_id[old.reddit_id]
            new = attrs.evolve(user, created_at=old.created_at)
            self._index(new)
            return new

    def _check_unique(self, user: User) -> None:
        holder = self._data.user_by_name.get(user.username.lower())
        if holder is not None and holder != user.id:
            raise Conflict(f"username {user.username} is taken")
        if user.reddit_id is not None:
            holder = self._data.user_by_reddit_id.get(user.reddit_id)
            if holder is not None and holder != user.id:
                raise Conflict(f"reddit id {user.reddit_id} is taken")

    def _index(self, user: User) -> None:
        self._data.users[user.id] = user
        self._data.user_by_name[user.username.lower()] = user.id
        if user.reddit_id is not None:
            self._data.user_by_reddit_id[user.reddit_id] = user.id


class MemoryDeviceStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def put(self, device: Device) -> tuple[Device, bool]:
        """Register a device; the same keys again is a no-op (created=False). Raises
        Conflict when the id exists with other keys or belongs to another user."""
        async with self._data.lock:
            existing = self._data.devices.get(device.device_id)
            if existing is None:
                stored = attrs.evolve(
                    device, public_key=dict(device.public_key), signing_key=dict(device.signing_key)
                )
                self._data.devices[device.device_id] = stored
                return stored, True
            if (
                existing.user_id != device.user_id
                or dict(existing.public_key) != dict(device.public_key)
                or dict(existing.signing_key) != dict(device.signing_key)
            ):
                raise Conflict(f"device {device.device_id} is registered with other keys")
            return existing, False

    async def for_user(self, user_id: UserId) -> list[Device]:
        """Oldest first."""
        return (await self.for_users([user_id]))[user_id]

    async def for_users(self, user_ids: Sequence[UserId]) -> dict[UserId, list[Device]]:
        found: dict[UserId, list[Device]] = {uid: [] for uid in user_ids}
        for device in self._data.devices.values():
            if device.user_id in found:
                found[device.user_id].append(device)
        for devices in found.values():
            devices.sort(key=lambda d: (_micros(d.created_at), d.device_id))
        return found

    async def delete(self, user_id: UserId, device_id: DeviceId) -> None:
        """Raises NotFound if the user has no such device."""
        async with self._data.lock:
            existing = self._data.devices.get(device_id)
            if existing is None or existing.user_id != user_id:
                raise NotFound(f"user {user_id} has no device {device_id}")
            del self._data.devices[device_id]


class MemoryBlockStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def put(self, block: Block) -> None:
        """Idempotent: blocking again keeps the first block."""
        async with self._data.lock:
            self._data.blocks.setdefault((block.blocker_id, block.blocked_id), block)

    async def delete(self, blocker_id: UserId, blocked_id: UserId) -> None:
        """Idempotent."""
        async with self._data.lock:
            self._data.blocks.pop((blocker_id, blocked_id), None)

    async def blocked_by(self, blocker_id: UserId) -> list[Block]:
        """Oldest first."""
        blocks = [b for b in self._data.blocks.values() if b.blocker_id == blocker_id]
        return sorted(blocks, key=lambda b: (_micros(b.created_at), b.blocked_id))

    async def between(self, a: UserId, b: UserId) -> bool:
        return (a, b) in self._data.blocks or (b, a) in self._data.blocks


def _activity_key(conversation: Conversation) -> _Key:
    at = conversation.last_message_at or conversation.created_at
    return (_micros(at), conversation.id)


class MemoryConversationStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def get_or_create(self, conversation: Conversation) -> tuple[Conversation, bool]:
        """The one conversation of the pair (created=False) or this one, inserted.
        Raises Conflict when the id is taken by another pair."""
        async with self._data.lock:
            existing = self._data.conversation_by_pair.get(conversation.participants)
            if existing is not None:
                return self._data.conversations[existing], False
            if conversation.id in self._data.conversations:
                raise Conflict(f"conversation {conversation.id} exists")
            self._data.conversations[conversation.id] = conversation
            self._data.conversation_by_pair[conversation.participants] = conversation.id
            for user_id in conversation.participants:
                self._data.conversations_of_user.setdefault(user_id, set()).add(conversation.id)
            return conversation, True

    async def get(self, conversation_id: ConversationId) -> Conversation:
        """Raises NotFound."""
        return self._data.conversation(conversation_id)

    async def for_pair(self, a: UserId, b: UserId) -> Conversation | None:
        conversation_id = self._data.conversation_by_pair.get(pair_key(a, b))
        return None if conversation_id is None else self._data.conversations[conversation_id]

    async def list_for_user(
        self, user_id: UserId, *, before: str | None, limit: int
    ) -> Page[ConversationView]:
        """Newest activity (last_message_at, else created_at) first, then id descending.
        Raises InvalidFrame(code="invalid_cursor") for a bad cursor."""
        bound = None if before is None else decode_cursor("c", before)
        ids = self._data.conversations_of_user.get(user_id, set())
        keyed = [(_activity_key(self._data.conversations[cid]), cid) for cid in ids]
        keyed = [kc for kc in keyed if bound is None or kc[0] < bound]
        keyed.sort(reverse=True)
        page = keyed[: limit + 1]
        views = tuple(
            ConversationView(
                conversation=self._data.conversations[cid], unread=self._unread(cid, user_id)
            )
            for _, cid in page[:limit]
        )
        next_cursor = encode_cursor("c", page[limit - 1][0]) if len(page) > limit else None
        return Page(items=views, next_cursor=next_cursor)

    def _unread(self, conversation_id: ConversationId, user_id: UserId) -> int:
        keys = self._data.message_keys.get(conversation_id, [])
        mark = self._data.read_marks.get((conversation_id, user_id))
        start = 0 if mark is None else bisect.bisect_right(keys, mark)
        messages = self._data.messages
        return sum(1 for key in keys[start:] if messages[key[1]].sender_id != user_id)

    async def set_upgrade_state(
        self, conversation_id: ConversationId, state: UpgradeState
    ) -> Conversation:
        """Raises NotFound."""
        async with self._data.lock:
            conversation = attrs.evolve(
                self._data.conversation(conversation_id), upgrade_state=state
            )
            self._data.conversations[conversation_id] = conversation
            return conversation


class MemoryMessageStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def append(
        self,
        message: Message,
        deliveries: Sequence[DeliveryRecord],
        notify: Sequence[UserId],
    ) -> Appended:
        """Insert the message, its deliveries and a MESSAGE event per notified user,
        all or nothing. A replayed (sender_id, client_msg_id) returns the original with
        created=False. Raises NotFound for an unknown conversation, Conflict for a taken
        message id or Reddit fullname."""
        data = self._data
        async with data.lock:
            original = data.message_by_client_id.get((message.sender_id, message.client_msg_id))
            if original is not None:
                return Appended(message=data.messages[original], created=False)
            data.insert_message(message)  # validates before anything else is written
            rows = data.deliveries.setdefault(message.id, {})
            for record in deliveries:
                rows[(record.recipient_id, record.device_id)] = record
            created_at = data.clock()
            events = tuple(
                data.append_event(
                    NewEvent(user_id=uid, kind=EventKind.MESSAGE, message_id=message.id),
                    created_at,
                )
                for uid in notify
            )
            return Appended(message=message, created=True, events=events)

    async def get(self, message_id: MessageId) -> Message:
        """Raises NotFound."""
        try:
            return self._data.messages[message_id]
        except KeyError:
            raise NotFound(f"no message {message_id}") from None

    async def history(
        self, conversation_id: ConversationId, *, before: str | None, limit: int
    ) -> Page[Message]:
        """Newest first by (sent_at, id). Raises InvalidFrame(code="invalid_cursor")."""
        bound = None if before is None else decode_cursor("m", before)
        keys = self._data.message_keys.get(conversation_id, [])
        end = len(keys) if bound is None else bisect.bisect_left(keys, bound)
        page = keys[max(0, end - limit - 1) : end][::-1]
        messages = tuple(self._data.messages[key[1]] for key in page[:limit])
        next_cursor = encode_cursor("m", page[limit - 1]) if len(page) > limit else None
        return Page(items=messages, next_cursor=next_cursor)

    async def import_reddit(
        self, conversation_id: ConversationId, messages: Sequence[Message]
    ) -> int:
        """Insert Reddit-origin messages not already in the conversation (by
        reddit_fullname), all or nothing; returns how many were new. Raises NotFound
        for an unknown conversation, Conflict for a taken id or client_msg_id."""
        data = self._data
        async with data.lock:
            data.conversation(conversation_id)
            fresh: list[Message] = []
            seen: set[str] = set()
            for message in messages:
                fullname = _import_fullname(conversation_id, message)
                if fullname in seen or (conversation_id, fullname) in data.message_by_fullname:
                    continue
                seen.add(fullname)
                if message.id in data.messages or any(m.id == message.id for m in fresh):
                    raise Conflict(f"message {message.id} exists")
                client_key = (message.sender_id, message.client_msg_id)
                if client_key in data.message_by_client_id or any(
                    (m.sender_id, m.client_msg_id) == client_key for m in fresh
                ):
                    raise Conflict(f"client_msg_id {message.client_msg_id} exists")
                fresh.append(message)
            for message in fresh:
                data.insert_message(message)
            return len(fresh)

    async def set_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        """Upsert by (message_id, recipient_id, device_id). Raises NotFound for an
        unknown message (and writes nothing)."""
        async with self._data.lock:
            for record in records:
                await self.get(record.message_id)
            for record in records:
                rows = self._data.deliveries.setdefault(record.message_id, {})
                rows[(record.recipient_id, record.device_id)] = record

    async def deliveries(self, message_id: MessageId) -> list[DeliveryRecord]:
        """By (recipient_id, device_id); empty for an unknown message."""
        rows = self._data.deliveries.get(message_id, {})
        return [rows[key] for key in sorted(rows)]

    async def deliveries_many(
        self, message_ids: Sequence[MessageId]
    ) -> dict[MessageId, list[DeliveryRecord]]:
        return {message_id: await self.deliveries(message_id) for message_id in message_ids}

    async def mark_read(
        self, conversation_id: ConversationId, user_id: UserId, up_to: MessageId
    ) -> list[Message]:
        """Move the read mark forward (never back); return the other participant's
        messages newly covered, oldest first. Raises NotFound if ``up_to`` is not a
        message of the conversation."""
        data = self._data
        async with data.lock:
            target = data.messages.get(up_to)
            if target is None or target.conversation_id != conversation_id:
                raise NotFound(f"no message {up_to} in conversation {conversation_id}")
            new_mark = (_micros(target.sent_at), target.id)
            old_mark = data.read_marks.get((conversation_id, user_id))
            if old_mark is not None and old_mark >= new_mark:
                return []
            data.read_marks[(conversation_id, user_id)] = new_mark
            keys = data.message_keys.get(conversation_id, [])
            start = 0 if old_mark is None else bisect.bisect_right(keys, old_mark)
            end = bisect.bisect_right(keys, new_mark)
            covered = (data.messages[key[1]] for key in keys[start:end])
            return [m for m in covered if m.sender_id != user_id]


def _import_fullname(conversation_id: ConversationId, message: Message) -> str:
    if message.reddit_fullname is None or message.conversation_id != conversation_id:
        raise ValueError("an imported message needs a reddit_fullname and this conversation_id")
    return message.reddit_fullname


class MemoryEventStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def append(self, events: Sequence[NewEvent]) -> list[StreamEvent]:
        """Append all or nothing; seq per user, gap-free. Raises NotFound for an
        unknown message_id."""
        data = self._data
        async with data.lock:
            for event in events:
                if event.message_id is not None and event.message_id not in data.messages:
                    raise NotFound(f"no message {event.message_id}")
            created_at = data.clock()
            return [data.append_event(event, created_at) for event in events]

    async def read(self, user_id: UserId, *, after: int, limit: int) -> list[StreamEvent]:
        """Events with seq > after, ascending, MESSAGE events with their message."""
        stream_length = len(self._data.events.get(user_id, []))
        first = max(after, 0) + 1
        last = min(stream_length, first + limit - 1)
        return [self._data.stream_event(user_id, seq) for seq in range(first, last + 1)]

    async def last_seq(self, user_id: UserId) -> int:
        return len(self._data.events.get(user_id, []))


class MemoryMediaStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def create(self, media: Media) -> None:
        """Raises Conflict on a taken id."""
        async with self._data.lock:
            if media.id in self._data.media:
                raise Conflict(f"media {media.id} exists")
            self._data.media[media.id] = media

    async def get(self, media_id: MediaId) -> Media:
        """Raises NotFound."""
        try:
            return self._data.media[media_id]
        except KeyError:
            raise NotFound(f"no media {media_id}") from None

    async def delete(self, media_id: MediaId) -> None:
        """Idempotent; forgets the shares too."""
        async with self._data.lock:
            self._data.media.pop(media_id, None)
            self._data.media_shares.pop(media_id, None)

    async def share(self, media_id: MediaId, conversation_id: ConversationId) -> None:
        """Idempotent. Raises NotFound for an unknown media or conversation."""
        async with self._data.lock:
            await self.get(media_id)
            self._data.conversation(conversation_id)
            self._data.media_shares.setdefault(media_id, set()).add(conversation_id)

    async def can_access(self, media_id: MediaId, user_id: UserId) -> bool:
        """The uploader, and participants of a conversation it was shared in."""
        media = self._data.media.get(media_id)
        if media is None:
            return False
        if media.owner_id == user_id:
            return True
        shared_in = self._data.media_shares.get(media_id, set())
        return any(self._data.conversations[cid].has(user_id) for cid in shared_in)


class MemoryInvitationStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def create(self, invitation: Invitation) -> None:
        """Raises Conflict on a taken token."""
        async with self._data.lock:
            if invitation.token in self._data.invitations:
                raise Conflict("invitation token exists")
            self._data.invitations[invitation.token] = invitation

    async def get(self, token: str) -> Invitation:
        """Raises NotFound."""
        try:
            return self._data.invitations[token]
        except KeyError:
            raise NotFound("no such invitation") from None

    async def accept(self, token: str, at: Instant) -> Invitation:
        """Set accepted_at once; later calls return the first acceptance. Raises NotFound."""
        async with self._data.lock:
            invitation = await self.get(token)
            if invitation.accepted_at is None:
                invitation = attrs.evolve(invitation, accepted_at=at)
                self._data.invitations[token] = invitation
            return invitation


class MemoryMigrationStore:
    """Whether a saved state is final is the core's call (``migration.is_finished``);
    the conversation's upgrade_state does not decide, because the shell updates it
    *before* the final state is persisted."""

    def __init__(self, data: _Data) -> None:
        self._data = data

    async def save(self, conversation_id: ConversationId, state: Mapping[str, object]) -> None:
        """Upsert. Raises NotFound for an unknown conversation."""
        async with self._data.lock:
            self._data.conversation(conversation_id)
            self._data.migrations[conversation_id] = _json_copy(state)

    async def load(self, conversation_id: ConversationId) -> Mapping[str, object] | None:
        encoded = self._data.migrations.get(conversation_id)
        return None if encoded is None else dict(json.loads(encoded))

    async def unfinished(self) -> list[ConversationId]:
        """Sorted by conversation id."""
        return sorted(
            cid
            for cid, encoded in self._data.migrations.items()
            if not is_finished(json.loads(encoded))
        )


class MemoryRedditTokenStore:
    def __init__(self, data: _Data) -> None:
        self._data = data

    async def put(self, tokens: RedditTokens) -> None:
        """Upsert."""
        async with self._data.lock:
            self._data.reddit_tokens[tokens.user_id] = tokens

    async def get(self, user_id: UserId) -> RedditTokens | None:
        return self._data.reddit_tokens.get(user_id)

    async def delete(self, user_id: UserId) -> None:
        """Idempotent."""
        async with self._data.lock:
            self._data.reddit_tokens.pop(user_id, None)


class MemoryStorage:
    """Every relational store, in process memory. Build it with ``open_memory_storage``."""

    def __init__(self, *, clock: Callable[[], datetime] = _utc_now) -> None:
        data = _Data(lock=asyncio.Lock(), clock=clock)
        self.users = MemoryUserStore(data)
        self.devices = MemoryDeviceStore(data)
        self.blocks = MemoryBlockStore(data)
        self.conversations = MemoryConversationStore(data)
        self.messages = MemoryMessageStore(data)
        self.events = MemoryEventStore(data)
        self.media = MemoryMediaStore(data)
        self.invitations = MemoryInvitationStore(data)
        self.migrations = MemoryMigrationStore(data)
        self.reddit_tokens = MemoryRedditTokenStore(data)

    async def ping(self) -> None:
        """Always answers: the data lives in this process."""


@asynccontextmanager
async def open_memory_storage(
    *, clock: Callable[[], datetime] = _utc_now
) -> AsyncIterator[MemoryStorage]:
    """An empty in-memory Storage; ``clock`` stamps event ``created_at``."""
    yield MemoryStorage(clock=clock)
