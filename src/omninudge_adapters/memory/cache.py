"""In-process cache for the single-process embedded mode.

Entries expire ``ttl_s`` after they are set and the cache is bounded: past
``max_entries`` entries or ``max_bytes`` of values, the least recently used entries
are evicted. Freshness (fresh/stale) is the caller's business
(``omninudge_core.policies.cache``); this only keeps bytes for a while.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MemoryCache"]


class MemoryCache:
    """Implements ``omninudge_core.ports.Cache`` in process memory."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self._clock = clock
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    async def get(self, key: str) -> bytes | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            value, expires_at = entry
            if expires_at <= now:
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        expires_at = self._clock() + ttl_s
        with self._lock:
            self._remove(key)
            if ttl_s <= 0 or len(value) > self._max_bytes:
                return  # already expired, or could never fit
            self._entries[key] = (value, expires_at)
            self._bytes += len(value)
            while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
                oldest = next(iter(self._entries))
                self._remove(oldest)

    async def delete(self, key: str) -> None:
        with self._lock:
            self._remove(key)

    def __len__(self) -> int:
        return len(self._entries)

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])
