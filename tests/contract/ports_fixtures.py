"""Adapters under contract for the shared-state and blob ports.

Each port has one dict of factories; a contract suite (``test_<port>.py``) runs every
test against every entry. To put a new adapter under contract (Redis, local files,
S3, ...), add a factory here: an async context manager yielding a ``Harness`` whose
``advance`` lets time pass for that adapter (a fake clock for memory adapters, a
real sleep for adapters on real services). The tests never change.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Generic, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import httpx

from omninudge_adapters.localfs import LocalFsBlobStore
from omninudge_adapters.memory.blobs import MemoryBlobStore
from omninudge_adapters.memory.cache import MemoryCache
from omninudge_adapters.memory.fanout import MemoryFanOut
from omninudge_adapters.memory.presence import MemoryPresence
from omninudge_adapters.memory.ratelimit import MemoryRateLimiter
from omninudge_adapters.memory.revocations import MemoryRevocations
from omninudge_adapters.redis import RedisAdapters, open_redis
from omninudge_adapters.s3 import open_s3_blob_store
from omninudge_core.errors import NotFound
from omninudge_core.ports import BlobStore, Cache, FanOut, Presence, RateLimiter, Revocations

P = TypeVar("P")


class FakeClock:
    """A settable ``time.time`` stand-in for memory adapters."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def real_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@attrs.define
class Harness(Generic[P]):
    """A port under test, with a way to let time pass and to read the adapter's clock."""

    port: P
    advance: Callable[[float], Awaitable[None]]
    clock: Callable[[], float]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


@attrs.define
class BlobHarness(Harness[BlobStore]):
    """``fetch`` follows a signed URL the way a browser would: the bytes, or None when
    the store refuses the URL (bad signature, expired, unknown key)."""

    fetch: Callable[[str], Awaitable[bytes | None]] = attrs.field(kw_only=True)


Factory = Callable[[], AbstractAsyncContextManager[Harness[P]]]


# --- memory ---------------------------------------------------------------------------


@asynccontextmanager
async def memory_presence() -> AsyncIterator[Harness[Presence]]:
    clock = FakeClock()
    yield Harness(MemoryPresence(clock=clock), clock.advance, clock)


@asynccontextmanager
async def memory_revocations() -> AsyncIterator[Harness[Revocations]]:
    clock = FakeClock()
    yield Harness(MemoryRevocations(clock=clock), clock.advance, clock)


@asynccontextmanager
async def memory_ratelimiter() -> AsyncIterator[Harness[RateLimiter]]:
    clock = FakeClock()
    yield Harness(MemoryRateLimiter(clock=clock), clock.advance, clock)


@asynccontextmanager
async def memory_cache() -> AsyncIterator[Harness[Cache]]:
    clock = FakeClock()
    yield Harness(MemoryCache(clock=clock), clock.advance, clock)


@asynccontextmanager
async def memory_fanout() -> AsyncIterator[Harness[FanOut]]:
    clock = FakeClock()
    yield Harness(MemoryFanOut(), clock.advance, clock)


MEMORY_BASE_URL = "http://127.0.0.1:8080"


@asynccontextmanager
async def memory_blobstore() -> AsyncIterator[BlobHarness]:
    clock = FakeClock()
    store = MemoryBlobStore(
        secret=b"contract-test-secret-0123456789", base_url=MEMORY_BASE_URL, clock=clock
    )

    async def fetch(url: str) -> bytes | None:
        # What the server's GET /media/{key} route does for a store that signs its own URLs.
        parts = urlsplit(url)
        prefix = urlsplit(MEMORY_BASE_URL).path + "/media/"
        if not parts.path.startswith(prefix):
            return None
        key = unquote(parts.path[len(prefix) :])
        query = parse_qs(parts.query)
        exp, sig = query.get("exp", [""])[0], query.get("sig", [""])[0]
        if not store.verify(key, exp, sig):
            return None
        try:
            return await store.get(key)
        except NotFound:
            return None

    yield BlobHarness(store, clock.advance, clock, fetch=fetch)


# --- redis (the run's shared Redis, a fresh key prefix per adapter) ----------------------


@asynccontextmanager
async def redis_adapters() -> AsyncIterator[RedisAdapters]:
    from tests.services_redis import session_redis_url, unique_prefix

    async with open_redis(session_redis_url(), prefix=unique_prefix()) as adapters:
        yield adapters


def redis_port(pick: Callable[[RedisAdapters], P]) -> Factory[P]:
    """A factory of one Redis adapter, on a fresh key prefix of the run's Redis."""

    @asynccontextmanager
    async def factory() -> AsyncIterator[Harness[P]]:
        async with redis_adapters() as redis:
            yield Harness(pick(redis), real_sleep, time.time)

    return factory


redis_presence: Factory[Presence] = redis_port(lambda r: r.presence)
redis_revocations: Factory[Revocations] = redis_port(lambda r: r.revocations)
redis_ratelimiter: Factory[RateLimiter] = redis_port(lambda r: r.rate_limiter)
redis_cache: Factory[Cache] = redis_port(lambda r: r.cache)
redis_fanout: Factory[FanOut] = redis_port(lambda r: r.fanout)


async def _fetch_local_url(
    store: MemoryBlobStore | LocalFsBlobStore, base_url: str, url: str
) -> bytes | None:
    # What the server's GET /media/{key} route does for a store that signs its own URLs.
    parts = urlsplit(url)
    prefix = urlsplit(base_url).path + "/media/"
    if not parts.path.startswith(prefix):
        return None
    key = unquote(parts.path[len(prefix) :])
    query = parse_qs(parts.query)
    exp, sig = query.get("exp", [""])[0], query.get("sig", [""])[0]
    if not store.verify(key, exp, sig):
        return None
    try:
        return await store.get(key)
    except NotFound:
        return None


@asynccontextmanager
async def localfs_blobstore() -> AsyncIterator[BlobHarness]:
    clock = FakeClock()
    with tempfile.TemporaryDirectory(prefix="omninudge-blobs-") as root:
        store = LocalFsBlobStore(
            root, secret=b"contract-test-secret-0123456789", base_url=MEMORY_BASE_URL, clock=clock
        )

        async def fetch(url: str) -> bytes | None:
            return await _fetch_local_url(store, MEMORY_BASE_URL, url)

        yield BlobHarness(store, clock.advance, clock, fetch=fetch)


@asynccontextmanager
async def s3_blobstore() -> AsyncIterator[BlobHarness]:
    from tests.services_s3 import shared_s3_settings

    settings = await asyncio.to_thread(shared_s3_settings)
    async with (
        open_s3_blob_store(
            bucket=settings.bucket,
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
        ) as store,
        httpx.AsyncClient() as http,
    ):

        async def fetch(url: str) -> bytes | None:
            # S3 serves its presigned URLs itself; it answers 403 to a bad or old one.
            answer = await http.get(url)
            return answer.content if answer.status_code == 200 else None

        yield BlobHarness(store, real_sleep, time.time, fetch=fetch)


# --- the adapters under contract, per port ---------------------------------------------

PRESENCE: dict[str, Factory[Presence]] = {"memory": memory_presence, "redis": redis_presence}
REVOCATIONS: dict[str, Factory[Revocations]] = {
    "memory": memory_revocations,
    "redis": redis_revocations,
}
RATE_LIMITERS: dict[str, Factory[RateLimiter]] = {
    "memory": memory_ratelimiter,
    "redis": redis_ratelimiter,
}
CACHES: dict[str, Factory[Cache]] = {"memory": memory_cache, "redis": redis_cache}
FANOUTS: dict[str, Factory[FanOut]] = {"memory": memory_fanout, "redis": redis_fanout}
BLOBSTORES: dict[str, Callable[[], AbstractAsyncContextManager[BlobHarness]]] = {
    "memory": memory_blobstore,
    "localfs": localfs_blobstore,
    "s3": s3_blobstore,
}
