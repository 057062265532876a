"""``PostgresStorage``: every relational store on one psycopg connection pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool

from omninudge_adapters.postgres.conversations import PostgresConversationStore
from omninudge_adapters.postgres.db import Connection, Database, configure_connection
from omninudge_adapters.postgres.errors import map_errors
from omninudge_adapters.postgres.events import PostgresEventStore
from omninudge_adapters.postgres.messages import PostgresMessageStore
from omninudge_adapters.postgres.migrate import migrate_postgres
from omninudge_adapters.postgres.people import (
    PostgresBlockStore,
    PostgresDeviceStore,
    PostgresUserStore,
)
from omninudge_adapters.postgres.records import (
    PostgresInvitationStore,
    PostgresMediaStore,
    PostgresMigrationStore,
    PostgresRedditTokenStore,
)
from omninudge_core.ports import (
    BlockStore,
    ConversationStore,
    DeviceStore,
    EventStore,
    InvitationStore,
    MediaStore,
    MessageStore,
    MigrationStore,
    RedditTokenStore,
    UserStore,
)

__all__ = ["PostgresStorage", "open_postgres_storage"]


class PostgresStorage:
    """The relational stores of one PostgreSQL database (``ports.Storage``)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Typed as the ports: ``Storage``'s attributes are invariant, and this makes
        # mypy check that every store implements its port.
        self.users: UserStore = PostgresUserStore(db)
        self.devices: DeviceStore = PostgresDeviceStore(db)
        self.blocks: BlockStore = PostgresBlockStore(db)
        self.conversations: ConversationStore = PostgresConversationStore(db)
        self.messages: MessageStore = PostgresMessageStore(db)
        self.events: EventStore = PostgresEventStore(db)
        self.media: MediaStore = PostgresMediaStore(db)
        self.invitations: InvitationStore = PostgresInvitationStore(db)
        self.migrations: MigrationStore = PostgresMigrationStore(db)
        self.reddit_tokens: RedditTokenStore = PostgresRedditTokenStore(db)

    async def ping(self) -> None:
        """Raises Unavailable when the database does not answer."""
        async with self._db.connection("ping") as conn:
            await conn.execute("SELECT 1")


@asynccontextmanager
async def open_postgres_storage(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    connect_timeout_s: float = 10.0,
    migrate: bool = True,
    group_commit: bool = True,
) -> AsyncIterator[PostgresStorage]:
    """Open a pool on ``dsn`` (``postgresql://...``), apply pending migrations (unless
    ``migrate=False``) and yield the storage; the pool is closed on exit.

    ``connect_timeout_s`` bounds both the initial connection and the wait for a free
    connection later. ``group_commit`` batches concurrent writes into one transaction
    and one round trip (see ``batching``). Raises Unavailable when the database cannot
    be reached.

    Pool size: the hot statements of any number of clients share batches, so they
    hold at most ``1 + db.READ_LANES`` connections at once (one write batch, the read
    batches); the rest of ``max_size`` serves the other, unbatched queries. The two
    kept open (``min_size``) are the write lane and one read lane, so a quiet server
    answers without opening a connection; a PostgreSQL on 2 cores gains nothing from
    more connections than that working at once."""
    if migrate:
        await migrate_postgres(dsn)
    pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
        dsn,
        min_size=min(min_size, max_size),
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=configure_connection,
        timeout=connect_timeout_s,
        open=False,
        name="omninudge",
    )
    with map_errors("open storage"):
        await pool.open(wait=True, timeout=connect_timeout_s)
    try:
        yield PostgresStorage(Database(pool, group_commit=group_commit))
    finally:
        await pool.close()
