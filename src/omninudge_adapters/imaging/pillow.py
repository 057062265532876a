"""Image processing with Pillow: decode safely, strip metadata, thumbnail.

Every upload is treated as hostile. In order:

1. Sniff the first bytes (``omninudge_core.policies.media.sniff``): anything but JPEG,
   PNG, GIF or WebP is refused (415) before Pillow sees it.
2. Open with ``formats=[...]`` so Pillow cannot pick another decoder (TIFF, EPS, ...).
   The header's size is checked against ``max_pixels`` *before* decoding; for an
   animation every frame counts (width x height x frames), since all frames are held
   for re-encoding. Pillow's own bomb check and PNG text-chunk bombs are 413 too.
3. Decode every pixel of every frame: a truncated or corrupt file fails here (400
   ``corrupt_media``), not later in a browser. The first error is final.
4. Apply the EXIF orientation, normalise the mode (CMYK -> RGB, 16-bit -> 8-bit,
   palette -> RGB(A)), and re-encode from pixels only: EXIF (with GPS), XMP, comments
   and text chunks are not carried over. An RGB ICC profile is kept (colours stay right).
5. Thumbnail: longest side ``thumbnail_px``; JPEG when opaque, WebP when it has alpha.

The functions here are synchronous and CPU-bound; ``PillowImageProcessor`` runs them
off the event loop (a thread by default, or an executor given at construction).
"""

from __future__ import annotations

import asyncio
import functools
import io
from concurrent.futures import Executor
from typing import TypeVar

import attrs
from PIL import Image, ImageFile, UnidentifiedImageError

from omninudge_core.errors import (
    InvalidFrame,
    OmniNudgeError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from omninudge_core.models import MediaKind
from omninudge_core.policies.media import SNIFF_BYTES, MediaLimits, check_pixels, sniff
from omninudge_core.ports import ProcessedImage

_T = TypeVar("_T")

__all__ = [
    "ALPHA_THUMBNAIL_TYPE",
    "OPAQUE_THUMBNAIL_TYPE",
    "PillowImageProcessor",
    "make_thumbnail",
    "process_image",
]

# Pillow format names accepted, per sniffed content type. MPO is a JPEG with more
# pictures appended (phone cameras); Pillow names it MPO even with formats=["JPEG"].
_PILLOW_FORMATS = {
    "image/jpeg": ("JPEG", "MPO"),
    "image/png": ("PNG",),
    "image/gif": ("GIF",),
    "image/webp": ("WEBP",),
}
_OPEN_FORMATS = ["JPEG", "PNG", "GIF", "WEBP"]

OPAQUE_THUMBNAIL_TYPE = "image/jpeg"
ALPHA_THUMBNAIL_TYPE = "image/webp"

JPEG_QUALITY = 85
WEBP_QUALITY = 82

# EXIF Orientation -> the transpose that makes the pixels upright (as ImageOps does).
_ORIENTATION_TAG = 0x0112
_TRANSPOSE: dict[int, tuple[Image.Transpose, ...]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _corrupt(message: str) -> InvalidFrame:
    return InvalidFrame(message, code="corrupt_media", field="file")


@attrs.frozen
class _Decoded:
    """Upright, mode-normalised frames ready to encode, without any metadata."""

    output_format: str  # Pillow format name of the re-encoded image
    content_type: str
    frames: tuple[Image.Image, ...]
    durations: tuple[int, ...]
    loop: int
    icc_profile: bytes | None

    @property
    def animated(self) -> bool:
        return len(self.frames) > 1


def _check_type(data: bytes) -> str:
    sniffed = sniff(data[:SNIFF_BYTES])
    if sniffed is None or sniffed.kind is not MediaKind.IMAGE:
        raise UnsupportedMediaType("only JPEG, PNG, GIF and WebP images are accepted")
    return sniffed.content_type


def _transposes(image: Image.Image) -> tuple[Image.Transpose, ...]:
    orientation = image.getexif().get(_ORIENTATION_TAG)
    return _TRANSPOSE.get(orientation, ()) if isinstance(orientation, int) else ()


def _normalise(frame: Image.Image, *, for_jpeg: bool) -> Image.Image:
    """One of L, RGB, RGBA (never for JPEG); drops the palette and 16-bit depth."""
    if for_jpeg:
        return frame if frame.mode in ("L", "RGB") else frame.convert("RGB")
    has_alpha = "A" in frame.getbands() or "transparency" in frame.info
    if has_alpha:
        return frame if frame.mode == "RGBA" else frame.convert("RGBA")
    if frame.mode in ("L", "RGB"):
        return frame
    return frame.convert("RGB")


def _upright(frame: Image.Image, transposes: tuple[Image.Transpose, ...]) -> Image.Image:
    for method in transposes:
        frame = frame.transpose(method)
    return frame


def _clean(frame: Image.Image) -> Image.Image:
    """The same pixels without the info dict, so no encoder can pick up EXIF/XMP/comments."""
    frame.info = {}
    return frame


def _rgb_icc_profile(image: Image.Image, output_mode: str) -> bytes | None:
    profile = image.info.get("icc_profile")
    # A CMYK (or other) profile would mislabel the converted pixels: keep only one whose
    # colour space matches what we write (bytes 16..20 of an ICC header).
    if not isinstance(profile, bytes) or len(profile) < 20:
        return None
    space = profile[16:20]
    wanted = b"GRAY" if output_mode == "L" else b"RGB "
    return profile if space == wanted else None


def _decode(data: bytes, content_type: str, max_pixels: int) -> _Decoded:
    limits = MediaLimits(max_pixels=max_pixels)
    with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as image:
        if image.format not in _PILLOW_FORMATS[content_type]:
            raise _corrupt(f"{content_type} content decodes as {image.format}")
        width, height = image.size
        check_pixels(width, height, limits)
        # MPO's extra pictures are depth/preview images, not an animation.
        frame_count = 1 if image.format == "MPO" else getattr(image, "n_frames", 1)
        check_pixels(width, height * frame_count, limits)
        transposes = _transposes(image)
        output_format = "JPEG" if image.format == "MPO" else image.format
        for_jpeg = output_format == "JPEG"

        frames: list[Image.Image] = []
        durations: list[int] = []
        icc: bytes | None = None
        loop = image.info.get("loop", 0)
        for index in range(frame_count):
            image.seek(index)
            image.load()
            frame = _upright(_normalise(image, for_jpeg=for_jpeg), transposes)
            if frame_count == 1:
                icc = _rgb_icc_profile(image, frame.mode)
            # Kept as given, 0 included: viewers apply their own minimum delay.
            duration = image.info.get("duration")
            durations.append(int(duration) if isinstance(duration, int | float) else 0)
            if frame is image and frame_count > 1:
                frame = image.copy()  # the next seek reuses ``image``
            frame.info = {}  # pixels only: no encoder can pick up EXIF/XMP/comments
            frames.append(frame)
        return _Decoded(
            output_format=output_format,
            content_type=content_type,
            frames=tuple(frames),
            durations=tuple(durations),
            loop=loop if isinstance(loop, int) else 0,
            icc_profile=icc,
        )


def _decode_or_map(data: bytes, content_type: str, max_pixels: int) -> _Decoded:
    """``_decode`` with every Pillow failure mapped to our errors."""
    # Pillow must never finish a truncated file with grey: the first error is final.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    try:
        return _decode(data, content_type, max_pixels)
    except OmniNudgeError:
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(
            "image exceeds the decoder's pixel limit", field="file", limit=max_pixels
        ) from exc
    except UnidentifiedImageError as exc:
        raise _corrupt("the image cannot be decoded") from exc
    except ValueError as exc:
        if "too large" in str(exc).lower():  # PNG zTXt/iTXt/iCCP decompression bombs
            raise PayloadTooLarge("image metadata expands too much", field="file") from exc
        raise _corrupt(f"the image cannot be decoded: {exc}") from exc
    except MemoryError as exc:
        raise PayloadTooLarge("image too large to decode", field="file") from exc
    except Exception as exc:
        # Decoders of hostile input fail in many ways (OSError, SyntaxError, EOFError,
        # struct.error, IndexError, ...): all of them mean the upload is broken.
        raise _corrupt(f"the image cannot be decoded: {type(exc).__name__}") from exc


def _encode_image(decoded: _Decoded) -> bytes:
    out = io.BytesIO()
    first, rest = decoded.frames[0], list(decoded.frames[1:])
    options: dict[str, object] = {}
    if decoded.icc_profile is not None:
        options["icc_profile"] = decoded.icc_profile
    if decoded.output_format == "JPEG":
        # Baseline, not progressive: progressive encoding is ~6x slower for a 12 MP photo.
        first.save(out, format="JPEG", quality=JPEG_QUALITY, **options)
    elif decoded.output_format == "PNG":
        # APNG: every frame (already composited onto full canvases), timing and loop.
        animation = {
            "save_all": True,
            "append_images": rest,
            "duration": list(decoded.durations),
            "loop": decoded.loop,
        }
        first.save(out, format="PNG", **(animation if decoded.animated else {}), **options)
    elif decoded.output_format == "WEBP":
        animation = {"save_all": True, "append_images": rest, "duration": list(decoded.durations)}
        first.save(
            out,
            format="WEBP",
            quality=WEBP_QUALITY,
            loop=decoded.loop,
            **(animation if decoded.animated else {}),
            **options,
        )
    else:  # GIF
        animation = {
            "save_all": True,
            "append_images": rest,
            "duration": list(decoded.durations),
            "disposal": 2,  # frames were composited onto full RGBA canvases already
        }
        first.save(out, format="GIF", loop=decoded.loop, **(animation if decoded.animated else {}))
    return out.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    if image.mode != "RGBA":
        return False
    extrema = image.getchannel("A").getextrema()
    return isinstance(extrema[0], int | float) and extrema[0] < 255


def _encode_thumbnail(frame: Image.Image, thumbnail_px: int) -> tuple[bytes, str]:
    thumb = frame.copy()
    # reducing_gap: a cheap integer reduce first, then a good resample on the rest.
    thumb.thumbnail((thumbnail_px, thumbnail_px), Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    if _has_alpha(thumb):
        thumb.save(out, format="WEBP", quality=WEBP_QUALITY)
        return out.getvalue(), ALPHA_THUMBNAIL_TYPE
    if thumb.mode not in ("L", "RGB"):
        thumb = thumb.convert("RGB")
    thumb.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), OPAQUE_THUMBNAIL_TYPE


def process_image(data: bytes, *, max_pixels: int, thumbnail_px: int) -> ProcessedImage:
    """Decode, orient, strip and re-encode ``data``; make its thumbnail (synchronous).

    Raises UnsupportedMediaType (not JPEG/PNG/GIF/WebP), PayloadTooLarge (over
    ``max_pixels``, decompression bombs), InvalidFrame(code="corrupt_media").
    """
    content_type = _check_type(data)
    decoded = _decode_or_map(data, content_type, max_pixels)
    encoded = _encode_image(decoded)
    thumbnail, thumbnail_type = _encode_thumbnail(decoded.frames[0], thumbnail_px)
    width, height = decoded.frames[0].size
    return ProcessedImage(
        data=encoded,
        content_type=content_type,
        width=width,
        height=height,
        animated=decoded.animated,
        thumbnail=thumbnail,
        thumbnail_content_type=thumbnail_type,
    )


def _draft_thumbnail_source(data: bytes, thumbnail_px: int, max_pixels: int) -> Image.Image:
    with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as image:
        check_pixels(*image.size, MediaLimits(max_pixels=max_pixels))
        transposes = _transposes(image)
        if image.format in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: a 12 MP photo decodes in a
            # fraction of the time, still at least twice the thumbnail size.
            image.draft("RGB", (thumbnail_px * 2, thumbnail_px * 2))
        image.load()
        return _upright(_normalise(image, for_jpeg=False), transposes)


def make_thumbnail(
    data: bytes, *, thumbnail_px: int, max_pixels: int = MediaLimits().max_pixels
) -> tuple[bytes, str]:
    """Only the thumbnail of an image (first frame), fast for JPEG; returns
    (bytes, content type). Raises as ``process_image``."""
    content_type = _check_type(data)
    try:
        frame = _draft_thumbnail_source(data, thumbnail_px, max_pixels)
    except OmniNudgeError:
        raise
    except Exception:
        # Let the full decoder classify the failure (bomb, corrupt, ...).
        _decode_or_map(data, content_type, max_pixels)
        raise
    return _encode_thumbnail(_clean(frame), thumbnail_px)


class PillowImageProcessor:
    """Implements ``omninudge_core.ports.ImageProcessor`` with Pillow.

    The CPU work runs in ``executor`` (e.g. a ``ProcessPoolExecutor`` for a busy
    server) or, when None, in the default thread pool via ``asyncio.to_thread``;
    Pillow releases the GIL while decoding and encoding.
    """

    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor

    async def process(self, data: bytes, *, max_pixels: int, thumbnail_px: int) -> ProcessedImage:
        """See ``process_image``."""
        call = functools.partial(
            process_image, data, max_pixels=max_pixels, thumbnail_px=thumbnail_px
        )
        return await self._run(call)

    async def thumbnail(
        self, data: bytes, *, thumbnail_px: int, max_pixels: int = MediaLimits().max_pixels
    ) -> tuple[bytes, str]:
        """See ``make_thumbnail``."""
        call = functools.partial(
            make_thumbnail, data, thumbnail_px=thumbnail_px, max_pixels=max_pixels
        )
        return await self._run(call)

    async def _run(self, call: functools.partial[_T]) -> _T:
        if self._executor is None:
            return await asyncio.to_thread(call)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)
