"""Messages, deliveries and read marks on PostgreSQL (ports.MessageStore).

``append`` is one SQL statement, hence one transaction in one round trip (the pool's
connections are autocommit). Its data-modifying CTEs run in this order:

1. insert the message, ON CONFLICT (sender_id, client_msg_id) DO NOTHING - a replay
   inserts nothing, so every later step (which joins on it) writes nothing either;
2. bump ``user_streams.last_seq`` of each notified user by the number of events it
   gets with INSERT .. ON CONFLICT DO UPDATE .. RETURNING, rows fed in sorted user_id
   order. The row lock, held until commit, makes seq gap-free and strictly
   increasing per user; the sorted order means two appends never wait on each
   other's streams in opposite orders;
3. insert one MESSAGE event per entry of ``notify`` at the seqs just taken;
4. (after the main query) insert the delivery rows and move the conversation's
   last_message_at forward - the conversation row is locked last, after the
   streams, so lock order is the same for every writer.

Group commit (on by default): the statement goes through ``Database.write``, so
appends (and the other hot writes: delivery rows, receipt events) that arrive while a
batch is being written go together in the next one - one transaction, one round trip,
one commit, however many messages it holds; every caller returns only after that
commit, and a batch that fails is retried statement by statement (see ``batching``).
``group_commit=False``: one transaction per append.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from omninudge_adapters.postgres.arrays import TextArray, TimestampArray
from omninudge_adapters.postgres.cursor import decode_cursor, encode_cursor
from omninudge_adapters.postgres.db import Database
from omninudge_adapters.postgres.rows import (
    DELIVERY_COLUMNS,
    MESSAGE_COLUMNS,
    delivery_from_row,
    message_from_row,
    message_params,
)
from omninudge_core.errors import Conflict, NotFound
from omninudge_core.models import (
    ConversationId,
    DeliveryRecord,
    EventKind,
    Message,
    MessageId,
    StreamEvent,
    UserId,
)
from omninudge_core.ports import Appended, Page

__all__ = ["PostgresMessageStore"]

_MESSAGE_NAMES = [name.strip() for name in MESSAGE_COLUMNS.split(",")]

_APPEND = f"""
WITH new_message AS (
    INSERT INTO messages ({MESSAGE_COLUMNS})
    VALUES (%(id)s, %(conversation_id)s, %(sender_id)s, %(client_msg_id)s, %(origin)s,
            %(sent_at)s, %(envelope)s, %(body)s, %(reddit_fullname)s)
    ON CONFLICT (sender_id, client_msg_id) DO NOTHING
    RETURNING id, conversation_id, sent_at
), notified AS (
    SELECT n.user_id, n.ord
    FROM new_message, unnest(%(notify)s::text[]) WITH ORDINALITY AS n(user_id, ord)
), bumped AS (
    INSERT INTO user_streams AS s (user_id, last_seq)
    SELECT user_id, count(*) FROM notified GROUP BY user_id ORDER BY user_id COLLATE "C"
    ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq
    RETURNING s.user_id, s.last_seq
), numbered AS (
    SELECT n.ord, n.user_id,
           b.last_seq - count(*) OVER per_user + row_number() OVER (per_user ORDER BY n.ord)
               AS seq
    FROM notified n JOIN bumped b ON b.user_id = n.user_id
    WINDOW per_user AS (PARTITION BY n.user_id)
), new_events AS (
    INSERT INTO events (user_id, seq, kind, message_id, payload, created_at)
    SELECT user_id, seq, 'message', %(id)s, NULL, statement_timestamp() FROM numbered
), new_deliveries AS (
    INSERT INTO deliveries ({DELIVERY_COLUMNS})
    SELECT nm.id, d.recipient_id, d.device_id, d.status, d.updated_at
    FROM new_message nm,
         unnest(%(d_recipient)s::text[], %(d_device)s::text[], %(d_status)s::text[],
                %(d_updated)s::timestamptz[]) AS d(recipient_id, device_id, status, updated_at)
), touched AS (
    UPDATE conversations c SET last_message_at = greatest(c.last_message_at, nm.sent_at)
    FROM new_message nm WHERE c.id = nm.conversation_id
)
SELECT (SELECT count(*) FROM new_message), n.seq, statement_timestamp()
FROM (SELECT 1) AS one LEFT JOIN numbered n ON true
ORDER BY n.ord
"""

_IMPORT = f"""
INSERT INTO messages ({MESSAGE_COLUMNS})
SELECT i.id, %(conversation_id)s, i.sender_id, i.client_msg_id, i.origin, i.sent_at,
       i.envelope, i.body, i.reddit_fullname
FROM unnest(%(ids)s::text[], %(senders)s::text[], %(client_msg_ids)s::text[],
            %(origins)s::text[], %(sent_ats)s::timestamptz[], %(envelopes)s::jsonb[],
            %(bodies)s::text[], %(fullnames)s::text[])
     WITH ORDINALITY AS i(id, sender_id, client_msg_id, origin, sent_at, envelope, body,
                          reddit_fullname, ord)
ORDER BY i.ord
ON CONFLICT (conversation_id, reddit_fullname) DO NOTHING
RETURNING sent_at
"""

_SET_DELIVERIES = f"""
INSERT INTO deliveries ({DELIVERY_COLUMNS})
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
ON CONFLICT (message_id, recipient_id, device_id) DO UPDATE
SET status = excluded.status, updated_at = excluded.updated_at
"""

# Lookups (``Database.lookup``: merged across callers).
_BY_ID = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY(%(keys)s)"
_REPLAYED = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = %s AND client_msg_id = %s"
_DELIVERIES = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ANY(%(keys)s)"
    " ORDER BY message_id, recipient_id, device_id"
)

_HISTORY = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %(conversation_id)s"
    " {keyset} ORDER BY sent_at DESC, id DESC LIMIT %(limit)s"
)
_HISTORY_FIRST = _HISTORY.format(keyset="")
_HISTORY_AFTER = _HISTORY.format(keyset="AND (sent_at, id) < (%(at)s, %(id)s)")


class PostgresMessageStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def group_commit(self) -> bool:
        return self._db.group_commit

    @property
    def batches_written(self) -> int:
        """Batch transactions (of two or more writes) committed: for benchmarks and tests."""
        return self._db.write_batches

    async def append(
        self,
        message: Message,
        deliveries: Sequence[DeliveryRecord],
        notify: Sequence[UserId],
    ) -> Appended:
        """Insert the message, its deliveries, one MESSAGE event per notified user and
        bump last_message_at, in one transaction; a replayed (sender_id, client_msg_id)
        writes nothing and returns the original (created=False).

        Raises NotFound for an unknown conversation, Conflict for a taken message id
        or Reddit fullname, Unavailable when the database is down."""
        params = _named_message_params(message)
        params.update(
            notify=TextArray(notify),
            d_recipient=TextArray(d.recipient_id for d in deliveries),
            d_device=TextArray(d.device_id for d in deliveries),
            d_status=TextArray(d.status.value for d in deliveries),
            d_updated=TimestampArray(d.updated_at for d in deliveries),
        )
        rows = await self._db.write("append message", _APPEND, params)
        if rows and rows[0][0] == 0:
            found = await self._db.fetch(
                "append message", _REPLAYED, (message.sender_id, message.client_msg_id)
            )
            if not found:
                raise Conflict("the replayed message disappeared concurrently")
            return Appended(message=message_from_row(found[0]), created=False)
        numbered = [row for row in rows if row[1] is not None]
        events = tuple(
            StreamEvent(
                user_id=user_id,
                seq=seq,
                kind=EventKind.MESSAGE,
                created_at=created_at,
                message=message,
            )
            for user_id, (_, seq, created_at) in zip(notify, numbered, strict=True)
        )
        return Appended(message=message, created=True, events=events)

    async def get(self, message_id: MessageId) -> Message:
        """Raises NotFound."""
        rows = await self._db.lookup("get message", _BY_ID, [message_id])
        if not rows:
            raise NotFound(f"no message {message_id!r}")
        return message_from_row(rows[0])

    async def history(
        self, conversation_id: ConversationId, *, before: str | None, limit: int
    ) -> Page[Message]:
        """Newest first by (sent_at, id). Raises InvalidFrame(code="invalid_cursor")."""
        limit = max(limit, 0)
        params: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit + 1}
        query = _HISTORY_FIRST
        if before is not None:
            params["at"], params["id"] = decode_cursor("m", before)
            query = _HISTORY_AFTER
        async with self._db.connection("read history") as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        messages = tuple(message_from_row(row) for row in rows[:limit])
        next_cursor = None
        if len(rows) > limit and messages:
            next_cursor = encode_cursor("m", messages[-1].sent_at, messages[-1].id)
        return Page(items=messages, next_cursor=next_cursor)

    async def import_reddit(
        self, conversation_id: ConversationId, messages: Sequence[Message]
    ) -> int:
        """Insert Reddit-origin messages not already in the conversation (by
        reddit_fullname), all or nothing; returns how many were new. Raises NotFound
        for an unknown conversation, Conflict for a taken id or client_msg_id, and
        ValueError for a message without a fullname or of another conversation."""
        fresh: dict[str, Message] = {}
        for message in messages:
            if message.reddit_fullname is None or message.conversation_id != conversation_id:
                raise ValueError(
                    "an imported message needs a reddit_fullname and this conversation_id"
                )
            fresh.setdefault(message.reddit_fullname, message)
        columns = [message_params(m) for m in fresh.values()]
        params = {
            "conversation_id": conversation_id,
            "ids": [c[0] for c in columns],
            "senders": [c[2] for c in columns],
            "client_msg_ids": [c[3] for c in columns],
            "origins": [c[4] for c in columns],
            "sent_ats": [c[5] for c in columns],
            "envelopes": [None if c[6] is None else Jsonb(c[6]) for c in columns],
            "bodies": [c[7] for c in columns],
            "fullnames": [c[8] for c in columns],
        }
        async with self._db.transaction("import reddit messages") as conn:
            inserted: list[Any] = []
            if columns:
                cur = await conn.execute(_IMPORT, params)
                inserted = await cur.fetchall()
            cur = await conn.execute(
                "UPDATE conversations SET last_message_at = greatest(last_message_at, %s)"
                " WHERE id = %s RETURNING id",
                (max((row[0] for row in inserted), default=None), conversation_id),
            )
            if await cur.fetchone() is None:
                raise NotFound(f"no conversation {conversation_id!r}")
        return len(inserted)

    async def set_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        """Upsert rows keyed by (message_id, recipient_id, device_id); the last record
        for a key wins. Raises NotFound for an unknown message (and writes nothing)."""
        latest = {(r.message_id, r.recipient_id, r.device_id): r for r in records}
        if not latest:
            return
        rows = list(latest.values())
        await self._db.write(
            "set deliveries",
            _SET_DELIVERIES,
            (
                TextArray(r.message_id for r in rows),
                TextArray(r.recipient_id for r in rows),
                TextArray(r.device_id for r in rows),
                TextArray(r.status.value for r in rows),
                TimestampArray(r.updated_at for r in rows),
            ),
            returns_rows=False,
        )

    async def deliveries(self, message_id: MessageId) -> list[DeliveryRecord]:
        """By (recipient_id, device_id); empty for an unknown message."""
        rows = await self._db.lookup("list deliveries", _DELIVERIES, [message_id])
        return [delivery_from_row(row) for row in rows]

    async def deliveries_many(
        self, message_ids: Sequence[MessageId]
    ) -> dict[MessageId, list[DeliveryRecord]]:
        found: dict[MessageId, list[DeliveryRecord]] = {m: [] for m in message_ids}
        if not found:
            return found
        rows = await self._db.lookup("list deliveries", _DELIVERIES, list(found))
        for row in rows:
            record = delivery_from_row(row)
            found[record.message_id].append(record)
        return found

    async def mark_read(
        self, conversation_id: ConversationId, user_id: UserId, up_to: MessageId
    ) -> list[Message]:
        """Move the read mark forward to ``up_to`` (never back); return the other
        participant's messages it newly covers, oldest first.
        Raises NotFound if ``up_to`` is not a message of the conversation."""
        async with self._db.transaction("mark read") as conn:
            cur = await conn.execute(
                "SELECT sent_at FROM messages WHERE id = %s AND conversation_id = %s",
                (up_to, conversation_id),
            )
            target = await cur.fetchone()
            if target is None:
                raise NotFound(f"no message {up_to!r} in conversation {conversation_id!r}")
            new_mark = (target[0], up_to)
            cur = await conn.execute(
                "INSERT INTO read_marks (conversation_id, user_id, message_id, sent_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING true",
                (conversation_id, user_id, up_to, new_mark[0]),
            )
            old_mark = None
            if await cur.fetchone() is None:
                # Lock the existing mark so concurrent readers move it one at a time.
                cur = await conn.execute(
                    "SELECT sent_at, message_id FROM read_marks"
                    " WHERE conversation_id = %s AND user_id = %s FOR UPDATE",
                    (conversation_id, user_id),
                )
                row = await cur.fetchone()
                if row is None:
                    raise Conflict("the read mark changed concurrently")
                old_mark = (row[0], row[1])
                if new_mark <= old_mark:
                    return []
                await conn.execute(
                    "UPDATE read_marks SET message_id = %s, sent_at = %s"
                    " WHERE conversation_id = %s AND user_id = %s",
                    (up_to, new_mark[0], conversation_id, user_id),
                )
            query = (
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %s"
                " AND sender_id <> %s AND (sent_at, id) <= (%s, %s)"
            )
            params: list[Any] = [conversation_id, user_id, *new_mark]
            if old_mark is not None:
                query += " AND (sent_at, id) > (%s, %s)"
                params.extend(old_mark)
            cur = await conn.execute(query + " ORDER BY sent_at, id", params)
            rows = await cur.fetchall()
        return [message_from_row(row) for row in rows]


def _named_message_params(message: Message) -> dict[str, Any]:
    params = dict(zip(_MESSAGE_NAMES, message_params(message), strict=True))
    if params["envelope"] is not None:
        params["envelope"] = Jsonb(params["envelope"])
    return params
