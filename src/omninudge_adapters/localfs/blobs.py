"""Media blobs as files under one directory: the embedded default's blob store.

A key (``omninudge_core.policies.keys``) maps to ``root/<key>``; only keys of the
documented shapes are accepted, so no key can leave ``root`` (no ``..``, no absolute
path), and the resolved path is checked again before any write.

Writes are atomic: bytes go to a temporary file in the destination directory, are
fsynced, then ``os.replace``d over the final name (and the directory is fsynced), so
a reader sees the old blob or the whole new one, and a stream that fails midway
leaves nothing behind. A streamed put holds at most one buffer (1 MiB) in memory.

Signed URLs point at the server's ``GET /media/{key}`` route, in the same shape and
with the same HMAC as ``MemoryBlobStore``: ``{base_url}/media/{key}?exp=&sig=``;
``verify`` checks one in constant time and ``open_stream`` serves the bytes in chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from omninudge_adapters.memory.blobs import media_signature, verify_media_signature
from omninudge_core.errors import InvalidFrame, NotFound, Unavailable
from omninudge_core.policies.keys import is_valid_key
from omninudge_core.ports import SignedUrl

__all__ = ["BlobStream", "LocalFsBlobStore", "content_type_for_key"]

WRITE_BUFFER_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024

# Keys end in the extension chosen from the sniffed type (policies.media), so the
# extension is enough to serve the right Content-Type.
_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "webm": "video/webm",
}


def content_type_for_key(key: str) -> str:
    """The media type a key's extension stands for (``application/octet-stream`` if none)."""
    return _CONTENT_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")


class BlobStream:
    """An open blob: ``size``, ``content_type``, and its bytes by ``async for``.

    The file is opened by ``LocalFsBlobStore.open_stream`` (so a later delete or
    replace does not change what is served) and closed when the iteration ends;
    call ``aclose`` if it never runs.
    """

    def __init__(self, file: BinaryIO, size: int, content_type: str, chunk_size: int) -> None:
        self._file = file
        self.size = size
        self.content_type = content_type
        self._chunk_size = chunk_size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(self._file.read, self._chunk_size):
                yield chunk
        finally:
            self._file.close()

    async def aclose(self) -> None:
        self._file.close()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalFsBlobStore:
    """Implements ``omninudge_core.ports.BlobStore`` on a local directory.

    ``secret`` (at least 16 bytes) signs URLs; ``base_url`` is the server's external
    URL (``OMNINUDGE_PUBLIC_URL``). ``put`` raises InvalidFrame (``invalid_key``) for a
    key outside the key scheme; reads of such a key find nothing. File system errors
    (disk full, permissions) become Unavailable.
    """

    def __init__(
        self,
        root: Path | str,
        secret: bytes,
        base_url: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self._root = Path(root).resolve()
        self._secret = secret
        self._base_url = base_url.rstrip("/")
        self._clock = clock

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path | None:
        """The file of ``key``, or None when the key is not one we could have stored."""
        if not is_valid_key(key):
            return None
        path = (self._root / key).resolve()
        # Belt and braces: the key regex already excludes "..", "/" prefixes and NULs.
        return path if path.is_relative_to(self._root) else None

    # --- writes --------------------------------------------------------------------------

    async def put(self, key: str, data: bytes | AsyncIterable[bytes], *, content_type: str) -> int:
        path = self._path(key)
        if path is None:
            raise InvalidFrame(f"not a valid blob key: {key!r}", code="invalid_key")
        file, temp = await asyncio.to_thread(self._open_temp, path)
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                size = len(data)
                await asyncio.to_thread(file.write, data)
            else:
                size = await self._write_stream(file, data)
            await asyncio.to_thread(self._commit, file, temp, path)
        except BaseException:
            # All or nothing, also on cancellation: the temporary file goes away.
            await asyncio.shield(asyncio.to_thread(self._discard, file, temp))
            raise
        return size

    async def _write_stream(self, file: BinaryIO, data: AsyncIterable[bytes]) -> int:
        size = 0
        buffer = bytearray()
        async for chunk in data:
            buffer += chunk
            size += len(chunk)
            if len(buffer) >= WRITE_BUFFER_BYTES:
                await asyncio.to_thread(file.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(file.write, bytes(buffer))
        return size

    def _open_temp(self, path: Path) -> tuple[BinaryIO, Path]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Same directory as the target: os.replace is then a rename on one file system.
            temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
            return temp.open("xb"), temp
        except OSError as exc:
            raise Unavailable(f"cannot write under {self._root}: {exc}") from exc

    def _commit(self, file: BinaryIO, temp: Path, path: Path) -> None:
        try:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(temp, path)
            _fsync_directory(path.parent)
        except OSError as exc:
            raise Unavailable(f"cannot write {path.name}: {exc}") from exc

    @staticmethod
    def _discard(file: BinaryIO, temp: Path) -> None:
        file.close()
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()

    async def delete(self, key: str) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot delete {key!r}: {exc}") from exc

    # --- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        if path is None:
            raise NotFound(f"no blob {key!r}")
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"no blob {key!r}") from exc
        except OSError as exc:
            raise Unavailable(f"cannot read {key!r}: {exc}") from exc

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        return path is not None and await asyncio.to_thread(path.is_file)

    async def open_stream(self, key: str, *, chunk_size: int = READ_CHUNK_BYTES) -> BlobStream:
        """The blob's bytes to serve in chunks. Raises NotFound."""
        path = self._path(key)
        if path is None:
            raise NotFound(f"no blob {key!r}")

        def open_file() -> tuple[BinaryIO, int]:
            file = path.open("rb")
            return file, os.fstat(file.fileno()).st_size

        try:
            file, size = await asyncio.to_thread(open_file)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"no blob {key!r}") from exc
        except OSError as exc:
            raise Unavailable(f"cannot read {key!r}: {exc}") from exc
        return BlobStream(file, size, content_type_for_key(key), chunk_size)

    # --- signed URLs ---------------------------------------------------------------------

    async def signed_url(self, key: str, *, expires_in_s: int) -> SignedUrl:
        # Round up so a URL is valid for at least expires_in_s seconds.
        exp = math.ceil(self._clock() + expires_in_s)
        sig = media_signature(self._secret, key, exp)
        url = f"{self._base_url}/media/{quote(key, safe='/')}?exp={exp}&sig={sig}"
        return SignedUrl(url=url, expires_at=datetime.fromtimestamp(exp, UTC))

    def verify(self, key: str, exp: int | str, sig: str) -> bool:
        """True when ``sig`` is ours for ``key`` and ``exp`` and it has not expired
        (constant-time comparison)."""
        return verify_media_signature(self._secret, key, exp, sig, now=self._clock())
