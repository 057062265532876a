"""Presence in Redis, shared by every server instance.

Each user has a sorted set ``presence:{user_id}`` of connection id -> expiry (ms,
Redis clock). A heartbeat moves its connection's expiry to ``now + ttl`` and the set's
own TTL to its latest expiry, so a user whose connections all stopped heartbeating
disappears without anyone cleaning up. A user is online while one member's expiry is
in the future.

``last_seen:{user_id}`` holds the last moment we heard from the user: every heartbeat
writes it, and the disconnect of the user's last live connection writes the
disconnect time. It lives ``last_seen_ttl_s`` (30 days by default), so an expired
connection reports its last heartbeat, as the in-memory adapter does.

When Redis is unreachable, ``heartbeat`` and ``disconnected`` raise Unavailable and
``status`` answers ``online=None`` (unknown) for every user instead of raising.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis

from omninudge_adapters.redis.clock import LUA_NOW_MS
from omninudge_adapters.redis.errors import map_errors
from omninudge_adapters.redis.keys import RedisKeys
from omninudge_core.errors import Unavailable
from omninudge_core.ports import PresenceInfo

__all__ = ["DEFAULT_LAST_SEEN_TTL_S", "RedisPresence"]

logger = logging.getLogger(__name__)

DEFAULT_LAST_SEEN_TTL_S = 30 * 24 * 3600
_STATUS_BATCH = 200  # users per script call: bounded work per call on a single-threaded server

# KEYS: presence set, last_seen. ARGV: connection id, ttl ms, last_seen ttl ms.
_HEARTBEAT = (
    LUA_NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], latest[2])
redis.call('SET', KEYS[2], now_ms, 'PX', ARGV[3])
return 1
"""
)

# KEYS: presence set, last_seen. ARGV: connection id, last_seen ttl ms.
_DISCONNECTED = (
    LUA_NOW_MS
    + """
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now_ms, '+inf')
if live == 0 then
  redis.call('DEL', KEYS[1])
  -- An already expired connection keeps its last heartbeat as last_seen.
  if tonumber(expiry) > now_ms then
    redis.call('SET', KEYS[2], now_ms, 'PX', ARGV[2])
  end
else
  local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], latest[2])
end
return 1
"""
)

# KEYS: presence set and last_seen of each user, in pairs. Returns count, last_seen|''.
_STATUS = (
    LUA_NOW_MS
    + """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[i], '(' .. now_ms, '+inf')
  out[#out + 1] = redis.call('GET', KEYS[i + 1]) or ''
end
return out
"""
)


def _ms(seconds: float) -> int:
    """A positive whole number of milliseconds (Redis TTLs must be >= 1)."""
    return max(1, math.ceil(seconds * 1000))


class RedisPresence:
    """Implements ``omninudge_core.ports.Presence`` on Redis."""

    def __init__(
        self,
        client: Redis,
        keys: RedisKeys,
        *,
        last_seen_ttl_s: float = DEFAULT_LAST_SEEN_TTL_S,
    ) -> None:
        self._client = client
        self._keys = keys
        self._last_seen_ttl_ms = _ms(last_seen_ttl_s)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._disconnected = client.register_script(_DISCONNECTED)
        self._status = client.register_script(_STATUS)

    async def heartbeat(self, user_id: str, connection_id: str, ttl_s: float) -> None:
        """Mark one connection alive for ``ttl_s`` seconds. Raises Unavailable."""
        with map_errors("presence heartbeat"):
            await self._heartbeat(
                keys=[self._keys.presence(user_id), self._keys.last_seen(user_id)],
                args=[connection_id, _ms(ttl_s), self._last_seen_ttl_ms],
            )

    async def disconnected(self, user_id: str, connection_id: str) -> None:
        """Forget one connection; an unknown one changes nothing. Raises Unavailable."""
        with map_errors("presence disconnect"):
            await self._disconnected(
                keys=[self._keys.presence(user_id), self._keys.last_seen(user_id)],
                args=[connection_id, self._last_seen_ttl_ms],
            )

    async def status(self, user_ids: Sequence[str]) -> dict[str, PresenceInfo]:
        """Presence of every user asked; ``online=None`` for all when Redis is down."""
        unique = list(dict.fromkeys(user_ids))
        out: dict[str, PresenceInfo] = {}
        try:
            for start in range(0, len(unique), _STATUS_BATCH):
                batch = unique[start : start + _STATUS_BATCH]
                keys = [k for u in batch for k in (self._keys.presence(u), self._keys.last_seen(u))]
                with map_errors("presence status"):
                    reply = await self._status(keys=keys, args=[])
                for index, user_id in enumerate(batch):
                    live, seen = reply[2 * index], reply[2 * index + 1]
                    out[user_id] = _info(int(live), seen)
        except Unavailable as exc:
            logger.warning("presence unknown: %s", exc.message)
            return {user_id: PresenceInfo(online=None) for user_id in unique}
        return out


def _info(live: int, seen: bytes | str) -> PresenceInfo:
    if live > 0:
        return PresenceInfo(online=True)
    if not seen:
        return PresenceInfo(online=False)
    return PresenceInfo(online=False, last_seen=datetime.fromtimestamp(int(seen) / 1000, UTC))
