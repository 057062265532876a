"""``open_redis``: every Redis-backed adapter on one connection pool.

Connections use short timeouts so that a dead Redis costs callers well under a
second before they see Unavailable, and one retry so that the first command on a
pooled connection broken by a Redis restart reconnects instead of failing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from omninudge_adapters.redis.cache import RedisCache
from omninudge_adapters.redis.errors import map_errors
from omninudge_adapters.redis.fanout import RedisFanOut
from omninudge_adapters.redis.keys import RedisKeys
from omninudge_adapters.redis.presence import DEFAULT_LAST_SEEN_TTL_S, RedisPresence
from omninudge_adapters.redis.ratelimit import RedisRateLimiter
from omninudge_adapters.redis.revocations import RedisRevocations

__all__ = ["RedisAdapters", "open_redis"]


@attrs.frozen
class RedisAdapters:
    """The shared-state ports on one Redis, plus ``ping`` for /health."""

    client: Redis
    keys: RedisKeys
    instance_id: str
    presence: RedisPresence
    revocations: RedisRevocations
    rate_limiter: RedisRateLimiter
    cache: RedisCache
    fanout: RedisFanOut

    async def ping(self) -> None:
        """Raises Unavailable when Redis does not answer."""
        with map_errors("ping"):
            await self.client.ping()


def _client(url: str, *, connect_timeout_s: float, timeout_s: float, retries: int) -> Redis:
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        # Only connection errors are retried: a timed out command may have run.
        retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
        retry_on_timeout=False,
    )


@asynccontextmanager
async def open_redis(
    url: str,
    *,
    prefix: str = "omninudge:",
    instance_id: str | None = None,
    connect_timeout_s: float = 0.5,
    timeout_s: float = 1.0,
    last_seen_ttl_s: float = DEFAULT_LAST_SEEN_TTL_S,
    route_ttl_s: float = 30.0,
) -> AsyncIterator[RedisAdapters]:
    """Build the Redis adapters for ``url`` (``redis://`` / ``rediss://`` / ``unix://``).

    ``prefix`` namespaces every key and channel; ``instance_id`` names this process for
    fan-out routing (a fresh random id by default: it must be unique per process).
    Redis need not be up: calls raise Unavailable until it answers, and fan-out
    subscriptions start working as soon as it does.
    """
    if not prefix:
        raise ValueError("prefix must not be empty")
    keys = RedisKeys(prefix)
    instance = instance_id or uuid.uuid4().hex
    client = _client(url, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s, retries=1)
    pubsub_client = _client(
        url, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s, retries=0
    )
    fanout = RedisFanOut(
        client,
        pubsub_client,
        keys,
        instance_id=instance,
        route_ttl_s=route_ttl_s,
        ready_timeout_s=2 * (connect_timeout_s + timeout_s),
    )
    adapters = RedisAdapters(
        client=client,
        keys=keys,
        instance_id=instance,
        presence=RedisPresence(client, keys, last_seen_ttl_s=last_seen_ttl_s),
        revocations=RedisRevocations(client, keys),
        rate_limiter=RedisRateLimiter(client, keys),
        cache=RedisCache(client, keys),
        fanout=fanout,
    )
    try:
        yield adapters
    finally:
        await fanout.close()
        await pubsub_client.aclose()
        await client.aclose()
