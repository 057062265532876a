"""The SQLite connections: one writer, one reader, and the error boundary.

SQLite allows one writer at a time. Rather than have several connections fight for
the write lock (and retry on SQLITE_BUSY), every write transaction in this process
queues on one ``asyncio.Lock`` and runs on the single writer connection, opened with
``BEGIN IMMEDIATE`` so a writer in *another* process (``omninudge migrate``) is waited
for (busy_timeout) instead of failing half-way. Reads go to a separate connection: in
WAL mode they never block the writer and see every committed transaction.

Durability: ``synchronous=FULL`` (the default here) fsyncs the WAL at every commit, so
a committed write survives power loss. ``NORMAL`` skips that fsync: a commit still
survives the process being killed (the WAL is written before COMMIT returns, and the
OS keeps it), but the last transactions may be lost if the machine loses power.

Group commit (on by default): writers that queue on the lock while a transaction is
open join it instead of starting their own. Each runs inside its own SAVEPOINT, so a
write that fails is rolled back alone; the last writer of the group (nobody else
waiting, or ``MAX_GROUP`` reached) commits, and every member returns only after that
COMMIT succeeded - one fsync for the whole group, and still no write is reported
before it is durable. ``group_commit=False`` gives one transaction per write.

Every ``sqlite3`` exception is mapped here (IntegrityError -> Conflict, anything else
-> Unavailable) and chained with ``from``; none escapes the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from os import PathLike
from typing import Any, Literal, TypeVar

import aiosqlite

from omninudge_core.errors import Conflict, PortError, Unavailable

__all__ = ["SqliteDatabase", "Synchronous", "chunked", "map_sqlite_error"]

Synchronous = Literal["FULL", "NORMAL", "EXTRA"]

T = TypeVar("T")

Params = Sequence[Any] | Mapping[str, Any]
"""Positional (``?``) or named (``:name``) statement parameters."""

# A bound on one group, so a steady stream of writers cannot hold COMMIT back forever.
MAX_GROUP = 256

# Stay under SQLITE_MAX_VARIABLE_NUMBER of old builds (999) for IN lists.
_IN_LIST_CHUNK = 500


def chunked(values: Sequence[T], size: int = _IN_LIST_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def map_sqlite_error(exc: sqlite3.Error) -> PortError:
    """The port error for a driver error (the caller chains it with ``from``)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict(f"sqlite refused the write: {exc}")
    return Unavailable(f"sqlite is unavailable: {exc}")


class SqliteDatabase:
    """Owns the writer and reader connections of one database file."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        clock: Callable[[], datetime],
        group_commit: bool = True,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._closed = False
        self.clock = clock
        self.group_commit = group_commit
        # Group commit: writers waiting for the lock, and the open group (if any).
        self._waiting = 0
        self._group: _Group | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self.groups_committed = 0  # for benchmarks and tests: commits of >= 1 write

    @classmethod
    async def open(
        cls,
        path: str | PathLike[str],
        *,
        synchronous: Synchronous,
        busy_timeout_s: float,
        clock: Callable[[], datetime],
        group_commit: bool = True,
    ) -> SqliteDatabase:
        """Open both connections. Raises Unavailable."""
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        opened: list[aiosqlite.Connection] = []
        try:
            for role in ("writer", "reader"):
                # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE.
                connection = await aiosqlite.connect(
                    os.fspath(path), isolation_level=None, timeout=busy_timeout_s
                )
                opened.append(connection)
                connection.row_factory = sqlite3.Row
                await connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
                await connection.execute("PRAGMA foreign_keys = ON")
                await connection.execute(f"PRAGMA synchronous = {synchronous}")
                if role == "reader":
                    await connection.execute("PRAGMA query_only = ON")
            mode = await (await opened[0].execute("PRAGMA journal_mode = WAL")).fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise Unavailable("sqlite could not switch the database to WAL mode")
        except sqlite3.Error as exc:
            for connection in opened:
                await connection.close()
            raise Unavailable(f"cannot open sqlite database {path}: {exc}") from exc
        except BaseException:
            for connection in opened:
                await connection.close()
            raise
        return cls(opened[0], opened[1], clock=clock, group_commit=group_commit)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            if self._group is not None:
                with contextlib.suppress(PortError):
                    await self._commit_group()
            await self._writer.close()
        await self._reader.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the sqlite storage is closed")

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """One read statement on the reader connection. Raises Unavailable."""
        self._check_open()
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise map_sqlite_error(exc) from exc

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Transaction]:
        """One write transaction: committed when the block ends, rolled back (and the
        error mapped) when it raises. With group commit the block's writes share a
        transaction with concurrent writers; the block still returns only after they
        are committed. Raises Conflict or Unavailable."""
        self._check_open()
        if self.group_commit:
            async with self._grouped_write() as tx:
                yield tx
            return
        async with self._write_lock:
            connection = self._writer
            try:
                await connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise map_sqlite_error(exc) from exc
            try:
                yield Transaction(connection)
            except BaseException as exc:
                await self._rollback(connection)
                if isinstance(exc, sqlite3.Error):
                    raise map_sqlite_error(exc) from exc
                raise
            try:
                await connection.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback(connection)
                raise map_sqlite_error(exc) from exc

    @asynccontextmanager
    async def _grouped_write(self) -> AsyncIterator[Transaction]:
        self._waiting += 1
        try:
            await self._write_lock.acquire()
        except BaseException:
            self._waiting -= 1
            self._flush_abandoned_group()
            raise
        self._waiting -= 1
        group: _Group | None = None
        try:
            connection = self._writer
            try:
                if self._group is None:
                    await connection.execute("BEGIN IMMEDIATE")
                    self._group = _Group()
                group = self._group
                await connection.execute("SAVEPOINT omninudge_write")
            except sqlite3.Error as exc:
                raise map_sqlite_error(exc) from exc
            try:
                yield Transaction(connection)
            except BaseException as exc:
                await self._rollback_savepoint(connection)
                if isinstance(exc, sqlite3.Error):
                    raise map_sqlite_error(exc) from exc
                raise
            try:
                await connection.execute("RELEASE omninudge_write")
            except sqlite3.Error as exc:
                await self._rollback_savepoint(connection)
                raise map_sqlite_error(exc) from exc
            group.members += 1
        except BaseException:
            if self._group is not None and not self._writer.in_transaction:
                # SQLite rolled the whole transaction back (some I/O errors do): the
                # group's earlier writes are gone, so its members must hear so.
                self._fail_group(Unavailable("sqlite rolled back a group of writes"))
            raise
        finally:
            # The last writer of the group commits it, also when its own write failed.
            if self._group is not None and (self._waiting == 0 or self._group.members >= MAX_GROUP):
                await self._commit_group()
            self._write_lock.release()
        assert group is not None
        # Shielded: a cancelled member must not cancel the commit the others wait for.
        await asyncio.shield(group.committed)

    async def _commit_group(self) -> None:
        """COMMIT the open group (lock held) and tell its members how it went."""
        group = self._group
        assert group is not None
        try:
            await self._writer.execute("COMMIT")
        except sqlite3.Error as exc:
            await self._rollback(self._writer)
            self._fail_group(map_sqlite_error(exc))
            return
        self._group = None
        self.groups_committed += 1
        group.committed.set_result(None)

    def _fail_group(self, error: PortError) -> None:
        group, self._group = self._group, None
        assert group is not None
        if group.members:
            group.committed.set_exception(error)
        else:
            group.committed.set_result(None)  # nobody waits on it

    def _flush_abandoned_group(self) -> None:
        # A writer gave up waiting for the lock: if it was the one the holder left the
        # group open for, nobody else will commit it.
        if self._group is None or self._waiting or self._write_lock.locked():
            return
        if self._flush_task is not None and not self._flush_task.done():
            return

        async def flush() -> None:
            async with self._write_lock:
                if self._group is not None and not self._closed:
                    await self._commit_group()

        self._flush_task = asyncio.get_running_loop().create_task(flush())

    @staticmethod
    async def _rollback_savepoint(connection: aiosqlite.Connection) -> None:
        # Shielded like _rollback: undo this writer's statements only, keep the group's.
        try:
            await asyncio.shield(connection.execute("ROLLBACK TO omninudge_write"))
            await asyncio.shield(connection.execute("RELEASE omninudge_write"))
        except sqlite3.Error:
            pass

    @staticmethod
    async def _rollback(connection: aiosqlite.Connection) -> None:
        # Shielded: a cancelled caller must not leave the writer inside a transaction.
        try:
            if connection.in_transaction:
                await asyncio.shield(connection.execute("ROLLBACK"))
        except sqlite3.Error:
            # The transaction is already gone (SQLite rolls back on some I/O errors).
            pass


class _Group:
    """Writers sharing one open transaction; ``committed`` resolves at its COMMIT."""

    __slots__ = ("committed", "members")

    def __init__(self) -> None:
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.members = 0


class Transaction:
    """Statements inside one write transaction (on the writer connection)."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._connection.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        # One trip to the connection's thread, not two: a finished DML statement is
        # already reset, so the cursor needs no close of its own (hot path).
        cursor = await self._connection.execute(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._connection.executemany(sql, rows)
