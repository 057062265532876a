"""Redis adapters (production shared state): presence, token revocations, rate limits,
cache and cross-instance fan-out, on redis-py asyncio.

    async with open_redis("redis://127.0.0.1:6379/0", prefix="omninudge:") as redis:
        await redis.presence.heartbeat(user_id, connection_id, ttl_s=60)
        await redis.ping()  # for /health

Every key lives under ``prefix`` and every non-permanent key carries its TTL from the
command that writes it. Redis trouble surfaces as ``omninudge_core.errors.Unavailable``
(presence answers "unknown" instead); ``FallbackRateLimiter`` keeps limiting per
process while Redis is down. Keys, TTLs and channels: docs/redis.md.
"""

from omninudge_adapters.redis.adapters import RedisAdapters, open_redis
from omninudge_adapters.redis.cache import RedisCache
from omninudge_adapters.redis.fanout import RedisFanOut, RedisSubscription
from omninudge_adapters.redis.keys import RedisKeys
from omninudge_adapters.redis.presence import RedisPresence
from omninudge_adapters.redis.ratelimit import FallbackRateLimiter, RedisRateLimiter
from omninudge_adapters.redis.revocations import RedisRevocations

__all__ = [
    "FallbackRateLimiter",
    "RedisAdapters",
    "RedisCache",
    "RedisFanOut",
    "RedisKeys",
    "RedisPresence",
    "RedisRateLimiter",
    "RedisRevocations",
    "RedisSubscription",
    "open_redis",
]
