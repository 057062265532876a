"""Media: the upload pipeline, signed URLs and the media back ends (API.md "Media").

``open_media(settings, secret)`` builds the back ends (called by ``wiring.open_services``):
the blob store (``LocalFsBlobStore`` under ``<data-dir>/media`` by default, S3 when
``S3_BUCKET`` is set), ``PillowImageProcessor`` on a bounded thread pool, and the
``ffmpeg`` binary if there is one.

``store_upload`` turns a spooled upload (``uploads.spooled_upload``) into stored media:

1. an image is decoded with the pixel limit, auto-oriented, stripped of metadata and
   thumbnailed, off the event loop; a video's container is checked and, when ffmpeg
   exists, its first frame becomes the poster;
2. the blob, the thumbnail and the metadata row are written, in that order. NO
   HALF-WRITES: if any step fails (or the request is cancelled), whatever was written
   is deleted again, so a failed upload leaves no blob and no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from omninudge_core import codec
from omninudge_core.errors import Unavailable
from omninudge_core.models import Media, MediaKind
from omninudge_core.policies.keys import media_key, thumbnail_key
from omninudge_core.policies.media import MediaLimits
from omninudge_core.ports import BlobStore, ImageProcessor
from omninudge_server.config import Settings
from omninudge_server.uploads import SpooledUpload

if TYPE_CHECKING:
    from omninudge_adapters.localfs import LocalFsBlobStore
    from omninudge_server.wiring import Services

__all__ = [
    "THUMBNAIL_FAILED",
    "THUMBNAIL_NO_FFMPEG",
    "THUMBNAIL_READY",
    "MediaBackends",
    "StoredMedia",
    "backends_of",
    "media_limits",
    "media_secret",
    "media_view",
    "open_media",
    "store_upload",
    "thumbnail_status",
]

logger = logging.getLogger("omninudge.media")

THUMBNAIL_READY = "ready"
THUMBNAIL_NO_FFMPEG = "unavailable_no_ffmpeg"
THUMBNAIL_FAILED = "failed"  # ffmpeg exists but could not decode a first frame

READ_CHUNK_BYTES = 1024 * 1024
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


@attrs.define
class MediaBackends:
    """What the media routes use. ``local`` is the blob store when this server serves
    the blobs itself (``GET /media/...``), None with S3."""

    blobs: BlobStore
    images: ImageProcessor
    ffmpeg: str | None
    local: LocalFsBlobStore | None = None


@attrs.frozen
class StoredMedia:
    media: Media
    thumbnail_status: str


def media_limits(settings: Settings) -> MediaLimits:
    return MediaLimits(
        max_image_bytes=settings.max_image_bytes,
        max_video_bytes=settings.max_video_bytes,
        max_pixels=settings.max_image_pixels,
    )


def media_secret(secret: str) -> bytes:
    """The key of local signed URLs, derived from the token secret, so every instance
    that shares the token secret also accepts each other's URLs."""
    return hmac.new(secret.encode(), b"omninudge/v1/media-url", hashlib.sha256).digest()


@contextlib.asynccontextmanager
async def open_media(settings: Settings, secret: str) -> AsyncIterator[MediaBackends]:
    """The media back ends chosen by ``settings``; closed on exit."""
    from omninudge_adapters.imaging import PillowImageProcessor

    # Bounded: at most media_workers images are decoded at once, whatever the load.
    executor = ThreadPoolExecutor(
        max_workers=settings.media_workers, thread_name_prefix="omninudge-media"
    )
    images = PillowImageProcessor(executor)
    ffmpeg = shutil.which("ffmpeg")
    try:
        if settings.s3_bucket is not None:
            from omninudge_adapters.s3 import open_s3_blob_store

            async with open_s3_blob_store(
                bucket=settings.s3_bucket,
                endpoint_url=settings.s3_endpoint_url,
                region=settings.s3_region,
                access_key_id=settings.aws_access_key_id,
                secret_access_key=settings.aws_secret_access_key,
            ) as s3:
                yield MediaBackends(blobs=s3, images=images, ffmpeg=ffmpeg)
        else:
            from omninudge_adapters.localfs import LocalFsBlobStore

            local = LocalFsBlobStore(
                settings.data_dir / "media", media_secret(secret), settings.public_url
            )
            yield MediaBackends(blobs=local, images=images, ffmpeg=ffmpeg, local=local)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def backends_of(services: Services) -> MediaBackends:
    """Raises Unavailable when the server was built without media."""
    if services.media is None:
        raise Unavailable("media storage is not configured", code="media_unavailable")
    return services.media


# --- the upload pipeline ------------------------------------------------------------------


@attrs.frozen
class _Prepared:
    """What to store for one upload: the body (bytes, or the spooled file) and thumbnail."""

    kind: MediaKind
    content_type: str
    extension: str
    body: bytes | Path
    size: int
    width: int | None
    height: int | None
    thumbnail: bytes | None
    thumbnail_content_type: str | None
    thumbnail_status: str


async def _prepare(
    backends: MediaBackends, limits: MediaLimits, upload: SpooledUpload
) -> _Prepared:
    sniffed = upload.sniffed
    if sniffed.kind is MediaKind.IMAGE:
        data = await asyncio.to_thread(upload.path.read_bytes)
        processed = await backends.images.process(
            data, max_pixels=limits.max_pixels, thumbnail_px=limits.thumbnail_px
        )
        return _Prepared(
            kind=MediaKind.IMAGE,
            content_type=processed.content_type,
            extension=_EXTENSIONS[processed.content_type],
            body=processed.data,
            size=len(processed.data),
            width=processed.width,
            height=processed.height,
            thumbnail=processed.thumbnail,
            thumbnail_content_type=processed.thumbnail_content_type,
            thumbnail_status=THUMBNAIL_READY,
        )
    from omninudge_adapters.imaging import probe_video

    probe = await probe_video(
        upload.head, path=upload.path, thumbnail_px=limits.thumbnail_px, ffmpeg=backends.ffmpeg
    )
    if probe.poster is not None:
        status = THUMBNAIL_READY
    else:
        status = THUMBNAIL_NO_FFMPEG if backends.ffmpeg is None else THUMBNAIL_FAILED
    return _Prepared(
        kind=MediaKind.VIDEO,
        content_type=probe.content_type,
        extension=probe.extension,
        body=upload.path,  # stored as uploaded, streamed from the spool file
        size=upload.size,
        width=None,
        height=None,
        thumbnail=probe.poster,
        thumbnail_content_type=probe.poster_content_type,
        thumbnail_status=status,
    )


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, READ_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


async def store_upload(services: Services, owner_id: str, upload: SpooledUpload) -> StoredMedia:
    """Process and store one upload; all or nothing.

    Raises UnsupportedMediaType, PayloadTooLarge (pixel limit, bombs),
    InvalidFrame(code="corrupt_media"), Unavailable (blob store or database down).
    """
    backends = backends_of(services)
    prepared = await _prepare(backends, media_limits(services.settings), upload)
    now = services.clock()
    media_id = services.new_id()
    key = media_key(
        prepared.kind,
        owner_id,
        int(now.timestamp() * 1000),
        secrets.token_urlsafe(9),
        prepared.extension,
    )
    thumb_key: str | None = None
    if prepared.thumbnail is not None and prepared.thumbnail_content_type is not None:
        thumb_key = thumbnail_key(media_id, _EXTENSIONS[prepared.thumbnail_content_type])
    media = Media(
        id=media_id,
        owner_id=owner_id,
        kind=prepared.kind,
        content_type=prepared.content_type,
        size=prepared.size,
        blob_key=key,
        created_at=now,
        width=prepared.width,
        height=prepared.height,
        thumbnail_key=thumb_key,
        thumbnail_content_type=prepared.thumbnail_content_type if thumb_key else None,
    )
    written: list[str] = []
    row_attempted = False
    try:
        # Each key is noted BEFORE its put: a put cancelled after it committed is undone too.
        written.append(key)
        body = prepared.body
        data = body if isinstance(body, bytes) else _file_chunks(body)
        await backends.blobs.put(key, data, content_type=prepared.content_type)
        if thumb_key is not None and prepared.thumbnail is not None:
            written.append(thumb_key)
            await backends.blobs.put(
                thumb_key,
                prepared.thumbnail,
                content_type=prepared.thumbnail_content_type or "image/jpeg",
            )
        row_attempted = True
        await services.storage.media.create(media)
    except BaseException:
        await asyncio.shield(_undo(services, backends, media_id, written, row_attempted))
        raise
    return StoredMedia(media, prepared.thumbnail_status)


async def _undo(
    services: Services,
    backends: MediaBackends,
    media_id: str,
    keys: list[str],
    row_attempted: bool,
) -> None:
    """Remove what a failed upload wrote. A failure here is logged with the key, for
    the operator: there is nobody left to answer."""
    if row_attempted:
        try:
            await services.storage.media.delete(media_id)
        except Exception:
            logger.exception("could not delete the media row %s of a failed upload", media_id)
    for key in keys:
        try:
            await backends.blobs.delete(key)
        except Exception:
            logger.exception("could not delete blob %s of a failed upload", key)


# --- views ----------------------------------------------------------------------------------


def thumbnail_status(services: Services, media: Media) -> str:
    if media.thumbnail_key is not None:
        return THUMBNAIL_READY
    if media.kind is MediaKind.VIDEO and backends_of(services).ffmpeg is None:
        return THUMBNAIL_NO_FFMPEG
    return THUMBNAIL_FAILED


async def media_view(services: Services, media: Media, *, status: str) -> dict[str, Any]:
    """The API answer for ``media``, with fresh signed URLs."""
    blobs = backends_of(services).blobs
    ttl = services.settings.media_url_ttl_s
    url = await blobs.signed_url(media.blob_key, expires_in_s=ttl)
    thumbnail_url: str | None = None
    if media.thumbnail_key is not None:
        thumbnail_url = (await blobs.signed_url(media.thumbnail_key, expires_in_s=ttl)).url
    return {
        "id": media.id,
        "owner_id": media.owner_id,
        "kind": media.kind.value,
        "content_type": media.content_type,
        "size": media.size,
        "width": media.width,
        "height": media.height,
        "url": url.url,
        "thumbnail_url": thumbnail_url,
        "thumbnail_content_type": media.thumbnail_content_type,
        "thumbnail_status": status,
        "expires_at": codec.unstructure(url.expires_at),
        "created_at": codec.unstructure(media.created_at),
    }
