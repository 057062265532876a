"""Statement batching: concurrent callers share one pipeline and one round trip.

A statement sent on its own costs the server process a pool checkout, a wait on the
socket and a task wake-up: more CPU than building and sending the statement itself.
So the hot statements queue here, and what queues while a batch is on the wire goes
in the next one, on one connection in pipeline mode with ONE Sync at the end:

- A *write* batch is one transaction. Statements pipelined without a Sync between
  them run in one implicit transaction, which the Sync commits - or rolls back whole if
  any statement failed (PostgreSQL docs, protocol "Pipelining"). So a batch costs one
  round trip and one commit (one WAL flush) however many statements it holds, and
  each caller returns only after that commit. One write batch is in flight at a time
  (group commit: batches grow with the load, and two batches of one process never
  wait on each other's row locks).
- A *read* batch is the same without the commit; up to ``lanes`` are in flight at
  once, so a read waits for at most one pipeline round trip before its own.
- A *lookup* (rows by key: a user by id, the devices of some users) is a read that
  merges with the lookups of the same query in its batch: ONE statement fetches the
  rows of every key asked (``= ANY(%(keys)s)``), and each caller gets the rows of its
  own keys, in the statement's order.

If the database rejects a statement (the batch rolled back), every statement of the
batch runs again on its own, so each caller gets its own answer (NotFound, Conflict)
and the good ones still commit. If the connection broke, a write batch may or may not
have committed: its callers get Unavailable, as a lone statement would; reads retry.

The connections must be autocommit (``db.configure_connection``): psycopg then sends
no Sync of its own inside the pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, LiteralString

import attrs
import psycopg

from omninudge_adapters.postgres.arrays import TextArray
from omninudge_core.errors import PortError, Unavailable

__all__ = ["MAX_BATCH", "Connect", "Params", "Rows", "StatementBatcher", "run_alone"]

# A bound on one batch (its statements and results travel in one pipeline).
MAX_BATCH = 256

Connection = psycopg.AsyncConnection[Any]
# Borrows a pooled connection; maps driver errors inside the block (``db.Database``).
Connect = Callable[[str], AbstractAsyncContextManager[Connection]]
Params = Sequence[Any] | dict[str, Any]
Rows = list[tuple[Any, ...]]


@attrs.define
class _Queued:
    action: str
    query: LiteralString
    params: Params
    returns_rows: bool
    future: asyncio.Future[Rows]
    # A lookup: the keys asked, and how many leading columns of a row must be among
    # them for the row to be this caller's (``params`` is then ``{"keys": [...]}``).
    keys: Sequence[str] | None = None
    key_columns: int = 1

    def mine(self, rows_by_key: dict[Any, Rows]) -> Rows:
        """This lookup's rows out of a merged result (grouped by first column)."""
        assert self.keys is not None
        wanted = set(self.keys) if self.key_columns > 1 else ()
        found: Rows = []
        for key in dict.fromkeys(self.keys):
            for row in rows_by_key.get(key, ()):
                if all(row[i] in wanted for i in range(1, self.key_columns)):
                    found.append(row)
        return found


class _Rejected(Exception):
    """The database answered a statement of the batch with an error: nothing of the
    batch was committed, and the connection is still fine."""


async def run_alone(
    connect: Connect,
    action: str,
    query: LiteralString,
    params: Params,
    *,
    returns_rows: bool = True,
) -> Rows:
    """One statement in its own (autocommit) transaction. Raises PortError."""
    async with connect(action) as conn:
        cur = await conn.execute(query, params, prepare=True)
        return await cur.fetchall() if returns_rows else []


class StatementBatcher:
    """Runs statements for concurrent callers in shared pipelines (see module doc)."""

    def __init__(self, connect: Connect, *, lanes: int, transactional: bool) -> None:
        self._connect = connect
        self._lanes = lanes
        self._transactional = transactional
        self._queue: list[_Queued] = []
        self._running = 0  # lanes (tasks) writing batches
        self._starting = False  # a lane was started and has not taken its batch yet
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # for benchmarks and tests: pipelines of 2+ statements sent

    async def run(
        self,
        action: str,
        query: LiteralString,
        params: Params,
        *,
        returns_rows: bool = True,
    ) -> Rows:
        """The statement's rows (``[]`` with ``returns_rows=False``), once its batch
        has completed - for a write batch, once it has committed. Raises PortError."""
        return await self._enqueue(_Queued(action, query, params, returns_rows, _new_future()))

    async def lookup(
        self, action: str, query: LiteralString, keys: Sequence[str], *, key_columns: int = 1
    ) -> Rows:
        """The rows of ``query`` (whose one parameter is ``%(keys)s``, a text array)
        whose first ``key_columns`` columns are all among ``keys``, merged with the
        other lookups of ``query`` in the batch. Raises PortError."""
        queued = _Queued(
            action, query, {"keys": TextArray(keys)}, True, _new_future(), keys, key_columns
        )
        return await self._enqueue(queued)

    async def _enqueue(self, queued: _Queued) -> Rows:
        self._queue.append(queued)
        loop = asyncio.get_running_loop()
        if not self._starting and self._running < self._lanes:
            self._starting = True
            self._running += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Shielded: a cancelled caller must not cancel the batch the others wait for.
        return await asyncio.shield(queued.future)

    async def _drain(self) -> None:
        batch: list[_Queued] = []
        took = False
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                if not took:
                    # Started in the tick the first caller queued: everything queued in
                    # that tick is in the batch; later callers may start another lane.
                    took = True
                    self._starting = False
                await self._run(batch)
        except BaseException:
            # Cancelled (shutdown) or a bug: no caller may wait forever.
            _fail([*batch, *self._queue], Unavailable("the database is shutting down"))
            self._queue = []
            raise
        finally:
            if not took:  # cancelled before its first batch: let the next caller start one
                self._starting = False
            self._running -= 1

    async def _run(self, batch: list[_Queued]) -> None:
        if len(batch) == 1:
            await self._run_alone(batch[0])
            return
        try:
            results = await self._pipelined_once_more_if_stale(batch)
        except _Rejected:
            # Each on its own, so that each caller gets its own answer.
            for queued in batch:
                await self._run_alone(queued)
            return
        except PortError as exc:
            _fail(batch, exc)
            return
        for queued, rows in zip(batch, results, strict=True):
            if not queued.future.done():
                queued.future.set_result(rows)

    async def _pipelined_once_more_if_stale(self, batch: list[_Queued]) -> list[Rows]:
        """``_pipelined``; a read batch that failed at once (a connection that died
        while idle) is sent once more, on a fresh one. A write is never repeated, and a
        read that failed slowly (the database is down) must not make its callers wait
        twice. Raises _Rejected or PortError."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await self._pipelined(batch)
        except PortError:
            if self._transactional or loop.time() - started > _STALE_FAILURE_S:
                raise
        return await self._pipelined(batch)

    async def _run_alone(self, queued: _Queued) -> None:
        try:
            rows = await run_alone(
                self._connect,
                queued.action,
                queued.query,
                queued.params,
                returns_rows=queued.returns_rows,
            )
        except PortError as exc:
            _fail([queued], exc)
            return
        if queued.keys is not None:
            rows = queued.mine(_by_first_column(rows))
        if not queued.future.done():
            queued.future.set_result(rows)

    async def _pipelined(self, batch: list[_Queued]) -> list[Rows]:
        """Every statement of ``batch`` in one pipeline with one Sync (one implicit
        transaction), lookups of one query merged into one statement. Raises
        _Rejected, or PortError (Unavailable) for a broken connection or none available."""
        statements: list[_Queued] = []  # what is sent: each plain one, one per lookup query
        sent_as: list[int] = []  # for each of ``batch``, its index in ``statements``
        merged_keys: dict[int, dict[str, None]] = {}  # per merged lookup, its keys (in order)
        lookup_index: dict[str, int] = {}
        for queued in batch:
            if queued.keys is None:
                sent_as.append(len(statements))
                statements.append(queued)
                continue
            index = lookup_index.get(queued.query)
            if index is None:
                index = lookup_index[queued.query] = len(statements)
                merged_keys[index] = {}
                statements.append(queued)  # its params are replaced below
            sent_as.append(index)
            merged_keys[index].update(dict.fromkeys(queued.keys))
        for index, keys in merged_keys.items():
            statements[index] = attrs.evolve(statements[index], params={"keys": TextArray(keys)})
        action = f"{batch[0].action} (batched)"
        async with self._connect(action) as conn:
            try:
                async with conn.pipeline():
                    cursors = []
                    for statement in statements:
                        cur = conn.cursor()
                        await cur.execute(statement.query, statement.params, prepare=True)
                        cursors.append(cur)
            except psycopg.Error as exc:
                if conn.broken:
                    raise  # mapped to Unavailable by ``connect``
                raise _Rejected() from exc
            results = [
                await cur.fetchall() if statement.returns_rows else []
                for cur, statement in zip(cursors, statements, strict=True)
            ]
        self.batches += 1
        grouped: dict[int, dict[Any, Rows]] = {}
        answers: list[Rows] = []
        for queued, index in zip(batch, sent_as, strict=True):
            if queued.keys is None:
                answers.append(results[index])
                continue
            if index not in grouped:
                grouped[index] = _by_first_column(results[index])
            answers.append(queued.mine(grouped[index]))
        return answers


# A read batch that failed faster than this met a dead idle connection (see _run).
_STALE_FAILURE_S = 0.5


def _fail(batch: Sequence[_Queued], error: BaseException) -> None:
    for queued in batch:
        if not queued.future.done():
            queued.future.set_exception(error)


def _by_first_column(rows: Rows) -> dict[Any, Rows]:
    by_key: dict[Any, Rows] = {}
    for row in rows:
        by_key.setdefault(row[0], []).append(row)
    return by_key


def _new_future() -> asyncio.Future[Rows]:
    future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
    # A caller cancelled while waiting must not leave an unretrieved exception.
    future.add_done_callback(_retrieve)
    return future


def _retrieve(future: asyncio.Future[Rows]) -> None:
    if not future.cancelled():
        future.exception()
