"""A byte cache in Redis, shared by every server instance.

``cache:{key}`` is written with ``SET ... PX`` so no entry exists without its TTL.
Redis bounds the total with ``maxmemory`` (configure ``maxmemory-policy volatile-lru``
or ``allkeys-lru`` on a Redis dedicated to OmniNudge); freshness (fresh/stale) is the
caller's business (``omninudge_core.policies.cache``).
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

from omninudge_adapters.redis.errors import map_errors
from omninudge_adapters.redis.keys import RedisKeys

__all__ = ["RedisCache"]


class RedisCache:
    """Implements ``omninudge_core.ports.Cache`` on Redis. Every method raises
    Unavailable when Redis is down (the caller treats that as a miss)."""

    def __init__(self, client: Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    async def get(self, key: str) -> bytes | None:
        with map_errors("cache get"):
            value = await self._client.get(self._keys.cache(key))
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds; a non-positive TTL removes the key."""
        with map_errors("cache set"):
            if ttl_s <= 0:
                await self._client.delete(self._keys.cache(key))
                return
            await self._client.set(self._keys.cache(key), value, px=max(1, math.ceil(ttl_s * 1000)))

    async def delete(self, key: str) -> None:
        with map_errors("cache delete"):
            await self._client.delete(self._keys.cache(key))
