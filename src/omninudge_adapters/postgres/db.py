"""The connection pool every store shares, the one place errors are mapped, and the
batching of hot statements (``fetch``, ``write``; see ``batching``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, LiteralString

import psycopg
from psycopg_pool import AsyncConnectionPool

from omninudge_adapters.postgres.arrays import register_array_dumpers
from omninudge_adapters.postgres.batching import Params, Rows, StatementBatcher, run_alone
from omninudge_adapters.postgres.errors import map_errors

__all__ = ["READ_LANES", "Connection", "Database", "Rows"]

Connection = psycopg.AsyncConnection[Any]

_CHECK_TIMEOUT_S = 2.0

# Read batches in flight at once. Point reads take well under a round trip on the
# server, so a few lanes keep a read from queueing behind more than one batch.
READ_LANES = 4


class Database:
    """A psycopg pool of autocommit connections (UTC session time zone).

    Autocommit means a single statement is its own transaction in one round trip;
    multi-statement work opens ``conn.transaction()`` explicitly.
    """

    def __init__(self, pool: AsyncConnectionPool[Connection], *, group_commit: bool = True) -> None:
        self._pool = pool
        self.group_commit = group_commit
        self._reads = StatementBatcher(self.connection, lanes=READ_LANES, transactional=False)
        self._writes = StatementBatcher(self.connection, lanes=1, transactional=True)

    @property
    def read_batches(self) -> int:
        """Read batches of two or more statements sent (for benchmarks and tests)."""
        return self._reads.batches

    @property
    def write_batches(self) -> int:
        """Write batches of two or more statements committed (for benchmarks and tests)."""
        return self._writes.batches

    async def fetch(self, action: str, query: LiteralString, params: Params) -> Rows:
        """Run one hot read-only statement (prepared) in the next read batch; its rows.
        Raises PortError (Unavailable...)."""
        return await self._reads.run(action, query, params)

    async def lookup(
        self, action: str, query: LiteralString, keys: Sequence[str], *, key_columns: int = 1
    ) -> Rows:
        """The rows of ``query`` - a hot read whose one parameter is ``%(keys)s`` - that
        belong to ``keys`` (their first ``key_columns`` columns are among them); the
        lookups of one query in a read batch are one statement. Raises PortError."""
        return await self._reads.lookup(action, query, keys, key_columns=key_columns)

    async def write(
        self, action: str, query: LiteralString, params: Params, *, returns_rows: bool = True
    ) -> Rows:
        """Run one data-modifying statement (prepared) in its own transaction - shared
        with the other writes of its batch under group commit - and return its rows
        once committed. Raises NotFound, Conflict, Unavailable (see ``errors``)."""
        if not self.group_commit:
            return await run_alone(
                self.connection, action, query, params, returns_rows=returns_rows
            )
        return await self._writes.run(action, query, params, returns_rows=returns_rows)

    @asynccontextmanager
    async def connection(self, action: str) -> AsyncIterator[Connection]:
        """Borrow a connection; driver errors inside the block are mapped (see errors.py)."""
        with map_errors(action):
            try:
                async with self._pool.connection() as conn:
                    yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError):
                # The server may have restarted: drop the other idle connections that
                # died with it now, rather than failing one request per connection.
                await self._check_idle()
                raise

    @asynccontextmanager
    async def transaction(self, action: str) -> AsyncIterator[Connection]:
        """Borrow a connection inside one transaction (committed when the block ends)."""
        async with self.connection(action) as conn, conn.transaction():
            yield conn

    async def _check_idle(self) -> None:
        # Bounded: on a silent network the check itself could hang.
        with contextlib.suppress(psycopg.Error, TimeoutError):
            await asyncio.wait_for(self._pool.check(), timeout=_CHECK_TIMEOUT_S)


async def configure_connection(conn: Connection) -> None:
    """Called by the pool for each new connection."""
    await conn.set_autocommit(True)
    await conn.execute("SET TIME ZONE 'UTC'")
    register_array_dumpers(conn)
