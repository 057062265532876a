"""``SqliteStorage``: every relational store on one SQLite file (the embedded default)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from os import PathLike

from omninudge_adapters.sqlite.database import SqliteDatabase, Synchronous
from omninudge_adapters.sqlite.messaging import (
    SqliteConversationStore,
    SqliteEventStore,
    SqliteMessageStore,
)
from omninudge_adapters.sqlite.migrate import migrate_sqlite
from omninudge_adapters.sqlite.people import SqliteBlockStore, SqliteDeviceStore, SqliteUserStore
from omninudge_adapters.sqlite.records import (
    SqliteInvitationStore,
    SqliteMediaStore,
    SqliteMigrationStore,
    SqliteRedditTokenStore,
)

__all__ = ["SqliteStorage", "open_sqlite_storage"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqliteStorage:
    """The stores of one database, sharing its writer and reader connections."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.users = SqliteUserStore(db)
        self.devices = SqliteDeviceStore(db)
        self.blocks = SqliteBlockStore(db)
        self.conversations = SqliteConversationStore(db)
        self.messages = SqliteMessageStore(db)
        self.events = SqliteEventStore(db)
        self.media = SqliteMediaStore(db)
        self.invitations = SqliteInvitationStore(db)
        self.migrations = SqliteMigrationStore(db)
        self.reddit_tokens = SqliteRedditTokenStore(db)

    async def ping(self) -> None:
        """Raises Unavailable when the database does not answer."""
        await self._db.fetchone("SELECT 1")


@asynccontextmanager
async def open_sqlite_storage(
    path: str | PathLike[str],
    *,
    synchronous: Synchronous = "FULL",
    busy_timeout_s: float = 5.0,
    clock: Callable[[], datetime] = _utc_now,
    group_commit: bool = True,
) -> AsyncIterator[SqliteStorage]:
    """Open (creating if needed) and migrate the database at ``path``; close it on exit.

    ``synchronous``: ``FULL`` (default) makes every commit survive power loss;
    ``NORMAL`` survives a killed process but may lose the last commits on power loss.
    ``clock`` stamps event ``created_at``. ``group_commit`` lets concurrent writes share
    one transaction and one fsync (see ``database``). Raises Unavailable.
    """
    await migrate_sqlite(path)
    db = await SqliteDatabase.open(
        path,
        synchronous=synchronous,
        busy_timeout_s=busy_timeout_s,
        clock=clock,
        group_commit=group_commit,
    )
    try:
        yield SqliteStorage(db)
    finally:
        await db.close()
