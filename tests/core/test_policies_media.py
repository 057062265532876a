"""Media sniffing by magic bytes, on real files (tests/fixtures/media, see LICENSE-NOTES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core.errors import PayloadTooLarge, UnsupportedMediaType
from omninudge_core.models import MediaKind
from omninudge_core.policies.media import (
    SNIFF_BYTES,
    MediaLimits,
    check_pixels,
    check_size,
    classify,
    sniff,
)

MEDIA = Path(__file__).parent.parent / "fixtures" / "media"


def head(name: str) -> bytes:
    return (MEDIA / name).read_bytes()[:SNIFF_BYTES]


@pytest.mark.parametrize(
    ("name", "content_type", "extension", "kind"),
    [
        ("hopper.jpg", "image/jpeg", "jpg", MediaKind.IMAGE),
        ("app13-multiple.jpg", "image/jpeg", "jpg", MediaKind.IMAGE),
        ("pil_sample_cmyk.jpg", "image/jpeg", "jpg", MediaKind.IMAGE),
        ("sugarshack.mpo", "image/jpeg", "jpg", MediaKind.IMAGE),
        ("basn6a16.png", "image/png", "png", MediaKind.IMAGE),
        ("i_trns.png", "image/png", "png", MediaKind.IMAGE),
        ("chi.gif", "image/gif", "gif", MediaKind.IMAGE),
        ("hopper.webp", "image/webp", "webp", MediaKind.IMAGE),
        ("2-color.webp", "image/webp", "webp", MediaKind.IMAGE),
        ("iss634.webp", "image/webp", "webp", MediaKind.IMAGE),
        ("flower2.webp", "image/webp", "webp", MediaKind.IMAGE),
        ("fixture-imovie.mp4", "video/mp4", "mp4", MediaKind.VIDEO),
        ("fixture-isom.mp4", "video/mp4", "mp4", MediaKind.VIDEO),  # decoding rejects it later
        ("fixture.webm", "video/webm", "webm", MediaKind.VIDEO),
    ],
)
def test_accepted_formats_are_recognised_from_their_bytes(
    name: str, content_type: str, extension: str, kind: MediaKind
) -> None:
    sniffed = sniff(head(name))
    assert sniffed is not None
    assert (sniffed.content_type, sniffed.extension, sniffed.kind) == (
        content_type,
        extension,
        kind,
    )


@pytest.mark.parametrize(
    "name",
    [
        "hopper_avif.mp4",  # AVIF: ftyp box with brand avif, named .mp4
        "hopper_tif.jpg",  # TIFF named .jpg
        "anchor_horizontal_svg.png",  # SVG text named .png
    ],
)
def test_look_alikes_and_renamed_files_are_refused(name: str) -> None:
    assert sniff(head(name)) is None
    with pytest.raises(UnsupportedMediaType):
        classify(head(name), 100)


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x08free"


@pytest.mark.parametrize(
    "data",
    [
        ftyp(b"heic", b"mif1", b"heic"),
        ftyp(b"mif1", b"mif1"),
        ftyp(b"avis", b"avis", b"msf1", b"iso8", b"mp41"),  # AVIF sequence listing mp41
        ftyp(b"qt  ", b"qt  "),
        ftyp(b"crx ", b"isom"),
        ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"),
        ftyp(b"3gp4", b"3gp4"),
        b"\x00\x00\x00\x0cftypisom",  # box too small to be an ftyp
    ],
)
def test_iso_bmff_without_an_mp4_brand_is_refused(data: bytes) -> None:
    assert sniff(data) is None


@pytest.mark.parametrize(
    "data",
    [
        ftyp(b"isom", b"isom", b"iso2"),
        ftyp(b"iso6", b"iso6"),
        ftyp(b"M4V ", b"M4V ", b"M4A "),
        ftyp(b"XYZW", b"XYZW", b"avc1"),  # unknown major brand, MP4-compatible
    ],
)
def test_iso_bmff_with_an_mp4_brand_is_mp4(data: bytes) -> None:
    sniffed = sniff(data)
    assert sniffed is not None
    assert sniffed.content_type == "video/mp4"


def test_matroska_is_refused_but_webm_accepted() -> None:
    webm = head("fixture.webm")
    matroska = webm.replace(b"\x42\x82\x84webm", b"\x42\x82\x88matroska", 1)
    assert matroska != webm
    assert sniff(matroska) is None
    assert sniff(webm) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"GIF88a",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"RIFF\x00\x00\x00\x00WEBPXXXX",
        b"\x1a\x45\xdf\xa3",
        b"\x1a\x45\xdf\xa3\x00",
        b"\x1a\x45\xdf\xa3\x8f\x42\x82\x84we",  # DocType cut short
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ],
)
def test_truncated_or_foreign_heads_are_refused(data: bytes) -> None:
    assert sniff(data) is None


@given(st.binary(max_size=64))
def test_sniff_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = sniff(data)
    assert result is None or result.kind in (MediaKind.IMAGE, MediaKind.VIDEO)


@given(st.binary(max_size=48))
def test_sniff_never_raises_on_corrupted_ebml_headers(tail: bytes) -> None:
    result = sniff(b"\x1a\x45\xdf\xa3" + tail)
    assert result is None or result.content_type == "video/webm"


def test_size_limits_are_per_kind() -> None:
    limits = MediaLimits()
    assert limits.max_image_bytes == 20 * 1024 * 1024
    assert limits.max_video_bytes == 200 * 1024 * 1024
    check_size(MediaKind.IMAGE, limits.max_image_bytes)
    with pytest.raises(PayloadTooLarge) as caught:
        check_size(MediaKind.IMAGE, limits.max_image_bytes + 1)
    assert caught.value.status == 413
    assert caught.value.limit == limits.max_image_bytes
    check_size(MediaKind.VIDEO, limits.max_image_bytes + 1)


def test_classify_sniffs_then_checks_the_size_for_that_kind() -> None:
    small = MediaLimits(max_image_bytes=1000, max_video_bytes=100_000)
    assert classify(head("fixture.webm"), 66398, small).extension == "webm"
    with pytest.raises(PayloadTooLarge):
        classify(head("hopper.jpg"), 6412, small)


def test_pixel_limit_refuses_decompression_bombs() -> None:
    check_pixels(8000, 6000)  # a 48 MP phone photo
    with pytest.raises(PayloadTooLarge):
        check_pixels(65535, 65535)  # decompression_bomb.gif's descriptor
    assert sniff(head("decompression_bomb.gif")) is not None  # sniffing alone cannot tell
