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

Group commit (on by default): appends that arrive while a batch is being written
wait and go together in the next one - one transaction on one connection, every
``append`` statement sent in pipeline mode, so a batch costs ONE network round trip
and ONE commit (one WAL flush) however many messages it holds. Every caller returns
only after that commit. If the batch fails (one bad message aborts the transaction),
its appends are retried one by one, so each caller gets its own answer (NotFound,
Conflict) and the good ones still commit. ``group_commit=False``: one transaction per
append.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from omninudge_adapters.postgres.cursor import decode_cursor, encode_cursor
from omninudge_adapters.postgres.db import Database
from omninudge_adapters.postgres.rows import (
    DELIVERY_COLUMNS,
    MESSAGE_COLUMNS,
    delivery_from_row,
    message_from_row,
    message_params,
)
from omninudge_core.errors import Conflict, NotFound, PortError, Unavailable
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

# A bound on one batch (its statements travel in one pipeline).
MAX_BATCH = 256

_Rows = list[tuple[Any, ...]]

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

_HISTORY = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = %(conversation_id)s"
    " {keyset} ORDER BY sent_at DESC, id DESC LIMIT %(limit)s"
)
_HISTORY_FIRST = _HISTORY.format(keyset="")
_HISTORY_AFTER = _HISTORY.format(keyset="AND (sent_at, id) < (%(at)s, %(id)s)")


class PostgresMessageStore:
    def __init__(self, db: Database, *, group_commit: bool = True) -> None:
        self._db = db
        self.group_commit = group_commit
        # Appends waiting for the next batch, and the task writing batches.
        self._queue: list[tuple[dict[str, Any], asyncio.Future[_Rows]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches_written = 0  # for benchmarks and tests: batch transactions committed

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
            notify=list(notify),
            d_recipient=[d.recipient_id for d in deliveries],
            d_device=[d.device_id for d in deliveries],
            d_status=[d.status.value for d in deliveries],
            d_updated=[d.updated_at for d in deliveries],
        )
        if self.group_commit:
            rows = await self._append_grouped(params)
        else:
            rows = await self._append_alone(params)
        if rows and rows[0][0] == 0:
            async with self._db.connection("append message") as conn:
                cur = await conn.execute(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages"
                    " WHERE sender_id = %s AND client_msg_id = %s",
                    (message.sender_id, message.client_msg_id),
                )
                original = await cur.fetchone()
            if original is None:
                raise Conflict("the replayed message disappeared concurrently")
            return Appended(message=message_from_row(original), created=False)
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

    async def _append_alone(self, params: dict[str, Any]) -> _Rows:
        async with self._db.connection("append message") as conn:
            cur = await conn.execute(_APPEND, params)
            return await cur.fetchall()

    async def _append_grouped(self, params: dict[str, Any]) -> _Rows:
        future: asyncio.Future[_Rows] = asyncio.get_running_loop().create_future()
        self._queue.append((params, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_batches())
        # Shielded: a cancelled caller must not cancel the batch the others wait for.
        return await asyncio.shield(future)

    async def _write_batches(self) -> None:
        batch: list[tuple[dict[str, Any], asyncio.Future[_Rows]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results: list[_Rows] | None = await self._write_batch([p for p, _ in batch])
                except PortError:
                    results = None
                for index, (params, future) in enumerate(batch):
                    if results is not None:
                        future.set_result(results[index])
                        continue
                    try:
                        future.set_result(await self._append_alone(params))
                    except PortError as exc:
                        future.set_exception(exc)
        except BaseException:
            # Cancelled (shutdown) or a bug: no caller may wait forever.
            for _, future in [*batch, *self._queue]:
                if not future.done():
                    future.set_exception(Unavailable("the message store is shutting down"))
            self._queue = []
            raise

    async def _write_batch(self, batch: list[dict[str, Any]]) -> list[_Rows]:
        """All of ``batch`` in one transaction and one round trip. Raises PortError."""
        if len(batch) == 1:
            return [await self._append_alone(batch[0])]
        async with self._db.connection("append messages") as conn:
            async with conn.pipeline(), conn.transaction():
                cursors = [await conn.execute(_APPEND, params) for params in batch]
            results = [await cur.fetchall() for cur in cursors]
        self.batches_written += 1
        return results

    async def get(self, message_id: MessageId) -> Message:
        """Raises NotFound."""
        async with self._db.connection("get message") as conn:
            cur = await conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = %s", (message_id,)
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no message {message_id!r}")
        return message_from_row(row)

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
        async with self._db.connection("set deliveries") as conn:
            await conn.execute(
                _SET_DELIVERIES,
                (
                    [r.message_id for r in rows],
                    [r.recipient_id for r in rows],
                    [r.device_id for r in rows],
                    [r.status.value for r in rows],
                    [r.updated_at for r in rows],
                ),
            )

    async def deliveries(self, message_id: MessageId) -> list[DeliveryRecord]:
        """By (recipient_id, device_id); empty for an unknown message."""
        async with self._db.connection("list deliveries") as conn:
            cur = await conn.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = %s"
                " ORDER BY recipient_id, device_id",
                (message_id,),
            )
            rows = await cur.fetchall()
        return [delivery_from_row(row) for row in rows]

    async def deliveries_many(
        self, message_ids: Sequence[MessageId]
    ) -> dict[MessageId, list[DeliveryRecord]]:
        found: dict[MessageId, list[DeliveryRecord]] = {m: [] for m in message_ids}
        if not found:
            return found
        async with self._db.connection("list deliveries") as conn:
            cur = await conn.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE message_id = ANY(%s)"
                " ORDER BY message_id, recipient_id, device_id",
                (list(found),),
            )
            rows = await cur.fetchall()
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
    values = message_params(message)
    names = [name.strip() for name in MESSAGE_COLUMNS.split(",")]
    params = dict(zip(names, values, strict=True))
    if params["envelope"] is not None:
        params["envelope"] = Jsonb(params["envelope"])
    return params
