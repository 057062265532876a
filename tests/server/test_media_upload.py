"""``POST /api/media`` end to end: the bad-input corpus, metadata stripping, streaming
limits (413/415 without reading the body), rate limits. Real uvicorn, local blob store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.conftest import Person, RunningServer, login, run_server
from tests.server.media_helpers import (
    Case,
    corpus,
    fetch,
    image_info,
    metadata_left,
    stored_files,
    tiny_jpeg,
    upload,
)

MAX_IMAGE = 1024 * 1024
MAX_VIDEO = 2 * 1024 * 1024


@pytest.fixture(scope="module")
async def media_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    # Small byte limits so the 413 tests stay cheap; the corpus files are all smaller.
    data_dir = tmp_path_factory.mktemp("media-upload")
    async with run_server(
        {}, data_dir, max_image_bytes=MAX_IMAGE, max_video_bytes=MAX_VIDEO, upload_burst=10_000.0
    ) as running:
        yield running


@pytest.fixture
async def person(media_server: RunningServer) -> AsyncIterator[Person]:
    someone = await login(media_server)
    yield someone
    await someone.close()


def _media_root(server: RunningServer) -> Path:
    return server.settings.data_dir / "media"


CASES = corpus()


def test_the_corpus_has_at_least_25_files_with_every_kind_of_trouble() -> None:
    assert len(CASES) >= 25
    outcomes = {(case.status, case.code) for case in CASES}
    assert {(201, "-"), (415, "unsupported_media_type"), (413, "too_large")} <= outcomes
    assert {(400, "corrupt_media"), (400, "empty_file")} <= outcomes


@pytest.mark.parametrize("case", CASES, ids=[case.file for case in CASES])
async def test_each_corpus_file_gets_its_documented_outcome(
    media_server: RunningServer, person: Person, case: Case
) -> None:
    # The client's file name and content type are never trusted: send them wrong.
    r = await person.http.post(
        "/api/media", files={"file": ("innocent.txt", case.data, "text/plain")}
    )
    assert r.status_code == case.status, (case.note, r.text)
    mine = {p for p in stored_files(_media_root(media_server)) if person.id in p}
    if case.status != 201:
        assert r.json()["error"]["code"] == case.code
        assert mine == set(), "a refused upload stored something"
        return
    body = r.json()
    assert body["kind"] in ("image", "video")
    stored = await fetch(body["url"])
    assert stored.status_code == 200
    assert stored.headers["content-type"] == body["content_type"]
    assert len(stored.content) == body["size"]
    if body["kind"] == "video":
        assert stored.content == case.data  # videos are stored exactly as uploaded
        assert body["thumbnail_url"] is None or body["thumbnail_status"] == "ready"
        return
    # Every stored image, and its thumbnail, is clean of EXIF/GPS/XMP/comments.
    assert metadata_left(stored.content) == []
    info = image_info(stored.content)
    assert info["size"] == (body["width"], body["height"])
    thumb = await fetch(body["thumbnail_url"])
    assert thumb.status_code == 200
    assert metadata_left(thumb.content) == []
    assert max(image_info(thumb.content)["size"]) <= 320


async def test_gps_photo_is_stored_upright_without_any_metadata(person: Person) -> None:
    original = Path(__file__).parent.parent / "fixtures/media/gen_gps_orientation6.jpg"
    data = original.read_bytes()
    assert metadata_left(data) != []  # the fixture does carry GPS, EXIF, XMP
    r = await upload(person.http, data)
    assert r.status_code == 201
    body = r.json()
    assert (body["width"], body["height"]) == (48, 64)  # orientation 6 applied
    stored = (await fetch(body["url"])).content
    assert metadata_left(stored) == []
    assert b"secret comment" not in stored


async def test_polyglots_keep_only_the_image(person: Person) -> None:
    fixtures = Path(__file__).parent.parent / "fixtures/media"
    for name, payload in (
        ("gen_polyglot_jpeg_html.jpg", b"<script>"),
        ("gen_polyglot_png_zip.png", b"PK\x03\x04"),
    ):
        data = (fixtures / name).read_bytes()
        assert payload in data
        r = await upload(person.http, data)
        assert r.status_code == 201, r.text
        stored = (await fetch(r.json()["url"])).content
        assert payload not in stored


async def test_an_animated_image_stays_animated(person: Person) -> None:
    fixtures = Path(__file__).parent.parent / "fixtures/media"
    for name in ("gen_apng_animated.png", "chi.gif", "iss634.webp"):
        r = await upload(person.http, (fixtures / name).read_bytes())
        assert r.status_code == 201, r.text
        stored = (await fetch(r.json()["url"])).content
        assert image_info(stored)["frames"] > 1, name


async def test_a_video_without_ffmpeg_has_no_thumbnail_and_says_why(
    media_server: RunningServer, person: Person
) -> None:
    data = (Path(__file__).parent.parent / "fixtures/media/fixture-imovie.mp4").read_bytes()
    r = await upload(person.http, data)
    assert r.status_code == 201
    body = r.json()
    assert (body["kind"], body["content_type"], body["size"]) == ("video", "video/mp4", len(data))
    services = media_server.app.state.services
    if services.media.ffmpeg is None:
        assert body["thumbnail_url"] is None
        assert body["thumbnail_status"] == "unavailable_no_ffmpeg"
    else:
        assert body["thumbnail_status"] in ("ready", "failed")
    again = await person.http.get(f"/api/media/{body['id']}")
    assert again.json()["thumbnail_status"] == body["thumbnail_status"]


async def _send_until_answered(
    server: RunningServer, token: str, first: bytes, total: int
) -> tuple[bytes, int]:
    """Stream a chunked multipart upload of ``total`` bytes over a raw socket, watching
    for the answer between chunks; stop sending once it comes. Returns (status line,
    bytes of file data sent by then)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            "POST /api/media HTTP/1.1\r\n"
            f"Host: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: multipart/form-data; boundary=xxBOUNDARYxx\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    disposition = b'Content-Disposition: form-data; name="file"; filename="a"'
    writer.write(chunk(b"--xxBOUNDARYxx\r\n" + disposition + b"\r\n\r\n" + first))
    answer = asyncio.create_task(reader.readline())
    sent = len(first)
    filler = chunk(b"\x00" * (64 * 1024))
    try:
        while sent < total and not answer.done():
            writer.write(filler)
            await writer.drain()
            sent += 64 * 1024
            await asyncio.sleep(0)
        status_line = await asyncio.wait_for(answer, 10)
    finally:
        answer.cancel()
        writer.close()
    return status_line, sent


@pytest.mark.parametrize(
    ("first", "status"),
    [(tiny_jpeg()[:64], b"413"), (b"<html>" + b" " * 8192, b"415")],
    ids=["over-the-image-limit", "not-an-image"],
)
async def test_a_hopeless_upload_is_answered_before_the_body_is_sent(
    media_server: RunningServer, person: Person, first: bytes, status: bytes
) -> None:
    """Chunked, no Content-Length: the server stops reading at the limit for the sniffed
    kind (or as soon as the first bytes fail to sniff) and answers at once."""
    total = 256 * 1024 * 1024
    status_line, sent = await _send_until_answered(media_server, person.token, first, total)
    assert status_line.split()[1] == status, status_line
    # The answer came after the limit (1 MiB) plus what socket buffers hold, not at the end.
    assert sent < 16 * 1024 * 1024


async def test_an_over_limit_upload_gets_a_typed_413_through_a_plain_client(
    person: Person,
) -> None:
    data = tiny_jpeg() + b"\x00" * (MAX_IMAGE + 1)
    r = await upload(person.http, data)
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "too_large",
        "message": f"image larger than {MAX_IMAGE} bytes",
        "field": "file",
        "limit": MAX_IMAGE,
    }


async def test_a_declared_oversize_body_is_refused_from_its_headers(
    media_server: RunningServer, person: Person
) -> None:
    host, port = media_server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = (
        "POST /api/media HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {person.token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {500 * 1024 * 1024}\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line


@pytest.mark.parametrize(
    ("content", "content_type", "code"),
    [
        (b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--b--\r\n',
         "multipart/form-data; boundary=b", "missing_field"),
        (b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n\xff\xd8\xff",
         "multipart/form-data; boundary=b", "invalid_multipart"),
        (b"garbage", "multipart/form-data; boundary=b", "invalid_multipart"),
        (b"{}", "application/json", "invalid_multipart"),
        (b"x", "multipart/form-data", "invalid_multipart"),
    ],
    ids=["no-file-part", "unterminated", "garbage", "json", "no-boundary"],
)  # fmt: skip
async def test_malformed_multipart_is_a_400(
    person: Person, content: bytes, content_type: str, code: str
) -> None:
    r = await person.http.post(
        "/api/media", content=content, headers={"content-type": content_type}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code


async def test_two_file_parts_are_refused(person: Person) -> None:
    jpeg = tiny_jpeg()
    r = await person.http.post("/api/media", files=[("file", ("a", jpeg)), ("file", ("b", jpeg))])
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_field"


async def test_uploading_needs_authentication(media_server: RunningServer) -> None:
    async with media_server.client() as anonymous:
        r = await upload(anonymous, tiny_jpeg())
    assert r.status_code == 401


async def test_no_temporary_file_is_left_behind(
    media_server: RunningServer, person: Person
) -> None:
    await upload(person.http, tiny_jpeg())
    await upload(person.http, b"not media at all")
    await upload(person.http, tiny_jpeg()[:100])
    assert list((media_server.settings.data_dir / "tmp").iterdir()) == []


async def test_uploads_are_rate_limited_per_user_with_retry_after(tmp_path: Path) -> None:
    async with run_server({}, tmp_path, upload_burst=3.0, upload_rate_per_s=0.01) as running:
        alice, bob = await login(running), await login(running)
        answers = [(await upload(alice.http, tiny_jpeg())).status_code for _ in range(4)]
        assert answers == [201, 201, 201, 429]
        limited = await upload(alice.http, tiny_jpeg())
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert (await upload(bob.http, tiny_jpeg())).status_code == 201  # per user
        await alice.close()
        await bob.close()


async def test_a_large_video_streams_through_within_its_limit(person: Person) -> None:
    """A video just under the limit is stored byte for byte (streamed in and out)."""
    base = (Path(__file__).parent.parent / "fixtures/media/fixture-imovie.mp4").read_bytes()
    # Pad with a trailing 'free' box so the container stays valid.
    pad = MAX_VIDEO - len(base) - 16
    data = base + (pad + 8).to_bytes(4, "big") + b"free" + b"\x00" * pad
    assert len(data) <= MAX_VIDEO
    r = await upload(person.http, data)
    assert r.status_code == 201, r.text
    stored = await fetch(r.json()["url"])
    assert stored.content == data


async def test_a_video_poster_from_ffmpeg_becomes_its_thumbnail(
    media_server: RunningServer, person: Person, tmp_path: Path
) -> None:
    """With an ``ffmpeg`` (here a stand-in that prints a JPEG), the poster is stored as
    the thumbnail; a failing one leaves the video without, saying why."""
    poster = tmp_path / "poster.jpg"
    poster.write_bytes(tiny_jpeg("blue", (32, 18)))
    good, bad = tmp_path / "ffmpeg-good", tmp_path / "ffmpeg-bad"
    good.write_text(f"#!/bin/sh\ncat {poster}\n")
    bad.write_text("#!/bin/sh\nexit 1\n")
    good.chmod(0o755)
    bad.chmod(0o755)
    backends = media_server.app.state.services.media
    video = (Path(__file__).parent.parent / "fixtures/media/fixture.webm").read_bytes()
    original = backends.ffmpeg
    try:
        backends.ffmpeg = str(good)
        body = (await upload(person.http, video)).json()
        assert body["thumbnail_status"] == "ready"
        assert body["thumbnail_content_type"] == "image/jpeg"
        assert (await fetch(body["thumbnail_url"])).content == poster.read_bytes()
        backends.ffmpeg = str(bad)
        body = (await upload(person.http, video)).json()
        assert (body["thumbnail_url"], body["thumbnail_status"]) == (None, "failed")
    finally:
        backends.ffmpeg = original
