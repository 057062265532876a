"""Blob store contract: bytes by key, signed URLs that expire and refuse tampering."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from omninudge_adapters.memory.blobs import MemoryBlobStore
from omninudge_core.errors import InvalidFrame, NotFound
from tests.contract.ports_fixtures import BLOBSTORES, BlobHarness

_n = itertools.count()


def fresh_key(prefix: str = "images/u1") -> str:
    return f"{prefix}/{1700000000000 + next(_n)}_r{id(object())}.jpg"


@pytest.fixture(params=sorted(BLOBSTORES))
async def blobs(request: pytest.FixtureRequest) -> AsyncIterator[BlobHarness]:
    async with BLOBSTORES[request.param]() as harness:
        yield harness


async def test_put_then_get_returns_the_same_bytes(blobs: BlobHarness) -> None:
    key = fresh_key()
    data = bytes(range(256)) * 10
    assert await blobs.port.put(key, data, content_type="image/jpeg") == len(data)
    assert await blobs.port.get(key) == data
    assert await blobs.port.exists(key) is True


async def test_put_accepts_an_async_stream_of_chunks(blobs: BlobHarness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"abc", b"", b"def"):
            yield part

    key = fresh_key("videos/u1")
    assert await blobs.port.put(key, chunks(), content_type="video/mp4") == 6
    assert await blobs.port.get(key) == b"abcdef"


async def test_a_stream_that_fails_midway_stores_nothing(blobs: BlobHarness) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    key = fresh_key()
    with pytest.raises(ConnectionResetError):
        await blobs.port.put(key, failing(), content_type="image/jpeg")
    assert await blobs.port.exists(key) is False


async def test_missing_blob_raises_not_found(blobs: BlobHarness) -> None:
    key = fresh_key()
    assert await blobs.port.exists(key) is False
    with pytest.raises(NotFound):
        await blobs.port.get(key)


async def test_delete_removes_and_is_idempotent(blobs: BlobHarness) -> None:
    key = f"images/thumbnails/m{next(_n)}_{id(object())}_thumb.jpg"
    await blobs.port.put(key, b"thumb", content_type="image/jpeg")
    await blobs.port.delete(key)
    await blobs.port.delete(key)
    assert await blobs.port.exists(key) is False


async def test_a_signed_url_serves_the_bytes_until_it_expires(blobs: BlobHarness) -> None:
    key = fresh_key()
    await blobs.port.put(key, b"picture", content_type="image/jpeg")
    before = blobs.now()
    signed = await blobs.port.signed_url(key, expires_in_s=1)
    assert key in signed.url
    assert before + timedelta(seconds=1) <= signed.expires_at <= blobs.now() + timedelta(seconds=2)
    assert await blobs.fetch(signed.url) == b"picture"
    await blobs.advance(2.1)
    assert await blobs.fetch(signed.url) is None


async def test_a_tampered_signed_url_is_refused(blobs: BlobHarness) -> None:
    key, other = fresh_key(), fresh_key()
    await blobs.port.put(key, b"mine", content_type="image/jpeg")
    await blobs.port.put(other, b"yours", content_type="image/jpeg")
    signed = await blobs.port.signed_url(key, expires_in_s=600)
    url = signed.url
    assert await blobs.fetch(url) == b"mine"
    flipped = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert await blobs.fetch(flipped) is None
    assert await blobs.fetch(url.replace(key, other)) is None
    exp = str(int(signed.expires_at.timestamp()))
    assert await blobs.fetch(url.replace(f"exp={exp}", f"exp={int(exp) + 3600}")) is None


# --- MemoryBlobStore's own checks ---------------------------------------------------------


def memory_store() -> MemoryBlobStore:
    return MemoryBlobStore(secret=b"0123456789abcdef0123", base_url="https://chat.example/")


async def test_memory_store_refuses_keys_outside_the_key_scheme() -> None:
    store = memory_store()
    for key in ["../etc/passwd", "images/u1/../../x.jpg", "/abs.jpg", "images/u1/x"]:
        with pytest.raises(InvalidFrame):
            await store.put(key, b"x", content_type="image/jpeg")


async def test_memory_signed_url_has_the_documented_shape_and_verifies() -> None:
    store = memory_store()
    signed = await store.signed_url("images/u1/17_r.jpg", expires_in_s=60)
    assert signed.url.startswith("https://chat.example/media/images/u1/17_r.jpg?exp=")
    query = dict(part.split("=") for part in signed.url.split("?", 1)[1].split("&"))
    assert store.verify("images/u1/17_r.jpg", query["exp"], query["sig"])
    assert not store.verify("images/u1/17_r.jpg", "not-a-number", query["sig"])
    assert not store.verify("images/u1/17_r.jpg", query["exp"], "")
    other = MemoryBlobStore(secret=b"another-secret-0123456", base_url="https://chat.example")
    assert not other.verify("images/u1/17_r.jpg", query["exp"], query["sig"])


def test_memory_store_refuses_a_short_secret() -> None:
    with pytest.raises(ValueError):
        MemoryBlobStore(secret=b"short", base_url="http://x")
