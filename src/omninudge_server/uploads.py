"""Streaming ``multipart/form-data`` uploads into a temporary file.

``spooled_upload(request, ...)`` parses the request body as it arrives (python-multipart's
push parser), keeps only the ``file`` part and writes it to a temporary file, holding at
most one write buffer (1 MiB) in memory. It stops reading, and the request is answered
at once, as soon as the upload cannot succeed:

- 415 when the first bytes (``policies.media.SNIFF_BYTES``) are not an accepted type;
- 413 when the bytes pass the limit for the sniffed kind (or, before the kind is known,
  the largest limit), or when ``Content-Length`` already says so.

The client's part ``Content-Type`` and file name are never looked at (API.md "Media").
The temporary file is deleted when the ``async with`` block ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import attrs
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from omninudge_core.errors import InvalidFrame, PayloadTooLarge, UnsupportedMediaType
from omninudge_core.policies.media import SNIFF_BYTES, MediaLimits, Sniffed, check_size, sniff

__all__ = ["FILE_FIELD", "SpooledUpload", "check_declared_length", "spooled_upload"]

FILE_FIELD = "file"
WRITE_BUFFER_BYTES = 1024 * 1024
# Boundaries and part headers around the file; other (ignored) fields get as much.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


@attrs.frozen
class SpooledUpload:
    """The ``file`` part on disk: ``head`` is its first bytes, ``sniffed`` its type."""

    path: Path
    size: int
    head: bytes
    sniffed: Sniffed


def _bad_multipart(message: str) -> InvalidFrame:
    return InvalidFrame(message, code="invalid_multipart", field=FILE_FIELD)


def _classify(head: bytes) -> Sniffed:
    sniffed = sniff(head)
    if sniffed is None:
        raise UnsupportedMediaType("only JPEG, PNG, GIF, WebP, MP4 and WebM are accepted")
    return sniffed


class _FilePart:
    """python-multipart callbacks that pick the ``file`` part's bytes out of the stream."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []  # file bytes parsed from the current chunk
        self.file_parts = 0
        self.file_complete = False
        self.other_bytes = 0
        self.ended = False
        self._in_file = False
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]
        self.other_bytes += end - start

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        self.other_bytes += end - start

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") == FILE_FIELD.encode():
            self.file_parts += 1
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.pending.append(data[start:end])
        else:
            self.other_bytes += end - start

    def _part_end(self) -> None:
        if self._in_file:
            self.file_complete = True
        self._in_file = False

    def _end(self) -> None:
        self.ended = True


def _boundary(request: Request) -> bytes:
    mime, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise _bad_multipart("the body must be multipart/form-data with a `file` part")
    return boundary


def check_declared_length(request: Request, limits: MediaLimits) -> None:
    """Raises PayloadTooLarge when ``Content-Length`` announces more than any upload
    may be (with room for the multipart framing)."""
    declared = request.headers.get("content-length")
    limit = limits.max_upload_bytes
    overhead = 2 * MULTIPART_OVERHEAD_BYTES
    if declared is not None and declared.isdigit() and int(declared) > limit + overhead:
        raise PayloadTooLarge(f"uploads are at most {limit} bytes", field="file", limit=limit)


class _Spool:
    """The temporary file and the running checks on what has been written to it."""

    def __init__(self, file: BinaryIO, limits: MediaLimits) -> None:
        self.file = file
        self.limits = limits
        self.size = 0
        self.head = bytearray()
        self.sniffed: Sniffed | None = None
        self.buffer = bytearray()

    def take(self, data: bytes) -> None:
        """Account for ``data``; raises as soon as the upload cannot succeed."""
        self.size += len(data)
        if self.sniffed is None and len(self.head) < SNIFF_BYTES:
            self.head += data[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self.sniffed = _classify(bytes(self.head))
        limit = (
            self.limits.max_upload_bytes
            if self.sniffed is None
            else self.limits.max_bytes(self.sniffed.kind)
        )
        if self.size > limit:
            kind = "upload" if self.sniffed is None else self.sniffed.kind.value
            raise PayloadTooLarge(f"{kind} larger than {limit} bytes", field="file", limit=limit)
        self.buffer += data

    async def flush(self, *, force: bool = False) -> None:
        if self.buffer and (force or len(self.buffer) >= WRITE_BUFFER_BYTES):
            data = bytes(self.buffer)
            self.buffer.clear()
            await asyncio.to_thread(self.file.write, data)

    def finish(self) -> Sniffed:
        if self.size == 0:
            raise InvalidFrame("the file is empty", code="empty_file", field=FILE_FIELD)
        sniffed = self.sniffed or _classify(bytes(self.head))
        check_size(sniffed.kind, self.size, self.limits)
        return sniffed


@contextlib.asynccontextmanager
async def spooled_upload(
    request: Request, *, limits: MediaLimits, directory: Path
) -> AsyncIterator[SpooledUpload]:
    """Stream the request's ``file`` part to a temporary file under ``directory``.

    Raises (having stopped reading): InvalidFrame (``invalid_multipart``,
    ``missing_field``, ``invalid_field`` for a second file, ``empty_file``,
    ``upload_interrupted``), UnsupportedMediaType, PayloadTooLarge.
    """
    boundary = _boundary(request)
    check_declared_length(request, limits)
    part = _FilePart()
    parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
    handle, path = await asyncio.to_thread(_open_spool, directory)
    spool = _Spool(handle, limits)
    try:
        try:
            async for chunk in request.stream():
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:
                    raise _bad_multipart(f"the multipart body is malformed: {exc}") from exc
                if part.file_parts > 1:
                    raise InvalidFrame(
                        "send exactly one `file` part", code="invalid_field", field=FILE_FIELD
                    )
                if part.other_bytes > MULTIPART_OVERHEAD_BYTES:
                    raise PayloadTooLarge(
                        "too much besides the file", field="body", limit=MULTIPART_OVERHEAD_BYTES
                    )
                for data in part.pending:
                    spool.take(data)
                part.pending.clear()
                await spool.flush()
        except ClientDisconnect as exc:
            raise InvalidFrame(
                "the upload was interrupted", code="upload_interrupted", field=FILE_FIELD
            ) from exc
        if part.file_parts == 0:
            raise InvalidFrame("a `file` part is required", code="missing_field", field=FILE_FIELD)
        if not (part.ended and part.file_complete):
            raise _bad_multipart("the multipart body ends before its closing boundary")
        sniffed = spool.finish()
        await spool.flush(force=True)
        await asyncio.to_thread(handle.close)
        yield SpooledUpload(path=path, size=spool.size, head=bytes(spool.head), sniffed=sniffed)
    finally:
        await asyncio.shield(asyncio.to_thread(_discard, handle, path))


def _open_spool(directory: Path) -> tuple[BinaryIO, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=directory, prefix="upload-")
    return open(descriptor, "wb"), Path(name)  # closed by _discard


def _discard(handle: BinaryIO, path: Path) -> None:
    handle.close()
    path.unlink(missing_ok=True)
