"""The SQLite connections: one writer, one reader, each owned by one thread.

SQLite is a C library that blocks, so every statement runs off the event loop. The
unit of work sent to a connection's thread is a whole *transaction* (or a whole read),
never a single statement: a store method hands ``transaction()`` an async function of a
``Transaction``; the thread drives that coroutine to its end (its ``Transaction`` calls
run at once and never suspend), so an append of ten statements costs one trip to the
thread, not ten. A body must therefore await nothing but its ``Transaction`` and
helpers that do the same (``_drive`` refuses anything else).

Each thread takes every job waiting when it wakes and hands all their results back
with ONE call into the event loop: under load, the price of a trip (a wake-up of the
loop and a GIL hand-over) is shared by many callers.

SQLite allows one writer at a time; every write in this process runs on the single
writer connection, in ``BEGIN IMMEDIATE`` so a writer in *another* process (``omninudge
migrate``) is waited for (busy_timeout) instead of failing half-way. Reads go to the
reader connection: in WAL mode they never block the writer and see every commit.

Durability: ``synchronous=FULL`` (the default here) fsyncs the WAL at every commit, so
a committed write survives power loss. ``NORMAL`` skips that fsync: a commit still
survives the process being killed, but the last transactions may be lost if the
machine loses power.

Group commit (on by default): the writes requested while the writer is busy (or in the
same turn of the event loop) form the next *group*, run as one job: one transaction,
each write inside its own SAVEPOINT (a write that fails is rolled back alone), one
COMMIT - one fsync for the whole group - and every member returns only after that
COMMIT succeeded. ``group_commit=False`` gives one transaction (and fsync) per write.

Every ``sqlite3`` exception is mapped here (IntegrityError -> Conflict, anything else
-> Unavailable) and chained with ``from``; none escapes the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from os import PathLike
from typing import Any, Literal, TypeVar, cast

from omninudge_core.errors import Conflict, PortError, Unavailable

__all__ = ["SqliteDatabase", "Synchronous", "Transaction", "chunked", "map_sqlite_error"]

Synchronous = Literal["FULL", "NORMAL", "EXTRA"]

T = TypeVar("T")

Params = Sequence[Any] | Mapping[str, Any]
"""Positional (``?``) or named (``:name``) statement parameters."""

Work = Callable[["Transaction"], Awaitable[T]]
"""The body of one write transaction (see the module doc)."""

# A bound on one group, so one job (and the loop's wait for it) stays short.
MAX_GROUP = 512

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


def _mapped(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        mapped = map_sqlite_error(exc)
        mapped.__cause__ = exc
        return mapped
    return exc


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a transaction body to its end on this thread (it must never suspend)."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return cast(T, finished.value)
    coroutine.close()
    raise RuntimeError("a sqlite transaction body awaited something other than its Transaction")


class Transaction:
    """Statements inside one write transaction, run at once on the writer's thread."""

    __slots__ = ("_connection",)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = self._connection.execute(sql, params).fetchall()
        return rows

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._connection.execute(sql, params).fetchone()
        return row

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return self._connection.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows)


_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller gave up waiting (cancelled)
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class _ConnectionThread:
    """One sqlite3 connection and the one thread that uses it (see the module doc)."""

    def __init__(self, connection: sqlite3.Connection, name: str) -> None:
        self.connection = connection
        self._jobs: queue.SimpleQueue[
            tuple[asyncio.Future[Any], Callable[[sqlite3.Connection], Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, job))
        return future

    async def stop(self) -> None:
        """Finish the jobs queued so far, close the connection, end the thread."""
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        connection = self.connection
        while True:
            batch = [self._jobs.get()]
            while True:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
            stopping = False
            for item in batch:
                if item is None:
                    stopping = True
                    continue
                future, job = item
                try:
                    outcome: _Outcome = (future, job(connection), None)
                except BaseException as exc:  # handed to the caller, mapped
                    outcome = (future, None, _mapped(exc))
                by_loop.setdefault(future.get_loop(), []).append(outcome)
            for loop, outcomes in by_loop.items():
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    loop.call_soon_threadsafe(_settle, outcomes)
            if stopping:
                connection.close()
                return


class _Pending:
    __slots__ = ("future", "work")

    def __init__(self, work: Work[Any], future: asyncio.Future[Any]) -> None:
        self.work = work
        self.future = future


class SqliteDatabase:
    """Owns the writer and reader connections of one database file."""

    def __init__(
        self,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        *,
        clock: Callable[[], datetime],
        group_commit: bool = True,
    ) -> None:
        self._writer = _ConnectionThread(writer, "omninudge-sqlite-writer")
        self._reader = _ConnectionThread(reader, "omninudge-sqlite-reader")
        self._closed = False
        self.clock = clock
        self.group_commit = group_commit
        # Group commit: writes waiting for the next group, and whether one is running.
        self._pending: list[_Pending] = []
        self._group_running = False
        self._flush_scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()
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

        def connect() -> tuple[sqlite3.Connection, sqlite3.Connection]:
            opened: list[sqlite3.Connection] = []
            try:
                for role in ("writer", "reader"):
                    # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE.
                    connection = sqlite3.connect(
                        os.fspath(path),
                        isolation_level=None,
                        timeout=busy_timeout_s,
                        check_same_thread=False,  # opened here, used by its own thread
                    )
                    opened.append(connection)
                    connection.row_factory = sqlite3.Row
                    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
                    connection.execute("PRAGMA foreign_keys = ON")
                    connection.execute(f"PRAGMA synchronous = {synchronous}")
                    if role == "reader":
                        connection.execute("PRAGMA query_only = ON")
                mode = opened[0].execute("PRAGMA journal_mode = WAL").fetchone()
                if mode is None or str(mode[0]).lower() != "wal":
                    raise Unavailable("sqlite could not switch the database to WAL mode")
            except BaseException:
                for connection in opened:
                    connection.close()
                raise
            return opened[0], opened[1]

        try:
            writer, reader = await asyncio.to_thread(connect)
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open sqlite database {path}: {exc}") from exc
        return cls(writer, reader, clock=clock, group_commit=group_commit)

    async def close(self) -> None:
        """Let the writes already requested finish, then close both connections."""
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()
        await self._writer.stop()
        await self._reader.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the sqlite storage is closed")

    # --- reads -----------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """One read statement on the reader connection. Raises Unavailable."""
        self._check_open()
        rows: list[sqlite3.Row] = await self._reader.submit(
            lambda connection: connection.execute(sql, params).fetchall()
        )
        return rows

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    # --- writes ----------------------------------------------------------------------------

    async def transaction(self, work: Work[T]) -> T:
        """Run ``work`` in a write transaction on the writer's thread; return its result
        once the transaction committed. With group commit the transaction is shared with
        concurrent writes (each in its own savepoint). A body that raises rolls back its
        own writes and its error reaches the caller (driver errors mapped). Raises
        Conflict or Unavailable."""
        self._check_open()
        if not self.group_commit:
            return await self._writer.submit(lambda connection: _alone(connection, work))
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(work, future))
        self._idle.clear()
        if not self._group_running and not self._flush_scheduled:
            # Writes requested in this same turn of the loop join the group.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_group)
        return await future

    def _start_group(self) -> None:
        self._flush_scheduled = False
        if self._group_running or not self._pending:
            return
        members = self._pending[:MAX_GROUP]
        del self._pending[:MAX_GROUP]
        self._group_running = True
        done = self._writer.submit(lambda connection: _run_group(connection, members))
        done.add_done_callback(lambda finished: self._group_finished(finished, members))

    def _group_finished(
        self, done: asyncio.Future[list[_Outcome]], members: list[_Pending]
    ) -> None:
        self._group_running = False
        outcomes: list[_Outcome]
        if done.cancelled() or done.exception() is not None:
            # _run_group does not raise; this is the thread itself failing.
            error = Unavailable("the sqlite writer failed")
            outcomes = [(member.future, None, error) for member in members]
        else:
            outcomes = done.result()
            if any(error is None for _, _, error in outcomes):
                self.groups_committed += 1
        _settle(outcomes)
        if self._pending:
            self._start_group()  # what queued meanwhile is the next group
        else:
            self._idle.set()


def _alone(connection: sqlite3.Connection, work: Work[T]) -> T:
    """One write in its own transaction (group commit off)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = _drive(cast(Coroutine[Any, Any, T], work(Transaction(connection))))
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise
    return result


def _run_group(connection: sqlite3.Connection, members: list[_Pending]) -> list[_Outcome]:
    """Every member in its own savepoint of one transaction, then one COMMIT. Runs on
    the writer's thread; returns each member's outcome (the COMMIT's error for all when
    it fails). Never raises."""
    outcomes: list[_Outcome] = []
    committed_members: list[int] = []  # indexes into outcomes that still need the COMMIT
    tx = Transaction(connection)
    for member in members:
        try:
            if not connection.in_transaction:
                connection.execute("BEGIN IMMEDIATE")
            connection.execute("SAVEPOINT omninudge_write")
        except BaseException as exc:
            outcomes.append((member.future, None, _mapped(exc)))
            continue
        try:
            result = _drive(cast(Coroutine[Any, Any, Any], member.work(tx)))
            connection.execute("RELEASE omninudge_write")
        except BaseException as exc:
            outcomes.append((member.future, None, _mapped(exc)))
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK TO omninudge_write")
                    connection.execute("RELEASE omninudge_write")
                except sqlite3.Error:
                    _rollback(connection)
            if not connection.in_transaction:
                # SQLite rolled the whole transaction back (some I/O errors do): the
                # group's earlier writes are gone, so their members must hear so.
                _fail(outcomes, committed_members, "sqlite rolled back a group of writes")
            continue
        committed_members.append(len(outcomes))
        outcomes.append((member.future, result, None))
    if connection.in_transaction:
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(connection)
            error = map_sqlite_error(exc)
            error.__cause__ = exc
            for index in committed_members:
                outcomes[index] = (outcomes[index][0], None, error)
    return outcomes


def _fail(outcomes: list[_Outcome], members: list[int], reason: str) -> None:
    for index in members:
        outcomes[index] = (outcomes[index][0], None, Unavailable(reason))
    members.clear()


def _rollback(connection: sqlite3.Connection) -> None:
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except sqlite3.Error:
        # The transaction is already gone (SQLite rolls back on some I/O errors).
        pass
