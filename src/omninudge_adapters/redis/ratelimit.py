"""Token buckets in Redis, atomic across every server instance.

One Lua script per hit does the whole ``omninudge_core.policies.ratelimit.take`` on
the hash ``ratelimit:{key}`` (``tokens``, ``updated_at``), reading Redis ``TIME`` so
all processes share one clock. The hash expires when the bucket would be full again
(``idle_after_s``): a missing bucket is a full one, so idle keys cost nothing.

When Redis is down ``hit`` raises Unavailable; ``FallbackRateLimiter`` turns that into
a per-process limit so the server keeps limiting (each instance then allows its own
burst: a degraded but bounded service).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

from omninudge_adapters.redis.batching import ScriptBatcher
from omninudge_adapters.redis.clock import LUA_NOW_S
from omninudge_adapters.redis.errors import map_errors
from omninudge_adapters.redis.keys import RedisKeys
from omninudge_core.errors import Unavailable
from omninudge_core.policies.ratelimit import TOLERANCE, take
from omninudge_core.ports import RateLimiter, RateVerdict

__all__ = ["FallbackRateLimiter", "RedisRateLimiter"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# KEYS: the bucket hash. ARGV: rate_per_s, burst, cost, tolerance.
# Returns {allowed (0|1), retry_after_s, remaining} (floats as strings: Redis would
# truncate Lua numbers to integers).
_TAKE = (
    LUA_NOW_S
    + """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, tolerance = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated_at')
local tokens, updated = burst, now_s
if state[1] then
  tokens, updated = tonumber(state[1]), tonumber(state[2])
  local elapsed = now_s - updated
  if elapsed <= 0 then
    -- A clock that stepped back refills nothing and never rewinds updated_at.
    tokens = math.min(tokens, burst)
  else
    tokens = math.min(burst, tokens + elapsed * rate)
    updated = now_s
  end
end
local allowed, wait = 0, 0
if tokens + tolerance >= cost then
  allowed = 1
  tokens = math.max(0, tokens - cost)
else
  wait = (cost - tokens) / rate
end
local idle_ms = math.ceil((burst - tokens) / rate * 1000)
if idle_ms <= 0 then
  redis.call('DEL', KEYS[1])  -- full: the same as no bucket
else
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
             'updated_at', string.format('%.17g', updated))
  redis.call('PEXPIRE', KEYS[1], idle_ms)
end
return {allowed, string.format('%.17g', wait), string.format('%.17g', tokens)}
"""
)


class RedisRateLimiter:
    """Implements ``omninudge_core.ports.RateLimiter`` on Redis."""

    def __init__(self, client: Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._take = client.register_script(_TAKE)
        self._batcher = ScriptBatcher(client)  # concurrent hits share a round trip

    async def hit(
        self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0
    ) -> RateVerdict:
        """Take ``cost`` tokens from bucket ``key``.

        Raises ValueError for arguments the policy refuses, Unavailable when Redis is down.
        """
        take(None, _EPOCH, rate_per_s, burst, cost)  # the policy's own argument checks
        with map_errors("rate limit"):
            allowed, wait, remaining = await self._batcher.call(
                self._take,
                keys=[self._keys.rate_limit(key)],
                args=[repr(float(rate_per_s)), repr(float(burst)), repr(float(cost)), TOLERANCE],
            )
        return RateVerdict(
            allowed=bool(int(allowed)), retry_after_s=float(wait), remaining=float(remaining)
        )


class FallbackRateLimiter:
    """A ``RateLimiter`` that uses ``primary`` (shared, e.g. Redis) and, while it raises
    Unavailable, ``fallback`` (per process, e.g. ``MemoryRateLimiter``).

    After a failure the primary is left alone for ``retry_primary_after_s`` so a dead
    Redis does not add its timeout to every request; then it is tried again.
    """

    def __init__(
        self,
        primary: RateLimiter,
        fallback: RateLimiter,
        *,
        retry_primary_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._retry_after_s = retry_primary_after_s
        self._clock = clock
        self._primary_down_until: float | None = None

    @property
    def degraded(self) -> bool:
        """True while the last attempt on the primary failed."""
        return self._primary_down_until is not None

    async def hit(
        self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0
    ) -> RateVerdict:
        down_until = self._primary_down_until
        if down_until is None or self._clock() >= down_until:
            try:
                verdict = await self._primary.hit(
                    key, rate_per_s=rate_per_s, burst=burst, cost=cost
                )
            except Unavailable as exc:
                if down_until is None:
                    logger.warning("shared rate limiter down, limiting per process: %s", exc)
                self._primary_down_until = self._clock() + self._retry_after_s
            else:
                if down_until is not None:
                    logger.warning("shared rate limiter is back")
                self._primary_down_until = None
                return verdict
        return await self._fallback.hit(key, rate_per_s=rate_per_s, burst=burst, cost=cost)
