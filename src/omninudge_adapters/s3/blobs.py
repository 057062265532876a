"""Media blobs in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, ...), on aioboto3.

One client per store, created by ``open_s3_blob_store`` (call it from the server's
lifespan): path-style addressing (works with any endpoint, no wildcard DNS) and
Signature V4.

``put`` streams: bodies up to one part (8 MiB) go in one ``PutObject``; larger ones
in a multipart upload of 8 MiB parts, holding one part in memory. If anything fails
(the caller's stream raises, S3 errs, the task is cancelled) the multipart upload is
aborted, so no parts are left behind and no object appears: all or nothing.

``signed_url`` is a presigned ``GetObject`` URL that S3 serves itself. It also carries
``exp`` (Unix seconds), covered by the signature like every query parameter, so a
client reads the expiry the same way as for local-directory URLs.

Errors: ``NoSuchKey``/404 become NotFound; every other botocore error (connection
refused, timeouts, 5xx, access denied, no such bucket) becomes Unavailable, chained
with ``from``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from omninudge_core.errors import InvalidFrame, NotFound, OmniNudgeError, Unavailable
from omninudge_core.policies.keys import is_valid_key
from omninudge_core.ports import SignedUrl

__all__ = ["PART_SIZE", "S3BlobStore", "open_s3_blob_store"]

PART_SIZE = 8 * 1024 * 1024
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_EXP_CONTEXT = "omninudge_exp"


def _error_code(exc: ClientError) -> str:
    error: Mapping[str, Any] = exc.response.get("Error", {})
    return str(error.get("Code", ""))


def _mapped(exc: Exception, what: str) -> OmniNudgeError:
    """Our error for a botocore/aiohttp failure while doing ``what``."""
    if isinstance(exc, ClientError) and _error_code(exc) in _NOT_FOUND_CODES:
        return NotFound(f"no blob {what}")
    if isinstance(exc, ClientError):
        return Unavailable(f"S3 refused {what}: {_error_code(exc)}")
    return Unavailable(f"S3 unreachable during {what}: {type(exc).__name__}")


# Driver failures we map; anything else (our own errors, the caller's stream raising)
# passes through unchanged.
_DRIVER_ERRORS = (BotoCoreError, ClientError, OSError, TimeoutError)


def _take_exp(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if "OmniNudgeExp" in params:
        context[_EXP_CONTEXT] = params.pop("OmniNudgeExp")


def _add_exp(request: Any, **_: Any) -> None:
    # Runs before signing, so the parameter is part of the signed canonical query.
    exp = request.context.get(_EXP_CONTEXT)
    if exp is not None:
        request.url += ("&" if "?" in request.url else "?") + f"exp={int(exp)}"


class S3BlobStore:
    """Implements ``omninudge_core.ports.BlobStore`` on an S3 bucket.

    ``client`` is an aiobotocore S3 client (see ``open_s3_blob_store``). ``put``
    raises InvalidFrame (``invalid_key``) for a key outside the key scheme.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        part_size: int = PART_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 parts must be at least 5 MiB")
        self._client = client
        self._bucket = bucket
        self._part_size = part_size
        self._clock = clock
        client.meta.events.register("provide-client-params.s3.GetObject", _take_exp)
        client.meta.events.register("before-sign.s3.GetObject", _add_exp)

    @property
    def bucket(self) -> str:
        return self._bucket

    # --- writes --------------------------------------------------------------------------

    async def put(self, key: str, data: bytes | AsyncIterable[bytes], *, content_type: str) -> int:
        if not is_valid_key(key):
            raise InvalidFrame(f"not a valid blob key: {key!r}", code="invalid_key")
        chunks = _bytes_chunks(data) if isinstance(data, bytes | bytearray | memoryview) else data
        parts = _parts(chunks, self._part_size)
        first = await anext(parts, b"")
        second = await anext(parts, None)
        if second is None:
            await self._put_object(key, first, content_type)
            return len(first)
        return await self._put_multipart(key, content_type, first, second, parts)

    async def _put_object(self, key: str, body: bytes, content_type: str) -> None:
        try:
            await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=body, ContentType=content_type
            )
        except _DRIVER_ERRORS as exc:
            raise _mapped(exc, f"put {key!r}") from exc

    async def _put_multipart(
        self,
        key: str,
        content_type: str,
        first: bytes,
        second: bytes,
        rest: AsyncIterator[bytes],
    ) -> int:
        try:
            created = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType=content_type
            )
        except _DRIVER_ERRORS as exc:
            raise _mapped(exc, f"put {key!r}") from exc
        upload_id = created["UploadId"]
        completed: list[dict[str, Any]] = []
        size = 0
        try:
            for body in (first, second):
                completed.append(await self._upload_part(key, upload_id, len(completed) + 1, body))
                size += len(body)
            # The caller's stream may raise here: that error passes through unchanged.
            async for body in rest:
                completed.append(await self._upload_part(key, upload_id, len(completed) + 1, body))
                size += len(body)
            await self._complete(key, upload_id, completed)
        except BaseException:
            # No orphan parts: abort on any failure, cancellation included.
            await asyncio.shield(self._abort(key, upload_id))
            raise
        return size

    async def _upload_part(
        self, key: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        try:
            answer = await self._client.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        except _DRIVER_ERRORS as exc:
            raise _mapped(exc, f"put {key!r}") from exc
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _complete(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        try:
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except _DRIVER_ERRORS as exc:
            raise _mapped(exc, f"put {key!r}") from exc

    async def _abort(self, key: str, upload_id: str) -> None:
        # The original failure matters more than a failed abort; a bucket lifecycle rule
        # (AbortIncompleteMultipartUpload) cleans up what this could not.
        with contextlib.suppress(*_DRIVER_ERRORS):
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id
            )

    async def delete(self, key: str) -> None:
        if not is_valid_key(key):
            return
        try:
            await self._client.delete_object(Bucket=self._bucket, Key=key)
        except _DRIVER_ERRORS as exc:
            mapped = _mapped(exc, f"delete {key!r}")
            if not isinstance(mapped, NotFound):
                raise mapped from exc

    # --- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        if not is_valid_key(key):
            raise NotFound(f"no blob {key!r}")
        try:
            answer = await self._client.get_object(Bucket=self._bucket, Key=key)
            async with answer["Body"] as body:
                data: bytes = await body.read()
        except _DRIVER_ERRORS as exc:
            raise _mapped(exc, repr(key)) from exc
        return data

    async def exists(self, key: str) -> bool:
        if not is_valid_key(key):
            return False
        try:
            await self._client.head_object(Bucket=self._bucket, Key=key)
        except _DRIVER_ERRORS as exc:
            mapped = _mapped(exc, repr(key))
            if isinstance(mapped, NotFound):
                return False
            raise mapped from exc
        return True

    # --- signed URLs ---------------------------------------------------------------------

    async def signed_url(self, key: str, *, expires_in_s: int) -> SignedUrl:
        exp = math.ceil(self._clock() + expires_in_s)
        try:
            url: str = await self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": key, "OmniNudgeExp": exp},
                ExpiresIn=expires_in_s,
            )
        except _DRIVER_ERRORS as exc:
            raise _mapped(exc, f"sign {key!r}") from exc
        return SignedUrl(url=url, expires_at=datetime.fromtimestamp(exp, UTC))


async def _bytes_chunks(data: bytes | bytearray | memoryview) -> AsyncIterator[bytes]:
    yield bytes(data)


async def _parts(chunks: AsyncIterable[bytes], part_size: int) -> AsyncIterator[bytes]:
    """Re-cut a stream into parts of exactly ``part_size`` (the last may be shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= part_size:
            yield bytes(buffer[:part_size])
            del buffer[:part_size]
    if buffer:
        yield bytes(buffer)


@asynccontextmanager
async def open_s3_blob_store(
    *,
    bucket: str,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    part_size: int = PART_SIZE,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
) -> AsyncIterator[S3BlobStore]:
    """An ``S3BlobStore`` with its client, closed on exit.

    Credentials left None come from the usual AWS chain (environment, config files,
    instance role). The bucket must exist.
    """
    session = aioboto3.Session()
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": 3, "mode": "standard"},
        # Only compute/validate checksums when S3 requires them: S3-compatible servers
        # differ in their support of the newer flexible checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    async with session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    ) as client:
        yield S3BlobStore(client, bucket, part_size=part_size)
