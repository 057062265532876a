"""Lua snippets shared by the scripts: the Redis server's clock.

Every process that shares a Redis must agree on time for TTL-like decisions
(presence expiry, token buckets, route expiry), so scripts read Redis ``TIME``
instead of trusting each caller's clock. Redis 5+ replicates script effects, which
is what makes a non-deterministic ``TIME`` legal inside a script that writes.
"""

from __future__ import annotations

__all__ = ["LUA_NOW_MS", "LUA_NOW_S"]

# Older servers need effect replication switched on explicitly; Redis 7 always has it.
_REPLICATE = "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"

LUA_NOW_MS = (
    _REPLICATE
    + "local _t = redis.call('TIME')\n"
    + "local now_ms = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)\n"
)
"""Defines ``now_ms``: integer milliseconds since the epoch, Redis clock."""

LUA_NOW_S = (
    _REPLICATE
    + "local _t = redis.call('TIME')\n"
    + "local now_s = tonumber(_t[1]) + tonumber(_t[2]) / 1000000\n"
)
"""Defines ``now_s``: float seconds since the epoch (microsecond precision), Redis clock."""
