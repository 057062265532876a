"""The connection pool every store shares, and the one place errors are mapped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from omninudge_adapters.postgres.errors import map_errors

__all__ = ["Connection", "Database"]

Connection = psycopg.AsyncConnection[Any]

_CHECK_TIMEOUT_S = 2.0


class Database:
    """A psycopg pool of autocommit connections (UTC session time zone).

    Autocommit means a single statement is its own transaction in one round trip;
    multi-statement work opens ``conn.transaction()`` explicitly.
    """

    def __init__(self, pool: AsyncConnectionPool[Connection]) -> None:
        self._pool = pool

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
