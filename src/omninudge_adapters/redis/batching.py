"""Lua script calls made close together go to Redis in one pipeline.

Every durable message costs a rate-limit hit and two fan-out publishes, each a Lua
script (``EVALSHA``): alone, each is a pool checkout, a write and a read of its own.
``ScriptBatcher`` queues the calls made while a pipeline is on its way (or in the same
turn of the event loop) and sends them together as the next pipeline, without a
transaction: each script stays atomic on its own, as it was; only the round trip is
shared. With one pipeline in flight the batches grow with the load and nothing waits
when the server is quiet.

A call's outcome is its own: a script error reaches that caller only; a connection
error reaches every caller of the pipeline (each would have met it alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["ScriptBatcher"]

MAX_BATCH = 512  # calls per pipeline, so one reply stays a bounded read


class _Call:
    __slots__ = ("args", "future", "keys", "script")

    def __init__(
        self,
        script: AsyncScript,
        keys: Sequence[Any],
        args: Sequence[Any],
        future: asyncio.Future[Any],
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future = future


class ScriptBatcher:
    """Sends queued script calls as pipelines, one pipeline in flight at a time."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._queue: list[_Call] = []
        self._running: asyncio.Task[None] | None = None
        self._scheduled = False
        self.pipelines = 0  # pipelines sent (for benchmarks and tests)

    async def call(self, script: AsyncScript, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's result. Raises what redis-py raises (the caller maps it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Call(script, keys, args, future))
        if self._running is None and not self._scheduled:
            self._scheduled = True  # the calls of this turn of the loop join it
            loop.call_soon(self._start)
        # Shielded: a caller that gives up must not cancel the pipeline of the others.
        return await asyncio.shield(future)

    def _start(self) -> None:
        self._scheduled = False
        if self._running is not None or not self._queue:
            return
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        self._running = asyncio.get_running_loop().create_task(self._send(batch))
        self._running.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running = None
        if self._queue:
            self._start()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if len(batch) == 1:
                call = batch[0]
                results: list[Any] = [await call.script(keys=call.keys, args=call.args)]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for call in batch:
                        # EVALSHA queued directly: redis-py's script-in-pipeline support
                        # asks SCRIPT EXISTS first, a second round trip per pipeline.
                        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
                    results = await pipe.execute(raise_on_error=False)
                for index, result in enumerate(results):
                    if isinstance(result, NoScriptError):
                        # Redis restarted (or flushed its scripts): alone, the script
                        # object loads itself and runs again.
                        call = batch[index]
                        try:
                            results[index] = await call.script(keys=call.keys, args=call.args)
                        except Exception as exc:
                            results[index] = exc
            self.pipelines += 1
        except BaseException as exc:
            for call in batch:
                _settle(call.future, None, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                _settle(call.future, None, result)
            else:
                _settle(call.future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(error)
        future.exception()  # retrieved: a caller that gave up leaves no warning behind
