"""Per-user event streams on PostgreSQL (ports.EventStore).

Seq assignment works as in ``messages.append``: one statement bumps each user's
``user_streams.last_seq`` by the number of new events (rows locked in sorted user
order until commit), numbers the events below the new value, in the order given, and
returns them with their messages. It is a write of ``Database.write``: under group
commit it shares its transaction with the other writes of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from omninudge_adapters.postgres.arrays import JsonbArray, TextArray
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

_APPEND = f"""
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
SELECT n.seq, statement_timestamp(), n.payload, {prefixed(MESSAGE_COLUMNS, "m")}
FROM numbered n LEFT JOIN messages m ON m.id = n.message_id
ORDER BY n.ord
"""

_READ = (
    "SELECT e.user_id, e.seq, e.kind, e.payload, e.created_at,"
    f" {prefixed(MESSAGE_COLUMNS, 'm')}"
    " FROM events e LEFT JOIN messages m ON m.id = e.message_id"
    " WHERE e.user_id = %s AND e.seq > %s ORDER BY e.seq LIMIT %s"
)
_LAST_SEQ = "SELECT last_seq FROM user_streams WHERE user_id = %s"


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
            "users": TextArray(e.user_id for e in events),
            "kinds": TextArray(e.kind.value for e in events),
            "message_ids": TextArray(e.message_id for e in events),
            "payloads": JsonbArray(e.payload for e in events),
        }
        numbered = await self._db.write("append events", _APPEND, params)
        messages: dict[str, Message] = {}
        appended = []
        for event, row in zip(events, numbered, strict=True):
            message = None
            if event.message_id is not None and row[3] is not None:
                message = messages.get(event.message_id)
                if message is None:
                    message = messages[event.message_id] = message_from_row(row[3:])
            appended.append(
                StreamEvent(
                    user_id=event.user_id,
                    seq=row[0],
                    kind=event.kind,
                    created_at=row[1],
                    message=message,
                    payload=row[2],
                )
            )
        return appended

    async def read(self, user_id: UserId, *, after: int, limit: int) -> list[StreamEvent]:
        """Events with seq > after, ascending; MESSAGE events carry their message."""
        if limit <= 0:
            return []
        rows = await self._db.fetch("read events", _READ, (user_id, after, limit))
        return [
            event_from_row(row[:5], None if row[5] is None else message_from_row(row[5:]))
            for row in rows
        ]

    async def last_seq(self, user_id: UserId) -> int:
        """0 for a user with no events."""
        rows = await self._db.fetch("read last seq", _LAST_SEQ, (user_id,))
        return int(rows[0][0]) if rows else 0
