"""In-process fan-out for the single-process embedded mode.

``publish`` calls every listener subscribed to the user, in subscription order, before
it returns; an async listener is awaited. A listener that raises is logged and the
others still get the payload. Listeners should be quick (typically: put the payload
on the connection's queue), since the publisher waits for them. Best effort by design
(DESIGN.md): the durable event stream and resume close any gap.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable

__all__ = ["MemoryFanOut", "MemorySubscription"]

logger = logging.getLogger(__name__)

Listener = Callable[[bytes], Awaitable[None] | None]


class MemorySubscription:
    """Implements ``omninudge_core.ports.Subscription``; ``close`` is idempotent."""

    def __init__(self, fanout: MemoryFanOut, user_id: str, subscription_id: int) -> None:
        self._fanout = fanout
        self._user_id = user_id
        self._id = subscription_id

    async def close(self) -> None:
        self._fanout._unsubscribe(self._user_id, self._id)


class MemoryFanOut:
    """Implements ``omninudge_core.ports.FanOut`` in process memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._listeners: dict[str, dict[int, Listener]] = {}

    async def subscribe(self, user_id: str, listener: Listener) -> MemorySubscription:
        with self._lock:
            subscription_id = next(self._ids)
            self._listeners.setdefault(user_id, {})[subscription_id] = listener
        return MemorySubscription(self, user_id, subscription_id)

    async def publish(self, user_id: str, payload: bytes) -> None:
        with self._lock:
            targets = list(self._listeners.get(user_id, {}).items())
        for subscription_id, listener in targets:
            if not self._is_subscribed(user_id, subscription_id):
                continue  # closed by an earlier listener of this same publish
            try:
                result = listener(payload)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("fan-out listener for user %s failed", user_id)

    def subscriber_count(self, user_id: str) -> int:
        with self._lock:
            return len(self._listeners.get(user_id, {}))

    def _is_subscribed(self, user_id: str, subscription_id: int) -> bool:
        with self._lock:
            return subscription_id in self._listeners.get(user_id, {})

    def _unsubscribe(self, user_id: str, subscription_id: int) -> None:
        with self._lock:
            listeners = self._listeners.get(user_id)
            if listeners is None:
                return
            listeners.pop(subscription_id, None)
            if not listeners:
                del self._listeners[user_id]
