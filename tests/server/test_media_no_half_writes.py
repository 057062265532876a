"""No half-writes: an upload that fails at any step leaves no blob and no row.

Each failure is injected with a small wrapper around the REAL adapter of the running
server (local blob store, SQLite media store, Pillow processor): the wrapper fails its
Nth call, before or after the real call did its write. No mock.patch.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from omninudge_core.errors import NotFound, Unavailable
from omninudge_core.models import Media
from tests.server.conftest import Person, RunningServer, login, run_server
from tests.server.media_helpers import FIXTURES, stored_files, tiny_jpeg, upload


class FailingBlobStore:
    """The real store; its put number ``fail_on`` raises Unavailable: before writing,
    after the real put committed (``after_write``), or half way through a stream."""

    def __init__(
        self, real: Any, *, fail_on: int, after_write: bool = False, mid_stream: bool = False
    ) -> None:
        self.real = real
        self.fail_on = fail_on
        self.after_write = after_write
        self.mid_stream = mid_stream
        self.puts = 0

    async def put(self, key: str, data: Any, *, content_type: str) -> int:
        self.puts += 1
        if self.puts != self.fail_on:
            size: int = await self.real.put(key, data, content_type=content_type)
            return size
        if self.mid_stream and isinstance(data, AsyncIterable):
            await self.real.put(key, _broken(data), content_type=content_type)
        if self.after_write:
            await self.real.put(key, data, content_type=content_type)
        raise Unavailable("injected: the blob store failed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def _broken(data: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    async for chunk in data:
        yield chunk
        raise Unavailable("injected: the connection dropped mid-upload")


class RecordingMediaStore:
    """The real media store; records every ``create`` and can fail it (before or after
    the real insert)."""

    def __init__(self, real: Any, *, fail: bool = False, after_write: bool = False) -> None:
        self.real = real
        self.fail = fail
        self.after_write = after_write
        self.created: list[Media] = []

    async def create(self, media: Media) -> None:
        self.created.append(media)
        if self.fail and not self.after_write:
            raise Unavailable("injected: the database failed")
        await self.real.create(media)
        if self.fail:
            raise Unavailable("injected: the connection dropped after the insert")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class StorageWithMedia:
    """The real storage with ``media`` replaced."""

    def __init__(self, real: Any, media: RecordingMediaStore) -> None:
        self._real = real
        self.media = media

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class FailingImageProcessor:
    def __init__(self, real: Any) -> None:
        self.real = real

    async def process(self, data: bytes, **_: Any) -> Any:
        raise Unavailable("injected: the image worker died")


@attrs.frozen
class Scenario:
    name: str
    video: bool = False
    blob_fail_on: int | None = None
    after_write: bool = False
    mid_stream: bool = False
    processing_fails: bool = False
    row_fails: bool = False


SCENARIOS = [
    Scenario("image processing fails", processing_fails=True),
    Scenario("image blob put fails", blob_fail_on=1),
    Scenario("image blob put fails after writing", blob_fail_on=1, after_write=True),
    Scenario("thumbnail put fails", blob_fail_on=2),
    Scenario("thumbnail put fails after writing", blob_fail_on=2, after_write=True),
    Scenario("metadata insert fails", row_fails=True),
    Scenario("metadata insert fails after writing", row_fails=True, after_write=True),
    Scenario("video put fails mid-stream", video=True, blob_fail_on=1, mid_stream=True),
    Scenario("video metadata insert fails", video=True, row_fails=True),
]


@pytest.fixture(scope="module")
async def media_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("media-half-writes")
    async with run_server({}, data_dir, upload_burst=10_000.0) as running:
        yield running


@pytest.fixture
async def person(media_server: RunningServer) -> AsyncIterator[Person]:
    someone = await login(media_server)
    yield someone
    await someone.close()


@pytest.fixture
def services(media_server: RunningServer) -> Iterator[Any]:
    """The running server's services; whatever a test swaps in is put back."""
    services = media_server.app.state.services
    blobs, images, storage = services.media.blobs, services.media.images, services.storage
    yield services
    services.media.blobs, services.media.images, services.storage = blobs, images, storage


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_a_failed_upload_leaves_no_blob_and_no_row(
    media_server: RunningServer, person: Person, services: Any, scenario: Scenario
) -> None:
    root = media_server.settings.data_dir / "media"
    real_storage = services.storage
    before = stored_files(root)
    recorder = RecordingMediaStore(
        real_storage.media, fail=scenario.row_fails, after_write=scenario.after_write
    )
    services.storage = StorageWithMedia(real_storage, recorder)
    if scenario.blob_fail_on is not None:
        services.media.blobs = FailingBlobStore(
            services.media.blobs,
            fail_on=scenario.blob_fail_on,
            after_write=scenario.after_write,
            mid_stream=scenario.mid_stream,
        )
    if scenario.processing_fails:
        services.media.images = FailingImageProcessor(services.media.images)
    data = (FIXTURES / "fixture.webm").read_bytes() if scenario.video else tiny_jpeg()

    r = await upload(person.http, data)

    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable"
    assert stored_files(root) == before, "a blob of the failed upload is left"
    for media in recorder.created:
        with pytest.raises(NotFound):
            await real_storage.media.get(media.id)
    if scenario.row_fails:
        assert len(recorder.created) == 1  # the insert was reached, then undone
    assert list((media_server.settings.data_dir / "tmp").iterdir()) == []


async def test_after_a_failure_the_next_upload_works(
    media_server: RunningServer, person: Person, services: Any
) -> None:
    services.media.blobs = FailingBlobStore(services.media.blobs, fail_on=2)
    assert (await upload(person.http, tiny_jpeg())).status_code == 503
    r = await upload(person.http, tiny_jpeg())  # put 3 and 4 succeed
    assert r.status_code == 201
    body = r.json()
    stored = await services.storage.media.get(body["id"])
    assert stored.thumbnail_key is not None
    root: Path = media_server.settings.data_dir / "media"
    assert {stored.blob_key, stored.thumbnail_key} <= stored_files(root)
