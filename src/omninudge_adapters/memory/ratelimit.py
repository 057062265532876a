"""In-process rate limiter for the single-process embedded mode.

One token bucket per key (``omninudge_core.policies.ratelimit``); each hit is atomic
under a lock. A bucket that has refilled completely is equivalent to no bucket, so
idle ones are swept away and memory stays bounded by the active keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from omninudge_core.policies.ratelimit import TokenBucket, idle_after_s, take
from omninudge_core.ports import RateVerdict

__all__ = ["MemoryRateLimiter"]

_SWEEP_EVERY = 1024


class MemoryRateLimiter:
    """Implements ``omninudge_core.ports.RateLimiter`` in process memory."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (bucket, instant it is full again)
        self._buckets: dict[str, tuple[TokenBucket, datetime]] = {}
        self._hits = 0

    async def hit(
        self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0
    ) -> RateVerdict:
        now = datetime.fromtimestamp(self._clock(), UTC)
        with self._lock:
            entry = self._buckets.get(key)
            bucket, verdict = take(entry[0] if entry else None, now, rate_per_s, burst, cost)
            full_at = bucket.updated_at + timedelta(
                seconds=idle_after_s(bucket, rate_per_s=rate_per_s, burst=burst)
            )
            self._buckets[key] = (bucket, full_at)
            self._hits += 1
            if self._hits % _SWEEP_EVERY == 0:
                self._sweep(now)
        return verdict

    def _sweep(self, now: datetime) -> None:
        for key in [k for k, (_, full_at) in self._buckets.items() if full_at <= now]:
            del self._buckets[key]
