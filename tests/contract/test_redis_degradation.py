"""Redis outages: callers fail fast with Unavailable, presence turns unknown, rate limits
fall back per process, and everything works again on the same objects when Redis is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from omninudge_adapters.memory.ratelimit import MemoryRateLimiter
from omninudge_adapters.redis import FallbackRateLimiter, RedisAdapters, open_redis
from omninudge_core.errors import Unavailable
from tests.contract.test_fanout import Inbox
from tests.services_redis import RedisServer

FAIL_FAST_S = 2.0
RECOVERY_S = 10.0


async def fails_fast(call: Callable[[], Awaitable[Any]]) -> float:
    """Assert the call raises Unavailable within FAIL_FAST_S; return how long it took."""
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await call()
    elapsed = time.monotonic() - started
    assert elapsed < FAIL_FAST_S
    assert caught.value.__cause__ is not None  # the driver error is chained, not swallowed
    return elapsed


async def every_call_fails_fast(redis: RedisAdapters) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    calls: list[Callable[[], Awaitable[Any]]] = [
        redis.ping,
        lambda: redis.presence.heartbeat("bob", "c2", ttl_s=30),
        lambda: redis.presence.disconnected("bob", "c1"),
        lambda: redis.revocations.revoke("jti", later),
        lambda: redis.revocations.is_revoked("jti"),
        lambda: redis.rate_limiter.hit("bucket", rate_per_s=1, burst=3),
        lambda: redis.cache.get("page"),
        lambda: redis.cache.set("page", b"x", ttl_s=60),
        lambda: redis.cache.delete("page"),
        lambda: redis.fanout.publish("alice", b"lost"),
    ]
    for call in calls:
        await fails_fast(call)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = RECOVERY_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "did not recover in time"
        await asyncio.sleep(0.1)


async def answers(redis: RedisAdapters) -> bool:
    try:
        await redis.ping()
    except Unavailable:
        return False
    return True


async def disconnected(redis: RedisAdapters) -> bool:
    return not redis.fanout.connected


async def test_a_stopped_redis_degrades_then_the_same_objects_recover(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    async with open_redis(server.url, prefix="degradation:") as redis:
        limiter = FallbackRateLimiter(
            redis.rate_limiter, MemoryRateLimiter(), retry_primary_after_s=0.2
        )
        alice = Inbox()
        subscription = await redis.fanout.subscribe("alice", alice.sync_listener)
        await redis.fanout.publish("alice", b"before")
        assert await alice.wait_for(1) == [b"before"]
        await redis.presence.heartbeat("bob", "c1", ttl_s=60)

        server.stop()

        await every_call_fails_fast(redis)
        started = time.monotonic()
        status = await redis.presence.status(["bob", "ghost"])
        assert time.monotonic() - started < FAIL_FAST_S
        assert status["bob"].online is None
        assert status["ghost"].online is None
        verdicts = [await limiter.hit("k", rate_per_s=0.01, burst=3) for _ in range(4)]
        assert [v.allowed for v in verdicts] == [True, True, True, False]
        assert limiter.degraded
        carol = Inbox()
        late = await redis.fanout.subscribe("carol", carol.sync_listener)  # does not raise
        await eventually(lambda: disconnected(redis))

        server.start()  # same port, empty: every key and route is gone
        await eventually(lambda: answers(redis))

        await redis.presence.heartbeat("bob", "c1", ttl_s=60)
        assert (await redis.presence.status(["bob"]))["bob"].online is True
        await redis.revocations.revoke("jti", datetime.now(UTC) + timedelta(minutes=5))
        assert await redis.revocations.is_revoked("jti") is True
        await redis.cache.set("page", b"x", ttl_s=60)
        assert await redis.cache.get("page") == b"x"

        await asyncio.sleep(0.25)  # the fallback's retry_primary_after_s
        assert (await limiter.hit("k", rate_per_s=0.01, burst=3)).allowed
        assert not limiter.degraded
        assert await redis.client.exists(redis.keys.rate_limit("k")) == 1

        # The reader reconnects and registers both routes again (one made during the outage).
        async def delivered() -> bool:
            await redis.fanout.publish("alice", b"after")
            await redis.fanout.publish("carol", b"after")
            await asyncio.sleep(0.05)
            return len(alice.received) > 1 and len(carol.received) > 0

        await eventually(delivered)
        assert redis.fanout.connected
        assert set(alice.received[1:]) == {b"after"}
        await subscription.close()
        await late.close()


async def test_a_hung_redis_times_out_fast_then_recovers(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    """A server that accepts connections but never answers (SIGSTOP) costs callers about
    one socket timeout, not a hang."""
    server = redis_server_factory()
    async with open_redis(server.url, prefix="hung:") as redis:
        await redis.presence.heartbeat("bob", "c1", ttl_s=60)
        server.pause()
        try:
            await fails_fast(lambda: redis.presence.heartbeat("bob", "c1", ttl_s=60))
            await fails_fast(lambda: redis.rate_limiter.hit("k", rate_per_s=1, burst=1))
            started = time.monotonic()
            assert (await redis.presence.status(["bob"]))["bob"].online is None
            assert time.monotonic() - started < FAIL_FAST_S
        finally:
            server.resume()
        await eventually(lambda: answers(redis))
        assert (await redis.presence.status(["bob"]))["bob"].online is True


async def test_opening_while_redis_is_down_works_once_it_is_up(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    server.stop()
    async with open_redis(server.url, prefix="late:") as redis:
        await fails_fast(redis.ping)
        inbox = Inbox()
        subscription = await redis.fanout.subscribe("alice", inbox.sync_listener)
        server.start()
        await eventually(lambda: answers(redis))

        async def delivered() -> bool:
            await redis.fanout.publish("alice", b"hello")
            await asyncio.sleep(0.05)
            return bool(inbox.received)

        await eventually(delivered)
        await subscription.close()
