"""Cache contract: bytes by key with a TTL. Then MemoryCache's own bound (LRU)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from omninudge_adapters.memory.cache import MemoryCache
from omninudge_core.ports import Cache
from tests.contract.ports_fixtures import CACHES, FakeClock, Harness

_keys = itertools.count()


def fresh_key() -> str:
    return f"contract-cache-{next(_keys)}-{id(object())}"


@pytest.fixture(params=sorted(CACHES))
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Harness[Cache]]:
    async with CACHES[request.param]() as harness:
        yield harness


async def test_a_missing_key_is_none(cache: Harness[Cache]) -> None:
    assert await cache.port.get(fresh_key()) is None


async def test_set_then_get_returns_the_bytes(cache: Harness[Cache]) -> None:
    key = fresh_key()
    await cache.port.set(key, b'{"posts": []}\x00\xff', ttl_s=60)
    assert await cache.port.get(key) == b'{"posts": []}\x00\xff'


async def test_set_overwrites(cache: Harness[Cache]) -> None:
    key = fresh_key()
    await cache.port.set(key, b"old", ttl_s=60)
    await cache.port.set(key, b"new", ttl_s=60)
    assert await cache.port.get(key) == b"new"


async def test_entries_expire_after_their_ttl(cache: Harness[Cache]) -> None:
    short, long = fresh_key(), fresh_key()
    await cache.port.set(short, b"x", ttl_s=0.3)
    await cache.port.set(long, b"y", ttl_s=60)
    await cache.advance(0.8)
    assert await cache.port.get(short) is None
    assert await cache.port.get(long) == b"y"


async def test_delete_removes_and_is_idempotent(cache: Harness[Cache]) -> None:
    key = fresh_key()
    await cache.port.set(key, b"x", ttl_s=60)
    await cache.port.delete(key)
    await cache.port.delete(key)
    assert await cache.port.get(key) is None


# --- MemoryCache's bound (Redis bounds itself with maxmemory) ----------------------------


async def test_memory_cache_evicts_the_least_recently_used_entry() -> None:
    cache = MemoryCache(max_entries=2, clock=FakeClock())
    await cache.set("a", b"1", ttl_s=60)
    await cache.set("b", b"2", ttl_s=60)
    assert await cache.get("a") == b"1"  # "a" is now the most recently used
    await cache.set("c", b"3", ttl_s=60)
    assert await cache.get("b") is None
    assert await cache.get("a") == b"1"
    assert await cache.get("c") == b"3"
    assert len(cache) == 2


async def test_memory_cache_bounds_total_bytes() -> None:
    cache = MemoryCache(max_bytes=10, clock=FakeClock())
    await cache.set("a", b"12345", ttl_s=60)
    await cache.set("b", b"12345", ttl_s=60)
    await cache.set("c", b"123", ttl_s=60)
    assert await cache.get("a") is None
    assert await cache.get("b") == b"12345"
    await cache.set("huge", b"x" * 11, ttl_s=60)  # can never fit: not stored, nothing evicted
    assert await cache.get("huge") is None
    assert await cache.get("c") == b"123"
