"""What a WebSocket connection's loop waits for: ONE bounded queue of items (a client
frame, a hub notice, the socket gone) and the session's next deadline (see ``ws``).

The loop sleeps on one future, woken by whoever queues an item, with one timer per
session deadline, instead of a ``wait_for`` task and timer per item. Stream
announcements that arrive while one is queued fold into it (one ``EventsAvailable``,
one push for all).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

__all__ = ["ANNOUNCED", "QUEUE_SIZE", "Frame", "Gone", "Inbox", "Item", "Notice"]

QUEUE_SIZE = 256  # client frames waiting for the loop; the reader blocks beyond it


class Frame:
    __slots__ = ("data",)

    def __init__(self, data: str | bytes) -> None:
        self.data = data


class Notice:
    __slots__ = ("notice",)

    def __init__(self, notice: Mapping[str, Any]) -> None:
        self.notice = notice


class Gone:
    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


Item = Frame | Notice | Gone

# Stands in the queue for every stream announcement not yet fed (``announced_up_to``).
ANNOUNCED = Notice({"k": "events"})


class Inbox:
    """The connection's queue, its folded announcements and its deadline's timer.
    ``deadline`` is the session's (``WakeAt``); ``next_item`` returns None once it is due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], datetime]) -> None:
        self._loop = loop
        self._clock = clock
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.deadline = clock()
        # The highest stream seq announced and not yet fed to the session. Announcements
        # fold into one: at most one marker (ANNOUNCED) waits for them in the queue, and
        # when the queue was full the loop takes them on its next turn.
        self.announced_up_to = 0
        self._announcement_queued = False
        self.going_away = False  # the server is shutting down (Hub.going_away)
        self._waiter: asyncio.Future[None] | None = None  # the loop, waiting for an item
        self._timer: asyncio.TimerHandle | None = None  # wakes the loop at self.deadline
        self._timer_for: datetime | None = None  # the deadline _timer was armed for

    def on_notice(self, notice: Mapping[str, Any]) -> None:
        """Queue a hub notice (``WsConnection.on_notice``); never waits."""
        kind = notice.get("k")
        if kind == "events":
            up_to = notice.get("up_to")
            if isinstance(up_to, int):
                self.announced_up_to = max(self.announced_up_to, up_to)
                if not self._announcement_queued:
                    with contextlib.suppress(asyncio.QueueFull):
                        self.queue.put_nowait(ANNOUNCED)
                        self._announcement_queued = True
                self._wake()
            return
        if kind == "shutdown":
            self.going_away = True  # seen by next_item even when the queue is full
        with contextlib.suppress(asyncio.QueueFull):
            # An ephemeral frame (typing, presence) may be dropped under pressure.
            self.queue.put_nowait(Notice(notice))
        self._wake()

    async def put(self, item: Item) -> None:
        await self.queue.put(item)  # waits while the queue is full (backpressure)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_item(self) -> Item | None:
        """The next item for the loop, or None when the session's deadline is due
        (a due deadline goes before queued items)."""
        while True:
            if self.going_away:
                return Notice({"k": "shutdown"})
            if self.announced_up_to and not self._announcement_queued:
                return self._take_announced()  # the queue was full when they came
            now = self._clock()
            if now >= self.deadline:
                return None
            if not self.queue.empty():
                item = self.queue.get_nowait()
                if item is ANNOUNCED:
                    self._announcement_queued = False
                    return self._take_announced()
                return item
            await self._sleep(now)

    def _take_announced(self) -> Notice:
        up_to, self.announced_up_to = self.announced_up_to, 0
        return Notice({"k": "events", "up_to": up_to})

    async def _sleep(self, now: datetime) -> None:
        """Wait until an item is queued (``_wake``) or the deadline's timer fires."""
        loop = self._loop
        if self._timer is None or self._timer_for != self.deadline:
            # One timer per deadline (they move every ping interval), not one per item.
            if self._timer is not None:
                self._timer.cancel()
            delay = (self.deadline - now).total_seconds()
            self._timer = loop.call_later(delay, self._on_timer)
            self._timer_for = self.deadline
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
