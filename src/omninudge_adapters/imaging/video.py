"""Videos: check the container, make a poster frame when FFmpeg is installed.

Videos are stored as uploaded (no transcoding). What we check:

- the type, from the first bytes (``policies.media.sniff``): MP4 or WebM, else 415;
- the container's top level, from the file: an MP4 is a chain of ISO-BMFF boxes that
  fits in the file and holds a ``moov`` box (the index; without it nothing plays);
  a WebM has its EBML header followed by a Segment. A cut-off upload fails here
  with 400 ``corrupt_media``.

A poster (first frame, longest side ``thumbnail_px``, JPEG) is made with ``ffmpeg``
when it is on PATH (or given); otherwise ``poster`` is None and the API answers
``thumbnail_url: null``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import attrs

from omninudge_core.errors import InvalidFrame, UnsupportedMediaType
from omninudge_core.models import MediaKind
from omninudge_core.policies.media import SNIFF_BYTES, sniff

__all__ = ["FFMPEG_TIMEOUT_S", "VideoProbe", "check_container", "probe_video"]

FFMPEG_TIMEOUT_S = 20.0
_EBML_SEGMENT_ID = b"\x18\x53\x80\x67"
_BOX_HEADER = 8


@attrs.frozen
class VideoProbe:
    content_type: str
    extension: str
    poster: bytes | None
    poster_content_type: str | None


def _corrupt(message: str) -> InvalidFrame:
    return InvalidFrame(message, code="corrupt_media", field="file")


def _check_mp4(path: Path) -> None:
    size = path.stat().st_size
    seen: set[bytes] = set()
    with path.open("rb") as file:
        offset = 0
        while offset < size:
            file.seek(offset)
            header = file.read(16)
            if len(header) < _BOX_HEADER:
                raise _corrupt("MP4 ends inside a box header")
            box_size = int.from_bytes(header[:4], "big")
            box_type = header[4:8]
            if box_size == 1:  # 64-bit "largesize" follows the type
                if len(header) < 16:
                    raise _corrupt("MP4 ends inside a box header")
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:  # the box runs to the end of the file
                box_size = size - offset
            if box_size < _BOX_HEADER or offset + box_size > size:
                raise _corrupt(f"MP4 box {box_type!r} runs past the end of the file")
            seen.add(box_type)
            offset += box_size
    if b"moov" not in seen:
        raise _corrupt("MP4 has no moov box (index): it cannot be played")


def _vint_length(first: int) -> int:
    return 9 - first.bit_length() if first else 0


def _check_webm(path: Path) -> None:
    with path.open("rb") as file:
        head = file.read(64 * 1024)
    # EBML header: ID (4 bytes), size (vint), body; then the Segment element.
    if len(head) < 5:
        raise _corrupt("WebM ends inside its header")
    length = _vint_length(head[4])
    if length == 0 or 4 + length > len(head):
        raise _corrupt("WebM header size is invalid")
    value = head[4] & ((1 << (8 - length)) - 1)
    for byte in head[5 : 4 + length]:
        value = (value << 8) | byte
    segment_at = 4 + length + value
    if head[segment_at : segment_at + 4] != _EBML_SEGMENT_ID:
        raise _corrupt("WebM has no Segment after its header")


def check_container(path: Path, content_type: str) -> None:
    """Raises InvalidFrame(code="corrupt_media") when the container's top level is
    broken (synchronous; reads only box and element headers)."""
    if content_type == "video/mp4":
        _check_mp4(path)
    else:
        _check_webm(path)


async def _poster(ffmpeg: str, path: Path, thumbnail_px: int) -> bytes | None:
    scale = (
        f"scale='min({thumbnail_px},iw)':'min({thumbnail_px},ih)'"
        ":force_original_aspect_ratio=decrease"
    )
    try:
        process = await asyncio.create_subprocess_exec(
            ffmpeg, "-nostdin", "-v", "error", "-i", os.fspath(path),
            "-frames:v", "1", "-vf", scale, "-map_metadata", "-1", "-flags:v", "+bitexact",
            "-f", "image2pipe", "-c:v", "mjpeg", "-",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError:
        return None  # not executable or gone: the poster is optional
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), FFMPEG_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    if process.returncode != 0 or not stdout:
        return None
    return stdout


async def probe_video(
    head: bytes,
    *,
    path: Path | None = None,
    thumbnail_px: int = 320,
    ffmpeg: str | None = None,
) -> VideoProbe:
    """Check an uploaded video and make its poster.

    ``head`` is the first bytes (``SNIFF_BYTES`` suffice); ``path`` the whole upload on
    disk, when the caller spooled it (the container check and the poster need it).
    ``ffmpeg`` defaults to ``shutil.which("ffmpeg")``.

    Raises UnsupportedMediaType (not MP4/WebM), InvalidFrame(code="corrupt_media").
    """
    sniffed = sniff(head[:SNIFF_BYTES])
    if sniffed is None or sniffed.kind is not MediaKind.VIDEO:
        raise UnsupportedMediaType("only MP4 and WebM videos are accepted")
    poster: bytes | None = None
    if path is not None:
        await asyncio.to_thread(check_container, path, sniffed.content_type)
        binary = ffmpeg if ffmpeg is not None else shutil.which("ffmpeg")
        if binary is not None:
            poster = await _poster(binary, path, thumbnail_px)
    return VideoProbe(
        content_type=sniffed.content_type,
        extension=sniffed.extension,
        poster=poster,
        poster_content_type="image/jpeg" if poster is not None else None,
    )
