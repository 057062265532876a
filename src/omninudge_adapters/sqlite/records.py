"""SQLite stores for media metadata, invitations, migration states and Reddit tokens."""

from __future__ import annotations

from collections.abc import Mapping

from omninudge_adapters.sqlite.database import SqliteDatabase, Transaction
from omninudge_adapters.sqlite.rows import (
    dump_json,
    invitation_from_row,
    load_json,
    media_from_row,
    to_micros,
    to_micros_or_none,
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
    "SqliteInvitationStore",
    "SqliteMediaStore",
    "SqliteMigrationStore",
    "SqliteRedditTokenStore",
]

_MEDIA_COLUMNS = (
    "id, owner_id, kind, content_type, size, blob_key, created_at, width, height,"
    " thumbnail_key, thumbnail_content_type"
)


class SqliteMediaStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, media: Media) -> None:
        """Raises Conflict on a taken id."""

        async def work(tx: Transaction) -> None:
            await tx.execute(
                f"INSERT INTO media ({_MEDIA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    media.id,
                    media.owner_id,
                    media.kind.value,
                    media.content_type,
                    media.size,
                    media.blob_key,
                    to_micros(media.created_at),
                    media.width,
                    media.height,
                    media.thumbnail_key,
                    media.thumbnail_content_type,
                ),
            )

        await self._db.transaction(work)

    async def get(self, media_id: MediaId) -> Media:
        """Raises NotFound."""
        row = await self._db.fetchone(
            f"SELECT {_MEDIA_COLUMNS} FROM media WHERE id = ?", (media_id,)
        )
        if row is None:
            raise NotFound(f"no media {media_id}")
        return media_from_row(row)

    async def delete(self, media_id: MediaId) -> None:
        """Idempotent; the shares go with it (ON DELETE CASCADE)."""

        async def work(tx: Transaction) -> None:
            await tx.execute("DELETE FROM media WHERE id = ?", (media_id,))

        await self._db.transaction(work)

    async def share(self, media_id: MediaId, conversation_id: ConversationId) -> None:
        """Idempotent. Raises NotFound for an unknown media or conversation."""

        async def work(tx: Transaction) -> None:
            if await tx.fetchone("SELECT 1 FROM media WHERE id = ?", (media_id,)) is None:
                raise NotFound(f"no media {media_id}")
            found = await tx.fetchone(
                "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
            )
            if found is None:
                raise NotFound(f"no conversation {conversation_id}")
            await tx.execute(
                "INSERT INTO media_shares (media_id, conversation_id) VALUES (?, ?)"
                " ON CONFLICT (media_id, conversation_id) DO NOTHING",
                (media_id, conversation_id),
            )

        await self._db.transaction(work)

    async def can_access(self, media_id: MediaId, user_id: UserId) -> bool:
        """The uploader, and participants of a conversation it was shared in."""
        row = await self._db.fetchone(
            """
            SELECT 1 FROM media WHERE id = :media AND owner_id = :user
            UNION ALL
            SELECT 1 FROM media_shares s JOIN conversations c ON c.id = s.conversation_id
            WHERE s.media_id = :media AND (c.user_a = :user OR c.user_b = :user)
            LIMIT 1
            """,
            {"media": media_id, "user": user_id},
        )
        return row is not None


_INVITATION_COLUMNS = "token, conversation_id, inviter_id, reddit_username, created_at, accepted_at"


class SqliteInvitationStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, invitation: Invitation) -> None:
        """Raises Conflict on a taken token."""

        async def work(tx: Transaction) -> None:
            await tx.execute(
                f"INSERT INTO invitations ({_INVITATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    invitation.token,
                    invitation.conversation_id,
                    invitation.inviter_id,
                    invitation.reddit_username,
                    to_micros(invitation.created_at),
                    to_micros_or_none(invitation.accepted_at),
                ),
            )

        await self._db.transaction(work)

    async def get(self, token: str) -> Invitation:
        """Raises NotFound."""
        row = await self._db.fetchone(
            f"SELECT {_INVITATION_COLUMNS} FROM invitations WHERE token = ?", (token,)
        )
        if row is None:
            raise NotFound("no such invitation")
        return invitation_from_row(row)

    async def accept(self, token: str, at: Instant) -> Invitation:
        """Set accepted_at once; later calls return the first acceptance. Raises NotFound."""

        async def work(tx: Transaction) -> Invitation:
            await tx.execute(
                "UPDATE invitations SET accepted_at = ? WHERE token = ? AND accepted_at IS NULL",
                (to_micros(at), token),
            )
            row = await tx.fetchone(
                f"SELECT {_INVITATION_COLUMNS} FROM invitations WHERE token = ?", (token,)
            )
            if row is None:
                raise NotFound("no such invitation")
            return invitation_from_row(row)

        return await self._db.transaction(work)


class SqliteMigrationStore:
    """Whether a saved state is final is the core's call (``migration.is_finished``),
    made when it is saved; the conversation's upgrade_state does not decide, because
    the shell updates it *before* the final state is persisted."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def save(self, conversation_id: ConversationId, state: Mapping[str, object]) -> None:
        """Upsert. Raises NotFound for an unknown conversation."""

        async def work(tx: Transaction) -> None:
            found = await tx.fetchone(
                "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
            )
            if found is None:
                raise NotFound(f"no conversation {conversation_id}")
            await tx.execute(
                "INSERT INTO migrations (conversation_id, state, finished) VALUES (?, ?, ?)"
                " ON CONFLICT (conversation_id)"
                " DO UPDATE SET state = excluded.state, finished = excluded.finished",
                (conversation_id, dump_json(state), int(is_finished(state))),
            )

        await self._db.transaction(work)

    async def load(self, conversation_id: ConversationId) -> Mapping[str, object] | None:
        row = await self._db.fetchone(
            "SELECT state FROM migrations WHERE conversation_id = ?", (conversation_id,)
        )
        return None if row is None else dict(load_json(row["state"]))

    async def unfinished(self) -> list[ConversationId]:
        """Sorted by conversation id."""
        rows = await self._db.fetchall(
            "SELECT conversation_id FROM migrations WHERE finished = 0 ORDER BY conversation_id"
        )
        return [row["conversation_id"] for row in rows]


_TOKEN_COLUMNS = (
    "user_id, refresh_token_ciphertext, scope, updated_at, access_token_ciphertext,"
    " access_expires_at"
)


class SqliteRedditTokenStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put(self, tokens: RedditTokens) -> None:
        """Upsert."""

        async def work(tx: Transaction) -> None:
            await tx.execute(
                f"INSERT INTO reddit_tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET"
                " refresh_token_ciphertext = excluded.refresh_token_ciphertext,"
                " scope = excluded.scope, updated_at = excluded.updated_at,"
                " access_token_ciphertext = excluded.access_token_ciphertext,"
                " access_expires_at = excluded.access_expires_at",
                (
                    tokens.user_id,
                    tokens.refresh_token_ciphertext,
                    tokens.scope,
                    to_micros(tokens.updated_at),
                    tokens.access_token_ciphertext,
                    to_micros_or_none(tokens.access_expires_at),
                ),
            )

        await self._db.transaction(work)

    async def get(self, user_id: UserId) -> RedditTokens | None:
        row = await self._db.fetchone(
            f"SELECT {_TOKEN_COLUMNS} FROM reddit_tokens WHERE user_id = ?", (user_id,)
        )
        return None if row is None else tokens_from_row(row)

    async def delete(self, user_id: UserId) -> None:
        """Idempotent."""

        async def work(tx: Transaction) -> None:
            await tx.execute("DELETE FROM reddit_tokens WHERE user_id = ?", (user_id,))

        await self._db.transaction(work)
