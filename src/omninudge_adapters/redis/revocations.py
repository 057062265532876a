"""Revoked token ids in Redis, shared by every server instance.

``revoked:{jti}`` exists until the token's own expiry (``PXAT until``): after that the
token is dead anyway, so Redis forgets it by itself. Revoking again with a later
``until`` extends the entry, never shortens it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime

from redis.asyncio import Redis

from omninudge_adapters.redis.errors import map_errors
from omninudge_adapters.redis.keys import RedisKeys

__all__ = ["RedisRevocations"]


class RedisRevocations:
    """Implements ``omninudge_core.ports.Revocations`` on Redis."""

    def __init__(
        self, client: Redis, keys: RedisKeys, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._keys = keys
        self._clock = clock

    async def revoke(self, jti: str, until: datetime) -> None:
        """Remember ``jti`` until ``until``; a past ``until`` writes nothing.
        Raises Unavailable."""
        until_ms = math.ceil(until.timestamp() * 1000)
        if until_ms <= self._clock() * 1000:
            return  # already expired: nothing to remember
        key = self._keys.revoked(jti)
        with map_errors("revoke token"):
            async with self._client.pipeline(transaction=True) as pipe:
                # Both commands carry the expiry: the key never exists without one.
                pipe.set(key, b"1", pxat=until_ms, nx=True)
                pipe.pexpireat(key, until_ms, gt=True)
                await pipe.execute()

    async def is_revoked(self, jti: str) -> bool:
        """Raises Unavailable (the caller decides whether to fail open or closed)."""
        with map_errors("check revoked token"):
            return bool(await self._client.exists(self._keys.revoked(jti)))
