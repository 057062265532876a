"""PillowImageProcessor and probe_video on the fixture corpus (tests/fixtures/media/INDEX.tsv)
and on images made here."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from omninudge_adapters.imaging import (
    PillowImageProcessor,
    VideoProbe,
    make_thumbnail,
    probe_video,
    process_image,
)
from omninudge_core.errors import InvalidFrame, PayloadTooLarge, UnsupportedMediaType
from omninudge_core.policies.media import DEFAULT_MAX_PIXELS
from omninudge_core.ports import ProcessedImage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "media"
THUMB = 320

with (FIXTURES / "INDEX.tsv").open(newline="") as index_file:
    INDEX = list(csv.DictReader(index_file, delimiter="\t"))

VIDEO_SUFFIXES = (".mp4", ".webm")
IMAGES = [row for row in INDEX if not row["filename"].endswith(VIDEO_SUFFIXES)]
VIDEOS = [row for row in INDEX if row["filename"].endswith(VIDEO_SUFFIXES)]
ACCEPTED_IMAGES = [row["filename"] for row in IMAGES if row["expected"] == "accept"]

EXPECTED_ERROR: dict[str, type[Exception]] = {
    "reject-415": UnsupportedMediaType,
    "reject-413-bomb": PayloadTooLarge,
    "reject-400-corrupt": InvalidFrame,
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def process(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ProcessedImage:
    return process_image(data, max_pixels=max_pixels, thumbnail_px=THUMB)


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_no_metadata(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        image.load()
        assert len(image.getexif()) == 0
        for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop"):
            assert key not in image.info
    assert b"Exif\x00\x00" not in data
    assert b"http://ns.adobe.com/xap/1.0/" not in data


def jpeg_with_orientation(width: int, height: int, orientation: int) -> bytes:
    """A JPEG whose top-left quarter is red and the rest blue, tagged ``orientation``."""
    image = Image.new("RGB", (width, height), "blue")
    image.paste((255, 0, 0), (0, 0, width // 2, height // 2))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make: something to leak
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, quality=95)
    return out.getvalue()


# --- the corpus ----------------------------------------------------------------------------


def test_the_fixture_copies_match_the_index() -> None:
    for row in INDEX:
        digest = hashlib.sha256(fixture(row["filename"])).hexdigest()
        assert digest == row["sha256"], row["filename"]


@pytest.mark.parametrize("row", IMAGES, ids=lambda row: row["filename"])
def test_every_image_fixture_gets_its_documented_outcome(row: dict[str, str]) -> None:
    data = fixture(row["filename"])
    if row["expected"] == "accept":
        result = process(data)
        assert opened(result.data).size == (result.width, result.height)
        return
    error = EXPECTED_ERROR[row["expected"]]
    with pytest.raises(error) as raised:
        process(data)
    if error is InvalidFrame:
        assert raised.value.code == "corrupt_media"
        assert raised.value.status == 400
    else:
        assert raised.value.status == {PayloadTooLarge: 413, UnsupportedMediaType: 415}[error]


@pytest.mark.parametrize("name", ACCEPTED_IMAGES)
def test_no_output_carries_exif_gps_xmp_or_comments(name: str) -> None:
    result = process(fixture(name))
    assert_no_metadata(result.data)
    assert_no_metadata(result.thumbnail)


@pytest.mark.parametrize("name", ACCEPTED_IMAGES)
def test_the_thumbnail_fits_the_box_and_keeps_the_aspect_ratio(name: str) -> None:
    result = process(fixture(name))
    thumb = opened(result.thumbnail)
    assert getattr(thumb, "n_frames", 1) == 1
    assert (
        thumb.format == {"image/jpeg": "JPEG", "image/webp": "WEBP"}[result.thumbnail_content_type]
    )
    longest = max(result.width, result.height)
    assert max(thumb.size) == min(longest, THUMB)
    ratio = result.width / result.height
    assert thumb.size[0] / thumb.size[1] == pytest.approx(ratio, rel=0.05)


@pytest.mark.parametrize("name", ACCEPTED_IMAGES)
def test_the_output_keeps_the_sniffed_type(name: str) -> None:
    result = process(fixture(name))
    expected_format = {
        "image/jpeg": "JPEG",
        "image/png": "PNG",
        "image/gif": "GIF",
        "image/webp": "WEBP",
    }[result.content_type]
    assert opened(result.data).format == expected_format


def test_gps_tags_of_the_exif_gps_fixture_are_gone() -> None:
    original = Image.open(io.BytesIO(fixture("exif_gps.jpg")))
    assert original.getexif().get_ifd(0x8825)  # the fixture does carry a GPS IFD
    result = process(fixture("exif_gps.jpg"))
    assert not opened(result.data).getexif().get_ifd(0x8825)


def test_xmp_and_exif_chunks_of_a_webp_are_dropped_and_its_icc_profile_kept() -> None:
    original = Image.open(io.BytesIO(fixture("flower2.webp")))
    assert {"exif", "xmp", "icc_profile"} <= set(original.info)
    output = opened(process(fixture("flower2.webp")).data)
    assert output.info.get("icc_profile") == original.info["icc_profile"]


# --- orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "size"),
    [(1, (200, 100)), (3, (200, 100)), (5, (100, 200)), (6, (100, 200)), (8, (100, 200))],
)
def test_orientation_is_applied_and_dimensions_follow(
    orientation: int, size: tuple[int, int]
) -> None:
    data = jpeg_with_orientation(200, 100, orientation)
    result = process(data)
    assert (result.width, result.height) == size
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert expected is not None
    difference = ImageChops.difference(opened(result.data).convert("RGB"), expected)
    assert max(ImageStat.Stat(difference).mean) < 8  # only JPEG noise


@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
def test_orientation_fixtures_come_out_upright(orientation: int) -> None:
    data = fixture(f"hopper_orientation_{orientation}.jpg")
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    as_stored = Image.open(io.BytesIO(data)).convert("RGB")
    output = opened(process(data).data).convert("RGB")
    assert upright is not None
    close = max(ImageStat.Stat(ImageChops.difference(output, upright)).mean)
    far = max(ImageStat.Stat(ImageChops.difference(output, as_stored)).mean)
    assert close < 8 < far


# --- modes and animation -------------------------------------------------------------------


def test_a_cmyk_jpeg_comes_out_rgb() -> None:
    assert Image.open(io.BytesIO(fixture("pil_sample_cmyk.jpg"))).mode == "CMYK"
    assert opened(process(fixture("pil_sample_cmyk.jpg")).data).mode == "RGB"


@pytest.mark.parametrize("name", ["i_trns.png", "basn6a16.png"])
def test_16_bit_pngs_come_out_as_8_bit_with_their_transparency(name: str) -> None:
    result = process(fixture(name))
    output = opened(result.data)
    assert output.mode == "RGBA"
    assert result.thumbnail_content_type == "image/webp"
    alpha_low, _ = output.getchannel("A").getextrema()
    assert alpha_low == 0  # transparent pixels stayed transparent


def test_an_opaque_image_gets_a_jpeg_thumbnail_and_a_transparent_one_webp() -> None:
    assert process(fixture("hopper.jpg")).thumbnail_content_type == "image/jpeg"
    assert process(fixture("p_trns_single.png")).thumbnail_content_type == "image/webp"


@pytest.mark.parametrize("name", ["chi.gif", "iss634.webp"])
def test_animations_keep_their_frames_timing_and_loop(name: str) -> None:
    original = Image.open(io.BytesIO(fixture(name)))
    total_ms = 0
    for index in range(original.n_frames):
        original.seek(index)
        original.load()  # WebP reports a frame's duration once it is loaded
        total_ms += original.info.get("duration", 0)
    assert total_ms > 0
    result = process(fixture(name))
    assert result.animated is True
    output = Image.open(io.BytesIO(result.data))
    assert output.n_frames > 1
    assert output.info.get("loop") == 0
    output_ms = 0
    for index in range(output.n_frames):
        output.seek(index)
        output.load()
        output_ms += output.info.get("duration", 0)
    # GIF encoders merge identical consecutive frames by adding their durations.
    assert output_ms == total_ms


def test_an_mpo_keeps_only_its_first_picture_as_a_jpeg() -> None:
    result = process(fixture("sugarshack.mpo"))
    assert result.animated is False
    output = opened(result.data)
    assert output.format == "JPEG"
    assert getattr(output, "n_frames", 1) == 1


# --- limits --------------------------------------------------------------------------------


def test_an_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge) as raised:
        process(fixture("hopper.jpg"), max_pixels=128 * 128 - 1)
    assert raised.value.status == 413
    assert process(fixture("hopper.jpg"), max_pixels=128 * 128).width == 128


def test_every_frame_of_an_animation_counts_towards_the_pixel_limit() -> None:
    data = fixture("chi.gif")  # 320x240, 31 frames
    with pytest.raises(PayloadTooLarge):
        process(data, max_pixels=320 * 240 * 30)
    assert process(data, max_pixels=320 * 240 * 31).animated


def test_a_truncated_copy_of_a_valid_image_is_corrupt_not_a_crash() -> None:
    data = fixture("app13-multiple.jpg")
    for cut in (len(data) // 3, len(data) // 2, len(data) - 100):
        with pytest.raises(InvalidFrame) as raised:
            process(data[:cut])
        assert raised.value.code == "corrupt_media"


def test_bytes_that_only_start_like_an_image_are_corrupt() -> None:
    with pytest.raises(InvalidFrame):
        process(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(UnsupportedMediaType):
        process(b"just text, no image")


# --- the fast thumbnail ---------------------------------------------------------------------


def noisy_jpeg(width: int, height: int) -> bytes:
    image = Image.effect_noise((width, height), 40).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_make_thumbnail_of_a_large_jpeg_uses_the_draft_and_fits_the_box() -> None:
    data, content_type = make_thumbnail(noisy_jpeg(4000, 3000), thumbnail_px=THUMB)
    assert content_type == "image/jpeg"
    assert opened(data).size == (320, 240)


def test_make_thumbnail_applies_the_orientation_and_refuses_what_process_refuses() -> None:
    data, _ = make_thumbnail(jpeg_with_orientation(800, 400, 6), thumbnail_px=THUMB)
    assert opened(data).size == (160, 320)
    with pytest.raises(InvalidFrame):
        make_thumbnail(fixture("truncated_jpeg.jpg"), thumbnail_px=THUMB)
    with pytest.raises(PayloadTooLarge):
        make_thumbnail(fixture("decompression_bomb.gif"), thumbnail_px=THUMB)


# --- the async port ------------------------------------------------------------------------


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def test_the_processor_runs_in_the_executor_it_was_given() -> None:
    with CountingExecutor() as executor:
        processor = PillowImageProcessor(executor)
        result = await processor.process(fixture("hopper.jpg"), max_pixels=10**6, thumbnail_px=64)
        assert executor.submitted == 1
        assert max(opened(result.thumbnail).size) == 64
        thumb, _ = await processor.thumbnail(fixture("hopper.jpg"), thumbnail_px=32)
        assert executor.submitted == 2
        assert max(opened(thumb).size) == 32


async def test_the_processor_maps_errors_through_the_thread() -> None:
    processor = PillowImageProcessor()
    with pytest.raises(PayloadTooLarge):
        await processor.process(
            fixture("decompression_bomb.gif"), max_pixels=10**6, thumbnail_px=64
        )


# --- videos --------------------------------------------------------------------------------


def _ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return shutil.which("ffmpeg")
    return str(imageio_ffmpeg.get_ffmpeg_exe())


FFMPEG = _ffmpeg()


@pytest.mark.parametrize("row", VIDEOS, ids=lambda row: row["filename"])
async def test_every_video_fixture_gets_its_documented_outcome(row: dict[str, str]) -> None:
    path = FIXTURES / row["filename"]
    head = path.read_bytes()[:4096]
    if row["expected"] == "accept":
        probe = await probe_video(head, path=path, ffmpeg="/nonexistent/ffmpeg-is-not-here")
        assert probe.content_type in ("video/mp4", "video/webm")
        return
    with pytest.raises(EXPECTED_ERROR[row["expected"]]):
        await probe_video(head, path=path)


async def test_without_ffmpeg_a_video_has_no_poster() -> None:
    path = FIXTURES / "fixture.webm"
    probe = await probe_video(path.read_bytes()[:4096], path=path, ffmpeg="/nonexistent/ffmpeg")
    assert probe == VideoProbe("video/webm", "webm", None, None)
    header_only = await probe_video(path.read_bytes()[:4096])
    assert header_only.poster is None


async def test_images_are_not_videos() -> None:
    with pytest.raises(UnsupportedMediaType):
        await probe_video(fixture("hopper.jpg")[:4096])


@pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg binary (imageio-ffmpeg or PATH)")
@pytest.mark.parametrize("name", ["fixture-imovie.mp4", "fixture.webm"])
async def test_with_ffmpeg_a_video_gets_a_jpeg_poster_without_metadata(name: str) -> None:
    path = FIXTURES / name
    probe = await probe_video(path.read_bytes()[:4096], path=path, ffmpeg=FFMPEG)
    assert probe.poster is not None
    assert probe.poster_content_type == "image/jpeg"
    poster = opened(probe.poster)
    assert poster.format == "JPEG"
    assert max(poster.size) == THUMB
    assert_no_metadata(probe.poster)


async def test_the_processor_works_in_a_process_pool_errors_included() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        processor = PillowImageProcessor(pool)
        result = await processor.process(fixture("chi.gif"), max_pixels=10**7, thumbnail_px=64)
        assert result.animated
        with pytest.raises(InvalidFrame) as raised:
            await processor.process(fixture("sequence_gap.png"), max_pixels=10**7, thumbnail_px=64)
        assert raised.value.code == "corrupt_media"
        assert raised.value.field == "file"
