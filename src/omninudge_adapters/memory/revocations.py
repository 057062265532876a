"""In-process token revocation list for the single-process embedded mode.

A revoked token id is remembered until its own expiry (``until``); after that the
token is dead anyway, so the entry is dropped.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from datetime import datetime

__all__ = ["MemoryRevocations"]


class MemoryRevocations:
    """Implements ``omninudge_core.ports.Revocations`` in process memory."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._expiry_heap: list[tuple[float, str]] = []

    async def revoke(self, jti: str, until: datetime) -> None:
        deadline = until.timestamp()
        now = self._clock()
        with self._lock:
            self._purge(now)
            if deadline <= now:
                return  # already expired: nothing to remember
            if deadline > self._until.get(jti, float("-inf")):
                self._until[jti] = deadline
                heapq.heappush(self._expiry_heap, (deadline, jti))

    async def is_revoked(self, jti: str) -> bool:
        now = self._clock()
        with self._lock:
            deadline = self._until.get(jti)
            return deadline is not None and deadline > now

    def _purge(self, now: float) -> None:
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            deadline, jti = heapq.heappop(self._expiry_heap)
            if self._until.get(jti) == deadline:
                del self._until[jti]
