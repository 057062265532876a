"""Redis key discipline: every key carries a TTL, and lives under the adapter's prefix."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from omninudge_adapters.redis import RedisAdapters, RedisKeys, open_redis
from tests.contract.test_fanout import Inbox
from tests.services_redis import session_prefix


async def scan(redis: RedisAdapters, pattern: str) -> list[bytes]:
    return [key async for key in redis.client.scan_iter(match=pattern, count=500)]


async def keys_without_ttl(redis: RedisAdapters, keys: list[bytes]) -> list[bytes]:
    # PTTL: -1 = no expiry (the defect we look for); -2 = gone since the scan (fine).
    return [key for key in keys if await redis.client.pttl(key) == -1]


async def representative_workload(
    redis: RedisAdapters, tag: str, checkpoint: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Every write path of every adapter, including the edge cases; ``checkpoint`` runs
    while keys of every kind are alive."""
    presence = redis.presence
    await presence.heartbeat(f"{tag}-alice", "c1", ttl_s=30)
    await presence.heartbeat(f"{tag}-alice", "c2", ttl_s=0.1)
    await presence.heartbeat(f"{tag}-alice", "c1", ttl_s=30)  # refresh
    await presence.disconnected(f"{tag}-alice", "c1")  # c2 left, then expires
    await presence.heartbeat(f"{tag}-bob", "c1", ttl_s=30)
    await presence.disconnected(f"{tag}-bob", "c1")  # last connection: last_seen written
    await presence.disconnected(f"{tag}-ghost", "c1")
    await presence.status([f"{tag}-alice", f"{tag}-bob", f"{tag}-ghost"])

    now = datetime.now(UTC)
    await redis.revocations.revoke(f"{tag}-jti", now + timedelta(minutes=5))
    await redis.revocations.revoke(f"{tag}-jti", now + timedelta(minutes=10))  # extended
    await redis.revocations.revoke(f"{tag}-old", now - timedelta(minutes=1))

    for _ in range(3):
        await redis.rate_limiter.hit(f"{tag}-bucket", rate_per_s=0.01, burst=2)  # incl. refusal
    await redis.rate_limiter.hit(f"{tag}-free", rate_per_s=1, burst=5, cost=0)

    await redis.cache.set(f"{tag}-page", b"v1", ttl_s=60)
    await redis.cache.set(f"{tag}-page", b"v2", ttl_s=60)
    await redis.cache.set(f"{tag}-gone", b"x", ttl_s=0)

    inbox = Inbox()
    staying = await redis.fanout.subscribe(f"{tag}-carol", inbox.sync_listener)
    leaving = await redis.fanout.subscribe(f"{tag}-dave", inbox.sync_listener)
    await redis.fanout.publish(f"{tag}-carol", b"hi")
    await redis.fanout.publish(f"{tag}-nobody", b"hi")
    await inbox.wait_for(1)
    if checkpoint is not None:
        await checkpoint()
    await leaving.close()
    await asyncio.sleep(0.2)  # let alice's short connection expire
    await presence.status([f"{tag}-alice"])
    await staying.close()


async def test_every_key_a_workload_writes_has_a_ttl(redis_url: str, redis_prefix: str) -> None:
    tag = uuid.uuid4().hex[:8]
    seen: set[bytes] = set()
    async with open_redis(redis_url, prefix=redis_prefix) as redis:

        async def check() -> None:
            keys = await scan(redis, redis.keys.pattern())
            assert await keys_without_ttl(redis, keys) == []
            seen.update(keys)

        await representative_workload(redis, tag, check)
        await check()
    kinds = {key.decode()[len(redis_prefix) :].split(":")[0] for key in seen}
    assert kinds == {"presence", "last_seen", "revoked", "ratelimit", "cache", "ws"}


async def test_every_key_left_under_the_runs_prefix_has_a_ttl(redis_url: str) -> None:
    """Covers whatever the contract suites of this run wrote before this test."""
    async with open_redis(redis_url, prefix=session_prefix()) as redis:
        keys = await scan(redis, redis.keys.pattern())
        assert await keys_without_ttl(redis, keys) == []


async def test_ttls_are_bounded_by_what_each_key_is_for(redis_url: str, redis_prefix: str) -> None:
    async with open_redis(redis_url, prefix=redis_prefix, route_ttl_s=30) as redis:
        keys = redis.keys
        await redis.presence.heartbeat("alice", "c1", ttl_s=20)
        await redis.revocations.revoke("jti", datetime.now(UTC) + timedelta(seconds=90))
        await redis.rate_limiter.hit("bucket", rate_per_s=1, burst=10, cost=4)
        await redis.cache.set("page", b"x", ttl_s=300)
        subscription = await redis.fanout.subscribe("alice", Inbox().sync_listener)
        pttl = redis.client.pttl
        assert 19_000 < await pttl(keys.presence("alice")) <= 20_000
        assert 29 * 86400_000 < await pttl(keys.last_seen("alice")) <= 30 * 86400_000
        assert 88_000 < await pttl(keys.revoked("jti")) <= 90_000
        assert 3_000 < await pttl(keys.rate_limit("bucket")) <= 4_000  # until full again
        assert 299_000 < await pttl(keys.cache("page")) <= 300_000
        assert 29_000 < await pttl(keys.routes("alice")) <= 30_000
        await subscription.close()
        assert await redis.client.exists(keys.routes("alice")) == 0


async def test_adapters_with_different_prefixes_share_nothing(
    redis_url: str, redis_prefix: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    async with (
        open_redis(redis_url, prefix=redis_prefix + "a:") as mine,
        open_redis(redis_url, prefix=redis_prefix + "b:") as theirs,
    ):
        inbox = Inbox()
        subscription = await mine.fanout.subscribe(f"{tag}-erin", inbox.sync_listener)
        await representative_workload(mine, tag)
        await mine.presence.heartbeat(f"{tag}-alice", "c9", ttl_s=30)
        assert not (await mine.rate_limiter.hit(f"{tag}-bucket", rate_per_s=0.01, burst=2)).allowed
        tagged = await scan(mine, f"*{tag}*")
        assert tagged
        assert all(key.decode().startswith(redis_prefix + "a:") for key in tagged)

        status = await theirs.presence.status([f"{tag}-alice", f"{tag}-bob"])
        assert status[f"{tag}-alice"].online is False
        assert status[f"{tag}-bob"].last_seen is None
        assert await theirs.revocations.is_revoked(f"{tag}-jti") is False
        assert await theirs.cache.get(f"{tag}-page") is None
        assert (await theirs.rate_limiter.hit(f"{tag}-bucket", rate_per_s=0.01, burst=2)).allowed

        await theirs.fanout.publish(f"{tag}-erin", b"theirs")
        await mine.fanout.publish(f"{tag}-erin", b"mine")
        assert await inbox.wait_for(1) == [b"mine"]
        await asyncio.sleep(0.05)
        assert inbox.received == [b"mine"]
        await subscription.close()


def test_the_scan_pattern_escapes_glob_characters_in_the_prefix() -> None:
    assert RedisKeys("a*b?[c]\\:").pattern() == "a\\*b\\?\\[c\\]\\\\:*"
