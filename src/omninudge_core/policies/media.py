"""What an upload is, decided from its first bytes only (API.md "Media").

Accepted: JPEG, PNG, GIF, WebP images; MP4 and WebM videos. The file name and the
client's content type are never consulted. Two look-alikes need care:

- ISO-BMFF (``ftyp`` box at offset 4) is MP4 only with an MP4 brand; AVIF, HEIF/HEIC
  and QuickTime share the box and are refused. The major brand decides when it is
  known; otherwise an MP4 brand must appear among the compatible brands.
- EBML (``1A 45 DF A3``) is WebM only when the header's DocType is ``webm``;
  Matroska (``matroska``) is refused.

Size limits are per kind, and a pixel limit bounds decoding (decompression bombs).
"""

from __future__ import annotations

import attrs

from omninudge_core.errors import PayloadTooLarge, UnsupportedMediaType
from omninudge_core.models import MediaKind

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VIDEO_BYTES",
    "DEFAULT_THUMBNAIL_PX",
    "SNIFF_BYTES",
    "MediaLimits",
    "Sniffed",
    "check_pixels",
    "check_size",
    "classify",
    "sniff",
]

SNIFF_BYTES = 4096
"""How many leading bytes ``sniff`` needs at most (the EBML header may be long)."""

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000  # a 48 MP phone photo fits; a 65535x65535 GIF does not
DEFAULT_THUMBNAIL_PX = 320


@attrs.frozen
class Sniffed:
    kind: MediaKind
    content_type: str
    extension: str


JPEG = Sniffed(MediaKind.IMAGE, "image/jpeg", "jpg")
PNG = Sniffed(MediaKind.IMAGE, "image/png", "png")
GIF = Sniffed(MediaKind.IMAGE, "image/gif", "gif")
WEBP = Sniffed(MediaKind.IMAGE, "image/webp", "webp")
MP4 = Sniffed(MediaKind.VIDEO, "video/mp4", "mp4")
WEBM = Sniffed(MediaKind.VIDEO, "video/webm", "webm")

_MP4_BRANDS = frozenset(
    {
        b"isom",
        b"iso2",
        b"iso3",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"avc1",
        b"dash",
        b"M4V ",
        b"M4VH",
        b"M4VP",
        b"MSNV",
        b"f4v ",
    }
)
# Image and non-MP4 containers that share ISO-BMFF; their major brand wins even when
# they list an MP4 brand as compatible.
_REFUSED_MAJOR_BRANDS = frozenset(
    {
        b"avif",
        b"avis",
        b"heic",
        b"heix",
        b"heim",
        b"heis",
        b"hevc",
        b"hevx",
        b"hevm",
        b"hevs",
        b"mif1",
        b"mif2",
        b"msf1",
        b"miaf",
        b"crx ",
        b"qt  ",
        b"jp2 ",
        b"M4A ",
        b"M4B ",
        b"M4P ",
    }
)

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE_ID = 0x4282


def sniff(head: bytes) -> Sniffed | None:
    """The media type of a file from its first bytes (``SNIFF_BYTES`` suffice), or
    None when it is not one we accept."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(head) >= 16 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP if head[12:15] == b"VP8" else None
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return MP4 if _is_mp4(head) else None
    if head.startswith(_EBML_MAGIC):
        return WEBM if _ebml_doctype(head) == b"webm" else None
    return None


def _is_mp4(head: bytes) -> bool:
    box_size = int.from_bytes(head[0:4], "big")
    if box_size < 16 or box_size % 4 != 0:
        return False  # an ftyp box is 8 header + major + minor + 4-byte brands
    major = head[8:12]
    if major in _REFUSED_MAJOR_BRANDS:
        return False
    if major in _MP4_BRANDS:
        return True
    end = min(box_size, len(head))
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    return bool(compatible & _MP4_BRANDS) and not (compatible & {b"avif", b"avis", b"heic"})


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, next position) or None."""
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _ebml_doctype(head: bytes) -> bytes | None:
    """The DocType of the EBML header at the start of ``head``, if present."""
    size = _vint(head, 4, keep_marker=False)
    if size is None:
        return None
    header_size, pos = size
    end = min(len(head), pos + header_size)
    while pos < end:
        element = _vint(head, pos, keep_marker=True)
        if element is None:
            return None
        element_id, pos = element
        length = _vint(head, pos, keep_marker=False)
        if length is None:
            return None
        data_size, pos = length
        if element_id == _EBML_DOCTYPE_ID:
            return head[pos : pos + data_size].rstrip(b"\x00")
        pos += data_size
    return None


@attrs.frozen
class MediaLimits:
    """Upload limits: bytes per kind and decoded pixels (width x height) per image."""

    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    thumbnail_px: int = DEFAULT_THUMBNAIL_PX

    def max_bytes(self, kind: MediaKind) -> int:
        return self.max_video_bytes if kind is MediaKind.VIDEO else self.max_image_bytes

    @property
    def max_upload_bytes(self) -> int:
        """What to read at most before the kind is known."""
        return max(self.max_image_bytes, self.max_video_bytes)


def check_size(kind: MediaKind, size: int, limits: MediaLimits = MediaLimits()) -> None:
    """Raises PayloadTooLarge when ``size`` bytes exceed the limit for ``kind``."""
    limit = limits.max_bytes(kind)
    if size > limit:
        raise PayloadTooLarge(f"{kind.value} larger than {limit} bytes", field="file", limit=limit)


def check_pixels(width: int, height: int, limits: MediaLimits = MediaLimits()) -> None:
    """Raises PayloadTooLarge when an image would decode to more than ``max_pixels``."""
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"image of {width}x{height} pixels exceeds {limits.max_pixels}",
            field="file",
            limit=limits.max_pixels,
        )


def classify(head: bytes, size: int, limits: MediaLimits = MediaLimits()) -> Sniffed:
    """Sniff and size-check an upload.

    Raises UnsupportedMediaType for anything but JPEG, PNG, GIF, WebP, MP4 and WebM,
    PayloadTooLarge when over the limit for its kind.
    """
    sniffed = sniff(head)
    if sniffed is None:
        raise UnsupportedMediaType("only JPEG, PNG, GIF, WebP, MP4 and WebM are accepted")
    check_size(sniffed.kind, size, limits)
    return sniffed
