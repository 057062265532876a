"""Media metadata, invitations, migration states and Reddit tokens on PostgreSQL
(ports.MediaStore, InvitationStore, MigrationStore, RedditTokenStore)."""

from __future__ import annotations

from collections.abc import Mapping

from psycopg.types.json import Jsonb

from omninudge_adapters.postgres.db import Database
from omninudge_adapters.postgres.rows import (
    INVITATION_COLUMNS,
    MEDIA_COLUMNS,
    TOKEN_COLUMNS,
    invitation_from_row,
    media_from_row,
    tokens_from_row,
)
from omninudge_core.errors import NotFound
from omninudge_core.migration import is_finished
from omninudge_core.models import (
    ConversationId,
    Instant,
    Invitation,
    Media,
    MediaId,
    RedditTokens,
    UserId,
)

__all__ = [
    "PostgresInvitationStore",
    "PostgresMediaStore",
    "PostgresMigrationStore",
    "PostgresRedditTokenStore",
]


class PostgresMediaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, media: Media) -> None:
        """Raises Conflict if the id is taken."""
        async with self._db.connection("create media") as conn:
            await conn.execute(
                f"INSERT INTO media ({MEDIA_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    media.id,
                    media.owner_id,
                    media.kind.value,
                    media.content_type,
                    media.size,
                    media.blob_key,
                    media.created_at,
                    media.width,
                    media.height,
                    media.thumbnail_key,
                    media.thumbnail_content_type,
                ),
            )

    async def get(self, media_id: MediaId) -> Media:
        """Raises NotFound."""
        async with self._db.connection("get media") as conn:
            cur = await conn.execute(
                f"SELECT {MEDIA_COLUMNS} FROM media WHERE id = %s", (media_id,)
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no media {media_id!r}")
        return media_from_row(row)

    async def delete(self, media_id: MediaId) -> None:
        """Idempotent; its shares go with it."""
        async with self._db.connection("delete media") as conn:
            await conn.execute("DELETE FROM media WHERE id = %s", (media_id,))

    async def share(self, media_id: MediaId, conversation_id: ConversationId) -> None:
        """Idempotent. Raises NotFound for an unknown media or conversation."""
        async with self._db.connection("share media") as conn:
            await conn.execute(
                "INSERT INTO media_shares (media_id, conversation_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (media_id, conversation_id),
            )

    async def can_access(self, media_id: MediaId, user_id: UserId) -> bool:
        """The uploader, and the participants of a conversation it was shared in."""
        async with self._db.connection("check media access") as conn:
            cur = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM media WHERE id = %(media)s AND owner_id = %(user)s)"
                " OR EXISTS (SELECT 1 FROM media_shares s"
                " JOIN conversations c ON c.id = s.conversation_id"
                " WHERE s.media_id = %(media)s AND (c.user_a = %(user)s OR c.user_b = %(user)s))",
                {"media": media_id, "user": user_id},
            )
            row = await cur.fetchone()
        return bool(row and row[0])


class PostgresInvitationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, invitation: Invitation) -> None:
        """Raises Conflict if the token is taken."""
        async with self._db.connection("create invitation") as conn:
            await conn.execute(
                f"INSERT INTO invitations ({INVITATION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    invitation.token,
                    invitation.conversation_id,
                    invitation.inviter_id,
                    invitation.reddit_username,
                    invitation.created_at,
                    invitation.accepted_at,
                ),
            )

    async def get(self, token: str) -> Invitation:
        """Raises NotFound."""
        async with self._db.connection("get invitation") as conn:
            cur = await conn.execute(
                f"SELECT {INVITATION_COLUMNS} FROM invitations WHERE token = %s", (token,)
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound("no such invitation")
        return invitation_from_row(row)

    async def accept(self, token: str, at: Instant) -> Invitation:
        """Set accepted_at once; later calls return the first acceptance. Raises NotFound."""
        async with self._db.connection("accept invitation") as conn:
            cur = await conn.execute(
                "UPDATE invitations SET accepted_at = coalesce(accepted_at, %s)"
                f" WHERE token = %s RETURNING {INVITATION_COLUMNS}",
                (at, token),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound("no such invitation")
        return invitation_from_row(row)


class PostgresMigrationStore:
    """Whether a saved state is final is the core's call (``migration.is_finished``),
    stored beside it; the conversation's upgrade_state does not decide, because the
    shell updates it *before* the final state is persisted."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(self, conversation_id: ConversationId, state: Mapping[str, object]) -> None:
        """Upsert. Raises NotFound for an unknown conversation."""
        async with self._db.connection("save migration") as conn:
            await conn.execute(
                "INSERT INTO migrations (conversation_id, state, finished) VALUES (%s, %s, %s)"
                " ON CONFLICT (conversation_id) DO UPDATE SET state = excluded.state,"
                " finished = excluded.finished, updated_at = statement_timestamp()",
                (conversation_id, Jsonb(dict(state)), is_finished(state)),
            )

    async def load(self, conversation_id: ConversationId) -> Mapping[str, object] | None:
        async with self._db.connection("load migration") as conn:
            cur = await conn.execute(
                "SELECT state FROM migrations WHERE conversation_id = %s", (conversation_id,)
            )
            row = await cur.fetchone()
        return None if row is None else dict(row[0])

    async def unfinished(self) -> list[ConversationId]:
        """Conversations whose saved migration state is not final, sorted by id."""
        async with self._db.connection("list unfinished migrations") as conn:
            cur = await conn.execute(
                "SELECT conversation_id FROM migrations WHERE NOT finished ORDER BY conversation_id"
            )
            rows = await cur.fetchall()
        return [row[0] for row in rows]


class PostgresRedditTokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, tokens: RedditTokens) -> None:
        async with self._db.connection("save reddit tokens") as conn:
            await conn.execute(
                f"INSERT INTO reddit_tokens ({TOKEN_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (user_id) DO UPDATE SET"
                " refresh_token_ciphertext = excluded.refresh_token_ciphertext,"
                " scope = excluded.scope, updated_at = excluded.updated_at,"
                " access_token_ciphertext = excluded.access_token_ciphertext,"
                " access_expires_at = excluded.access_expires_at",
                (
                    tokens.user_id,
                    tokens.refresh_token_ciphertext,
                    tokens.scope,
                    tokens.updated_at,
                    tokens.access_token_ciphertext,
                    tokens.access_expires_at,
                ),
            )

    async def get(self, user_id: UserId) -> RedditTokens | None:
        async with self._db.connection("get reddit tokens") as conn:
            cur = await conn.execute(
                f"SELECT {TOKEN_COLUMNS} FROM reddit_tokens WHERE user_id = %s", (user_id,)
            )
            row = await cur.fetchone()
        return None if row is None else tokens_from_row(row)

    async def delete(self, user_id: UserId) -> None:
        """Idempotent."""
        async with self._db.connection("delete reddit tokens") as conn:
            await conn.execute("DELETE FROM reddit_tokens WHERE user_id = %s", (user_id,))
