"""A WebSocket connection's socket I/O: the reader that feeds every frame the peer
sends into the connection's inbox, and sends watched by one timer per connection
(``SendWatchdog``) instead of an ``asyncio.timeout`` per frame. Only the connection's
loop sends, so no two coroutines ever write to the socket at once (see ``ws``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from omninudge_server.metrics import Metrics
from omninudge_server.ws_inbox import Frame, Gone, Inbox

__all__ = ["SendWatchdog", "SlowConsumer", "SocketIO"]


class SlowConsumer(Exception):
    """The socket stayed unwritable for ``ws_send_timeout_s``: the peer stopped reading."""


class SendWatchdog:
    """Cancels the connection's task when one send has waited ``limit`` seconds.

    One timer per connection, armed by the first send after it last fired, rather
    than one per frame: a send normally completes at once (uvicorn only waits while
    the transport is paused), so when the timer fires it usually finds no send in
    progress and simply lapses. ``expired`` tells the sender that the cancellation
    was ours, as ``asyncio.timeout`` does with ``uncancel``.
    """

    __slots__ = ("_baseline", "_handle", "_limit", "_loop", "_task", "expired", "since")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self._loop = loop
        self._limit = limit
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._baseline = 0
        self.since: float | None = None  # loop time at which the pending send began
        self.expired = False

    def begin(self) -> None:
        self.since = self._loop.time()
        if self._handle is None:
            # The task to cancel: the one sending (only the connection's loop sends).
            self._task = asyncio.current_task()
            self._handle = self._loop.call_at(self.since + self._limit, self._check)

    def end(self) -> None:
        self.since = None

    async def guard(self, send: Awaitable[None]) -> None:
        """Await ``send`` under the watchdog. Raises SlowConsumer when it waited too long."""
        self.begin()
        try:
            await send
        except asyncio.CancelledError:
            if self.owns_cancellation():
                raise SlowConsumer from None
            raise
        finally:
            self.end()

    def owns_cancellation(self) -> bool:
        """After a CancelledError in a send: True (and the cancel undone) when it
        was this watchdog's and nobody else cancelled the task too."""
        if not self.expired or self._task is None:
            return False
        self.expired = False
        return self._task.uncancel() <= self._baseline

    def _check(self) -> None:
        self._handle = None
        if self.since is None or self._task is None:
            return  # no send in progress: the next one re-arms
        due = self.since + self._limit
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self.expired = True
        self._baseline = self._task.cancelling()
        self._task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class SocketIO:
    """Reads the socket into the inbox and sends text under the watchdog, counting
    frames both ways."""

    def __init__(
        self,
        websocket: WebSocket,
        loop: asyncio.AbstractEventLoop,
        send_timeout_s: float,
        metrics: Metrics,
    ) -> None:
        self.websocket = websocket
        self._watchdog = SendWatchdog(loop, send_timeout_s)
        self._frames_in = metrics.ws_frames.labels(direction="in")
        self._frames_out = metrics.ws_frames.labels(direction="out")

    async def read_into(self, inbox: Inbox) -> None:
        """The reader task: every frame goes to ``inbox``, then ``Gone`` when the
        socket closes (waits while the inbox is full)."""
        try:
            while True:
                message = await self.websocket.receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    await inbox.put(Gone(int(message.get("code") or 1000)))
                    return
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                self._frames_in.inc()
                await inbox.put(Frame(data))
        except (WebSocketDisconnect, RuntimeError, OSError):
            await inbox.put(Gone(1006))

    async def send_text(self, text: str) -> None:
        """Send ``text`` unless the socket is closed. Raises SlowConsumer when the send
        waited ``send_timeout_s``, and whatever the socket raises."""
        if self.websocket.application_state is not WebSocketState.CONNECTED:
            return
        watchdog = self._watchdog
        # uvicorn's send waits while the transport is paused (the peer's buffer is full).
        await watchdog.guard(self.websocket.send_text(text))
        self._frames_out.inc()

    def close_watchdog(self) -> None:
        self._watchdog.close()
