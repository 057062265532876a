"""Per-user event streams on PostgreSQL (ports.EventStore).

Seq assignment works as in ``messages.append``: one statement bumps each user's
``user_streams.last_seq`` by the number of new events (rows locked in sorted user
order until commit) and numbers the events below the new value, in the order given.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg.types.json import Jsonb

from omninudge_adapters.postgres.db import Database
from omninudge_adapters.postgres.rows import (
    MESSAGE_COLUMNS,
    event_from_row,
    message_from_row,
    prefixed,
)
from omninudge_core.models import Message, StreamEvent, UserId
from omninudge_core.ports import NewEvent

__all__ = ["PostgresEventStore"]

_APPEND = """
WITH input AS (
    SELECT * FROM unnest(%(users)s::text[], %(kinds)s::text[], %(message_ids)s::text[],
                         %(payloads)s::jsonb[])
           WITH ORDINALITY AS i(user_id, kind, message_id, payload, ord)
), bumped AS (
    INSERT INTO user_streams AS s (user_id, last_seq)
    SELECT user_id, count(*) FROM input GROUP BY user_id ORDER BY user_id COLLATE "C"
    ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq
    RETURNING s.user_id, s.last_seq
), numbered AS (
    SELECT i.ord, i.user_id, i.kind, i.message_id, i.payload,
           b.last_seq - count(*) OVER (PARTITION BY i.user_id)
               + row_number() OVER (PARTITION BY i.user_id ORDER BY i.ord) AS seq
    FROM input i JOIN bumped b ON b.user_id = i.user_id
), inserted AS (
    INSERT INTO events (user_id, seq, kind, message_id, payload, created_at)
    SELECT user_id, seq, kind, message_id, payload, statement_timestamp() FROM numbered
)
SELECT ord, seq, statement_timestamp(), payload FROM numbered ORDER BY ord
"""

_READ = (
    "SELECT e.user_id, e.seq, e.kind, e.payload, e.created_at,"
    f" {prefixed(MESSAGE_COLUMNS, 'm')}"
    " FROM events e LEFT JOIN messages m ON m.id = e.message_id"
    " WHERE e.user_id = %s AND e.seq > %s ORDER BY e.seq LIMIT %s"
)


class PostgresEventStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, events: Sequence[NewEvent]) -> list[StreamEvent]:
        """Append in one transaction; seq is per user, gap-free and strictly
        increasing; returned in the order given. Raises NotFound for an unknown
        message_id."""
        if not events:
            return []
        params = {
            "users": [e.user_id for e in events],
            "kinds": [e.kind.value for e in events],
            "message_ids": [e.message_id for e in events],
            "payloads": [None if e.payload is None else Jsonb(dict(e.payload)) for e in events],
        }
        message_ids = sorted({e.message_id for e in events if e.message_id is not None})
        messages: dict[str, Message] = {}
        async with self._db.connection("append events") as conn:
            cur = await conn.execute(_APPEND, params)
            numbered = await cur.fetchall()
            if message_ids:
                cur = await conn.execute(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY(%s)", (message_ids,)
                )
                messages = {row[0]: message_from_row(row) for row in await cur.fetchall()}
        return [
            StreamEvent(
                user_id=event.user_id,
                seq=seq,
                kind=event.kind,
                created_at=created_at,
                message=None if event.message_id is None else messages.get(event.message_id),
                payload=payload,
            )
            for event, (_, seq, created_at, payload) in zip(events, numbered, strict=True)
        ]

    async def read(self, user_id: UserId, *, after: int, limit: int) -> list[StreamEvent]:
        """Events with seq > after, ascending; MESSAGE events carry their message."""
        if limit <= 0:
            return []
        async with self._db.connection("read events") as conn:
            cur = await conn.execute(_READ, (user_id, after, limit))
            rows = await cur.fetchall()
        return [
            event_from_row(row[:5], None if row[5] is None else message_from_row(row[5:]))
            for row in rows
        ]

    async def last_seq(self, user_id: UserId) -> int:
        """0 for a user with no events."""
        async with self._db.connection("read last seq") as conn:
            cur = await conn.execute(
                "SELECT last_seq FROM user_streams WHERE user_id = %s", (user_id,)
            )
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])
