"""SQLite stores for conversations, messages and the per-user event streams."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from omninudge_adapters.rows import Key, decode_cursor, encode_cursor
from omninudge_adapters.sqlite.database import SqliteDatabase, Transaction, chunked
from omninudge_adapters.sqlite.rows import (
    MESSAGE_COLUMNS,
    MESSAGE_INSERT,
    conversation_from_row,
    delivery_from_row,
    dump_json,
    from_micros,
    load_json,
    message_from_row,
    message_params,
    placeholders,
    to_micros,
    to_micros_or_none,
)
from omninudge_core.errors import NotFound
from omninudge_core.models import (
    Conversation,
    ConversationId,
    DeliveryRecord,
    EventKind,
    Message,
    MessageId,
    StreamEvent,
    UpgradeState,
    UserId,
    pair_key,
)
from omninudge_core.ports import Appended, ConversationView, NewEvent, Page

__all__ = ["SqliteConversationStore", "SqliteEventStore", "SqliteMessageStore"]

_CONVERSATION_COLUMNS = "id, user_a, user_b, kind, upgrade_state, created_at, last_message_at"

# Bump last_message_at (never backwards) and the listing key with it.
_BUMP_ACTIVITY = """
UPDATE conversations
SET last_message_at = CASE WHEN last_message_at IS NULL OR last_message_at < :at
                           THEN :at ELSE last_message_at END,
    activity_at = CASE WHEN last_message_at IS NULL OR last_message_at < :at
                       THEN :at ELSE last_message_at END
WHERE id = :id
"""

_UPSERT_DELIVERY = """
INSERT INTO deliveries (message_id, recipient_id, device_id, status, updated_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (message_id, recipient_id, device_id)
DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
"""


def _delivery_params(record: DeliveryRecord) -> tuple[object, ...]:
    return (
        record.message_id,
        record.recipient_id,
        record.device_id,
        record.status.value,
        to_micros(record.updated_at),
    )


async def _require_conversation(tx: Transaction, conversation_id: ConversationId) -> None:
    if await tx.fetchone("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)) is None:
        raise NotFound(f"no conversation {conversation_id}")


class SqliteConversationStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get_or_create(self, conversation: Conversation) -> tuple[Conversation, bool]:
        """The one conversation of the pair (created=False) or this one, inserted.
        Race-safe: the check and the insert share one write transaction. Raises
        Conflict when the id is taken by another pair."""
        user_a, user_b = conversation.participants

        async def work(tx: Transaction) -> tuple[Conversation, bool]:
            row = await tx.fetchone(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
                " WHERE user_a = ? AND user_b = ?",
                (user_a, user_b),
            )
            if row is not None:
                return conversation_from_row(row), False
            last = to_micros_or_none(conversation.last_message_at)
            created = to_micros(conversation.created_at)
            await tx.execute(
                f"INSERT INTO conversations ({_CONVERSATION_COLUMNS}, activity_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation.id,
                    user_a,
                    user_b,
                    conversation.kind.value,
                    conversation.upgrade_state.value,
                    created,
                    last,
                    created if last is None else last,
                ),
            )
            return conversation, True

        return await self._db.transaction(work)

    async def get(self, conversation_id: ConversationId) -> Conversation:
        """Raises NotFound."""
        row = await self._db.fetchone(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
        )
        if row is None:
            raise NotFound(f"no conversation {conversation_id}")
        return conversation_from_row(row)

    async def for_pair(self, a: UserId, b: UserId) -> Conversation | None:
        row = await self._db.fetchone(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE user_a = ? AND user_b = ?",
            pair_key(a, b),
        )
        return None if row is None else conversation_from_row(row)

    async def list_for_user(
        self, user_id: UserId, *, before: str | None, limit: int
    ) -> Page[ConversationView]:
        """Newest activity (last_message_at, else created_at) first, then id descending,
        with the user's unread count. Raises InvalidFrame(code="invalid_cursor")."""
        bound: Key | None = None if before is None else decode_cursor("c", before)
        keyset = "" if bound is None else "AND (c.activity_at, c.id) < (:at, :cid)"
        # Unread: the other participant's messages after the user's read mark.
        rows = await self._db.fetchall(
            f"""
            SELECT {", ".join("c." + col for col in _CONVERSATION_COLUMNS.split(", "))},
                   c.activity_at,
                   (SELECT count(*) FROM messages m
                    WHERE m.conversation_id = c.id AND m.sender_id != :user
                      AND (rm.sent_at IS NULL OR (m.sent_at, m.id) > (rm.sent_at, rm.message_id))
                   ) AS unread
            FROM conversations c
            LEFT JOIN read_marks rm ON rm.conversation_id = c.id AND rm.user_id = :user
            WHERE (c.user_a = :user OR c.user_b = :user) {keyset}
            ORDER BY c.activity_at DESC, c.id DESC
            LIMIT :limit
            """,
            {
                "user": user_id,
                "at": None if bound is None else bound[0],
                "cid": None if bound is None else bound[1],
                "limit": limit + 1,
            },
        )
        views = tuple(
            ConversationView(conversation=conversation_from_row(row), unread=row["unread"])
            for row in rows[:limit]
        )
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor("c", (last["activity_at"], last["id"]))
        return Page(items=views, next_cursor=next_cursor)

    async def set_upgrade_state(
        self, conversation_id: ConversationId, state: UpgradeState
    ) -> Conversation:
        """Raises NotFound."""

        async def work(tx: Transaction) -> Conversation:
            row = await tx.fetchone(
                f"UPDATE conversations SET upgrade_state = ? WHERE id = ?"
                f" RETURNING {_CONVERSATION_COLUMNS}",
                (state.value, conversation_id),
            )
            if row is None:
                raise NotFound(f"no conversation {conversation_id}")
            return conversation_from_row(row)

        return await self._db.transaction(work)


async def _append_events(
    tx: Transaction,
    events: Sequence[NewEvent],
    created_at: datetime,
    known: Sequence[Message] = (),
) -> list[StreamEvent]:
    """Append events in the caller's transaction: each takes its user's next seq
    (user_streams.last_seq + 1), so seqs are gap-free per user. ``known``: messages
    the caller has in hand (just inserted), which need no reading back."""
    messages: dict[MessageId, Message] = {message.id: message for message in known}
    message_ids = list(
        {e.message_id for e in events if e.message_id is not None and e.message_id not in messages}
    )
    for chunk in chunked(message_ids):
        rows = await tx.fetchall(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id IN ({placeholders(len(chunk))})",
            chunk,
        )
        messages.update((row["m_id"], message_from_row(row)) for row in rows)
    missing = [mid for mid in message_ids if mid not in messages]
    if missing:
        raise NotFound(f"no message {missing[0]}")
    created_micros = to_micros(created_at)
    appended = []
    for event in events:
        row = await tx.fetchone(
            "INSERT INTO user_streams (user_id, last_seq) VALUES (?, 1)"
            " ON CONFLICT (user_id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
            (event.user_id,),
        )
        assert row is not None  # RETURNING always yields the upserted row
        seq = int(row["last_seq"])
        payload = None if event.payload is None else dump_json(event.payload)
        await tx.execute(
            "INSERT INTO events (user_id, seq, kind, created_at, message_id, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (event.user_id, seq, event.kind.value, created_micros, event.message_id, payload),
        )
        appended.append(
            StreamEvent(
                user_id=event.user_id,
                seq=seq,
                kind=event.kind,
                created_at=from_micros(created_micros),
                message=None if event.message_id is None else messages[event.message_id],
                payload=None if payload is None else load_json(payload),
            )
        )
    return appended


class SqliteMessageStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def append(
        self,
        message: Message,
        deliveries: Sequence[DeliveryRecord],
        notify: Sequence[UserId],
    ) -> Appended:
        """In one transaction: the message, its deliveries, a MESSAGE event per notified
        user, the conversation's last_message_at. A replayed (sender_id, client_msg_id)
        returns the original with created=False and writes nothing. Returns after the
        commit (durable per the ``synchronous`` setting). Raises NotFound for an unknown
        conversation, Conflict for a taken message id or Reddit fullname."""

        async def work(tx: Transaction) -> Appended:
            row = await tx.fetchone(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m"
                " WHERE m.sender_id = ? AND m.client_msg_id = ?",
                (message.sender_id, message.client_msg_id),
            )
            if row is not None:
                return Appended(message=message_from_row(row), created=False)
            await _require_conversation(tx, message.conversation_id)
            await tx.execute(MESSAGE_INSERT, message_params(message))
            await tx.executemany(_UPSERT_DELIVERY, [_delivery_params(d) for d in deliveries])
            events = await _append_events(
                tx,
                [
                    NewEvent(user_id=uid, kind=EventKind.MESSAGE, message_id=message.id)
                    for uid in notify
                ],
                self._db.clock(),
                known=[message],
            )
            await tx.execute(
                _BUMP_ACTIVITY, {"at": to_micros(message.sent_at), "id": message.conversation_id}
            )
            return Appended(message=message, created=True, events=tuple(events))

        return await self._db.transaction(work)

    async def get(self, message_id: MessageId) -> Message:
        """Raises NotFound."""
        row = await self._db.fetchone(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?", (message_id,)
        )
        if row is None:
            raise NotFound(f"no message {message_id}")
        return message_from_row(row)

    async def history(
        self, conversation_id: ConversationId, *, before: str | None, limit: int
    ) -> Page[Message]:
        """Newest first by (sent_at, id). Raises InvalidFrame(code="invalid_cursor")."""
        bound: Key | None = None if before is None else decode_cursor("m", before)
        keyset = "" if bound is None else "AND (m.sent_at, m.id) < (:at, :mid)"
        rows = await self._db.fetchall(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m"
            f" WHERE m.conversation_id = :conversation {keyset}"
            " ORDER BY m.sent_at DESC, m.id DESC LIMIT :limit",
            {
                "conversation": conversation_id,
                "at": None if bound is None else bound[0],
                "mid": None if bound is None else bound[1],
                "limit": limit + 1,
            },
        )
        messages = tuple(message_from_row(row) for row in rows[:limit])
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor("m", (last["m_sent_at"], last["m_id"]))
        return Page(items=messages, next_cursor=next_cursor)

    async def import_reddit(
        self, conversation_id: ConversationId, messages: Sequence[Message]
    ) -> int:
        """Insert Reddit-origin messages not already in the conversation (by
        reddit_fullname), in one transaction; returns how many were new. Raises
        NotFound for an unknown conversation, Conflict for a taken id or client_msg_id."""
        for message in messages:
            if message.reddit_fullname is None or message.conversation_id != conversation_id:
                raise ValueError(
                    "an imported message needs a reddit_fullname and this conversation_id"
                )

        async def work(tx: Transaction) -> int:
            await _require_conversation(tx, conversation_id)
            inserted = 0
            newest: int | None = None
            for message in messages:
                # Only a fullname already present is skipped; any other clash is a Conflict.
                added = await tx.execute(
                    MESSAGE_INSERT + " ON CONFLICT (conversation_id, reddit_fullname) DO NOTHING",
                    message_params(message),
                )
                if added:
                    inserted += 1
                    sent = to_micros(message.sent_at)
                    newest = sent if newest is None else max(newest, sent)
            if newest is not None:
                await tx.execute(_BUMP_ACTIVITY, {"at": newest, "id": conversation_id})
            return inserted

        return await self._db.transaction(work)

    async def set_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        """Upsert by (message_id, recipient_id, device_id). Raises NotFound for an
        unknown message (and writes nothing)."""

        async def work(tx: Transaction) -> None:
            message_ids = list({record.message_id for record in records})
            for chunk in chunked(message_ids):
                rows = await tx.fetchall(
                    f"SELECT id FROM messages WHERE id IN ({placeholders(len(chunk))})", chunk
                )
                if len(rows) != len(chunk):
                    found = {row["id"] for row in rows}
                    raise NotFound(f"no message {next(m for m in chunk if m not in found)}")
            await tx.executemany(_UPSERT_DELIVERY, [_delivery_params(r) for r in records])

        await self._db.transaction(work)

    async def deliveries(self, message_id: MessageId) -> list[DeliveryRecord]:
        """By (recipient_id, device_id); empty for an unknown message."""
        rows = await self._db.fetchall(
            "SELECT message_id, recipient_id, device_id, status, updated_at FROM deliveries"
            " WHERE message_id = ? ORDER BY recipient_id, device_id",
            (message_id,),
        )
        return [delivery_from_row(row) for row in rows]

    async def deliveries_many(
        self, message_ids: Sequence[MessageId]
    ) -> dict[MessageId, list[DeliveryRecord]]:
        found: dict[MessageId, list[DeliveryRecord]] = {m: [] for m in message_ids}
        for chunk in chunked(list(found)):
            rows = await self._db.fetchall(
                "SELECT message_id, recipient_id, device_id, status, updated_at FROM deliveries"
                f" WHERE message_id IN ({placeholders(len(chunk))})"
                " ORDER BY message_id, recipient_id, device_id",
                chunk,
            )
            for row in rows:
                record = delivery_from_row(row)
                found[record.message_id].append(record)
        return found

    async def mark_read(
        self, conversation_id: ConversationId, user_id: UserId, up_to: MessageId
    ) -> list[Message]:
        """Move the read mark forward (never back); return the other participant's
        messages newly covered, oldest first. Raises NotFound if ``up_to`` is not a
        message of the conversation."""

        async def work(tx: Transaction) -> list[Message]:
            target = await tx.fetchone(
                "SELECT sent_at, id FROM messages WHERE id = ? AND conversation_id = ?",
                (up_to, conversation_id),
            )
            if target is None:
                raise NotFound(f"no message {up_to} in conversation {conversation_id}")
            new_mark: Key = (target["sent_at"], target["id"])
            old = await tx.fetchone(
                "SELECT sent_at, message_id FROM read_marks"
                " WHERE conversation_id = ? AND user_id = ?",
                (conversation_id, user_id),
            )
            old_mark: Key | None = None if old is None else (old["sent_at"], old["message_id"])
            if old_mark is not None and old_mark >= new_mark:
                return []
            await tx.execute(
                "INSERT INTO read_marks (conversation_id, user_id, sent_at, message_id)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (conversation_id, user_id)"
                " DO UPDATE SET sent_at = excluded.sent_at, message_id = excluded.message_id",
                (conversation_id, user_id, *new_mark),
            )
            after = "" if old_mark is None else "AND (m.sent_at, m.id) > (:old_at, :old_id)"
            rows = await tx.fetchall(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m"
                " WHERE m.conversation_id = :conversation AND m.sender_id != :user"
                f" AND (m.sent_at, m.id) <= (:new_at, :new_id) {after}"
                " ORDER BY m.sent_at, m.id",
                {
                    "conversation": conversation_id,
                    "user": user_id,
                    "new_at": new_mark[0],
                    "new_id": new_mark[1],
                    "old_at": None if old_mark is None else old_mark[0],
                    "old_id": None if old_mark is None else old_mark[1],
                },
            )
            return [message_from_row(row) for row in rows]

        return await self._db.transaction(work)


class SqliteEventStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def append(self, events: Sequence[NewEvent]) -> list[StreamEvent]:
        """Append all or nothing; seq per user, gap-free. Raises NotFound for an
        unknown message_id."""

        async def work(tx: Transaction) -> list[StreamEvent]:
            return await _append_events(tx, events, self._db.clock())

        return await self._db.transaction(work)

    async def read(self, user_id: UserId, *, after: int, limit: int) -> list[StreamEvent]:
        """Events with seq > after, ascending, MESSAGE events with their message."""
        rows = await self._db.fetchall(
            f"SELECT e.user_id, e.seq, e.kind, e.created_at, e.message_id, e.payload,"
            f" {MESSAGE_COLUMNS}"
            " FROM events e LEFT JOIN messages m ON m.id = e.message_id"
            " WHERE e.user_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
            (user_id, after, limit),
        )
        return [
            StreamEvent(
                user_id=row["user_id"],
                seq=row["seq"],
                kind=EventKind(row["kind"]),
                created_at=from_micros(row["created_at"]),
                message=None if row["message_id"] is None else message_from_row(row),
                payload=None if row["payload"] is None else load_json(row["payload"]),
            )
            for row in rows
        ]

    async def last_seq(self, user_id: UserId) -> int:
        """0 for a user with no events."""
        row = await self._db.fetchone(
            "SELECT last_seq FROM user_streams WHERE user_id = ?", (user_id,)
        )
        return 0 if row is None else int(row["last_seq"])
