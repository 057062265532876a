"""Conversations on PostgreSQL (ports.ConversationStore)."""

from __future__ import annotations

from omninudge_adapters.postgres.cursor import decode_cursor, encode_cursor
from omninudge_adapters.postgres.db import Database
from omninudge_adapters.postgres.rows import (
    CONVERSATION_COLUMNS,
    conversation_from_row,
    prefixed,
)
from omninudge_core.errors import Conflict, NotFound
from omninudge_core.models import Conversation, ConversationId, UpgradeState, UserId, pair_key
from omninudge_core.ports import ConversationView, Page

__all__ = ["PostgresConversationStore"]

# A conversation's activity is its last message, or its creation while it has none.
_ACTIVITY = "coalesce(c.last_message_at, c.created_at)"

# Unread = the other participant's messages after the reader's mark, (sent_at, id) order.
_UNREAD = (
    "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id"
    " AND m.sender_id <> %(user)s"
    " AND (rm.sent_at IS NULL OR (m.sent_at, m.id) > (rm.sent_at, rm.message_id)))"
)

_LIST = (
    f"SELECT {prefixed(CONVERSATION_COLUMNS, 'c')}, {_ACTIVITY} AS activity, {_UNREAD} AS unread"
    " FROM conversations c"
    " LEFT JOIN read_marks rm ON rm.conversation_id = c.id AND rm.user_id = %(user)s"
    " WHERE (c.user_a = %(user)s OR c.user_b = %(user)s) {keyset}"
    " ORDER BY activity DESC, c.id DESC LIMIT %(limit)s"
)
_LIST_FIRST = _LIST.format(keyset="")
_LIST_AFTER = _LIST.format(keyset=f"AND ({_ACTIVITY}, c.id) < (%(at)s, %(id)s)")

_BY_ID = f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ANY(%(keys)s)"


class PostgresConversationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_or_create(self, conversation: Conversation) -> tuple[Conversation, bool]:
        """The pair's one conversation: existing (False) or this one, inserted (True).

        Race-safe: a concurrent insert of the same pair makes ours a no-op and the
        follow-up read sees the winner. Raises Conflict if the id is taken by
        another pair."""
        user_a, user_b = pair_key(*conversation.participants)
        async with self._db.connection("create conversation") as conn:
            cur = await conn.execute(
                f"INSERT INTO conversations ({CONVERSATION_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (user_a, user_b) DO NOTHING RETURNING id",
                (
                    conversation.id,
                    user_a,
                    user_b,
                    conversation.kind.value,
                    conversation.upgrade_state.value,
                    conversation.created_at,
                    conversation.last_message_at,
                ),
            )
            if await cur.fetchone() is not None:
                return conversation, True
            cur = await conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations"
                " WHERE user_a = %s AND user_b = %s",
                (user_a, user_b),
            )
            row = await cur.fetchone()
        if row is None:
            raise Conflict("the conversation changed concurrently")
        return conversation_from_row(row), False

    async def get(self, conversation_id: ConversationId) -> Conversation:
        """Raises NotFound."""
        rows = await self._db.lookup("get conversation", _BY_ID, [conversation_id])
        if not rows:
            raise NotFound(f"no conversation {conversation_id!r}")
        return conversation_from_row(rows[0])

    async def for_pair(self, a: UserId, b: UserId) -> Conversation | None:
        user_a, user_b = pair_key(a, b)
        async with self._db.connection("find conversation") as conn:
            cur = await conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations"
                " WHERE user_a = %s AND user_b = %s",
                (user_a, user_b),
            )
            row = await cur.fetchone()
        return None if row is None else conversation_from_row(row)

    async def list_for_user(
        self, user_id: UserId, *, before: str | None, limit: int
    ) -> Page[ConversationView]:
        """Newest activity first (last_message_at, else created_at; then id).

        Raises InvalidFrame(code="invalid_cursor") for a bad cursor."""
        params: dict[str, object] = {"user": user_id, "limit": max(limit, 0) + 1}
        query = _LIST_FIRST
        if before is not None:
            params["at"], params["id"] = decode_cursor("c", before)
            query = _LIST_AFTER
        async with self._db.connection("list conversations") as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        views = [
            ConversationView(conversation=conversation_from_row(row[:7]), unread=int(row[8]))
            for row in rows[: max(limit, 0)]
        ]
        next_cursor = None
        if len(rows) > limit and views:
            last = rows[limit - 1]
            next_cursor = encode_cursor("c", last[7], last[0])
        return Page(items=tuple(views), next_cursor=next_cursor)

    async def set_upgrade_state(
        self, conversation_id: ConversationId, state: UpgradeState
    ) -> Conversation:
        """Raises NotFound."""
        async with self._db.connection("set upgrade state") as conn:
            cur = await conn.execute(
                f"UPDATE conversations SET upgrade_state = %s WHERE id = %s"
                f" RETURNING {CONVERSATION_COLUMNS}",
                (state.value, conversation_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no conversation {conversation_id!r}")
        return conversation_from_row(row)
