"""LocalFsBlobStore beyond the shared contract: atomic files, key safety, streaming,
signed URLs checked by ``verify``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omninudge_adapters.localfs import LocalFsBlobStore
from omninudge_core.errors import InvalidFrame, NotFound
from tests.contract.ports_fixtures import FakeClock

SECRET = b"localfs-test-secret-0123456789"
BASE_URL = "https://chat.example/"
MiB = 1024 * 1024
_n = itertools.count()


def fresh_key() -> str:
    return f"images/u1/{1700000000000 + next(_n)}_r{next(_n)}.jpg"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> LocalFsBlobStore:
    return LocalFsBlobStore(tmp_path / "blobs", SECRET, BASE_URL, clock=clock)


def leftovers(store: LocalFsBlobStore) -> list[Path]:
    """Temporary files anywhere under the store's root."""
    return [path for path in store.root.rglob(".*.tmp")]


def query_of(url: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))


# --- files -----------------------------------------------------------------------------------


async def test_a_blob_is_a_file_under_the_root_at_its_key(store: LocalFsBlobStore) -> None:
    key = fresh_key()
    await store.put(key, b"picture", content_type="image/jpeg")
    assert (store.root / key).read_bytes() == b"picture"
    assert leftovers(store) == []


async def test_a_second_put_replaces_the_blob_whole(store: LocalFsBlobStore) -> None:
    key = fresh_key()
    await store.put(key, b"first version, longer", content_type="image/jpeg")
    await store.put(key, b"second", content_type="image/jpeg")
    assert await store.get(key) == b"second"
    assert leftovers(store) == []


async def test_a_large_stream_that_fails_midway_leaves_no_file_and_no_temp(
    store: LocalFsBlobStore,
) -> None:
    key = fresh_key()
    temp_sizes: list[int] = []

    async def failing() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * MiB
        # By now at least one buffer went to disk: the write is streamed, not held.
        temp_sizes.extend(path.stat().st_size for path in leftovers(store))
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put(key, failing(), content_type="image/jpeg")
    assert temp_sizes
    assert max(temp_sizes) >= MiB
    assert not (store.root / key).exists()
    assert leftovers(store) == []


async def test_a_cancelled_put_leaves_nothing(store: LocalFsBlobStore) -> None:
    key = fresh_key()
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * (2 * MiB)
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(store.put(key, slow(), content_type="image/jpeg"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (store.root / key).exists()
    assert leftovers(store) == []


@pytest.mark.parametrize(
    "key",
    [
        "../outside.jpg",
        "images/u1/../../../etc/passwd",
        "/etc/passwd",
        "images/u1/17_r.jpg/../../x.jpg",
        "images/thumbnails/1_r.jpg",  # "thumbnails" is not a user
        "images/u1/17_r.jpg\x00.png",
    ],
)
async def test_keys_outside_the_scheme_never_touch_the_disk(
    store: LocalFsBlobStore, key: str
) -> None:
    with pytest.raises(InvalidFrame) as raised:
        await store.put(key, b"x", content_type="image/jpeg")
    assert raised.value.code == "invalid_key"
    assert await store.exists(key) is False
    with pytest.raises(NotFound):
        await store.get(key)
    with pytest.raises(NotFound):
        await store.open_stream(key)
    await store.delete(key)  # a no-op, never an unlink outside the root
    assert not store.root.exists() or list(store.root.rglob("*")) == []


# --- serving ---------------------------------------------------------------------------------


async def test_open_stream_serves_the_bytes_in_chunks_with_size_and_type(
    store: LocalFsBlobStore,
) -> None:
    key = fresh_key().replace(".jpg", ".webm").replace("images/", "videos/")
    data = bytes(range(256)) * 1000
    await store.put(key, data, content_type="video/webm")
    stream = await store.open_stream(key, chunk_size=10_000)
    assert stream.size == len(data)
    assert stream.content_type == "video/webm"
    chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) == 10_000


async def test_an_open_stream_survives_a_delete_and_a_missing_blob_is_not_found(
    store: LocalFsBlobStore,
) -> None:
    key = fresh_key()
    await store.put(key, b"still here", content_type="image/jpeg")
    stream = await store.open_stream(key)
    await store.delete(key)
    assert b"".join([chunk async for chunk in stream]) == b"still here"
    with pytest.raises(NotFound):
        await store.open_stream(key)


# --- signed URLs -------------------------------------------------------------------------------


async def test_a_signed_url_has_the_documented_shape_and_verifies(
    store: LocalFsBlobStore,
) -> None:
    key = fresh_key()
    signed = await store.signed_url(key, expires_in_s=60)
    assert signed.url.startswith(f"https://chat.example/media/{key}?exp=")
    query = query_of(signed.url)
    assert int(query["exp"]) == int(signed.expires_at.timestamp())
    assert store.verify(key, query["exp"], query["sig"])


async def test_an_expired_signed_url_is_refused(store: LocalFsBlobStore, clock: FakeClock) -> None:
    key = fresh_key()
    query = query_of((await store.signed_url(key, expires_in_s=1)).url)
    assert store.verify(key, query["exp"], query["sig"])
    await clock.advance(2)
    assert not store.verify(key, query["exp"], query["sig"])


async def test_a_tampered_signed_url_is_refused(store: LocalFsBlobStore) -> None:
    key, other = fresh_key(), fresh_key()
    query = query_of((await store.signed_url(key, expires_in_s=600)).url)
    exp, sig = query["exp"], query["sig"]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert not store.verify(key, exp, flipped)
    assert not store.verify(other, exp, sig)
    assert not store.verify(key, str(int(exp) + 3600), sig)
    assert not store.verify(key, "soon", sig)
    assert not store.verify(key, exp, "")
    stranger = LocalFsBlobStore(store.root, b"another-secret-0123456789", BASE_URL)
    assert not stranger.verify(key, exp, sig)


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalFsBlobStore(tmp_path, b"short", BASE_URL)
