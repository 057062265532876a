"""S3BlobStore beyond the shared contract, against a real S3 service (SeaweedFS by
default, see tests/services_s3.py), with real HTTP for the presigned URLs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from omninudge_adapters.s3 import PART_SIZE, S3BlobStore, open_s3_blob_store
from omninudge_core.errors import InvalidFrame, NotFound, Unavailable
from tests.services import spare_port
from tests.services_s3 import S3Settings

MiB = 1024 * 1024


def fresh_key(kind: str = "images") -> str:
    return f"{kind}/u{uuid.uuid4().hex[:8]}/1700000000000_{uuid.uuid4().hex}.jpg"


@pytest.fixture
async def store(s3_settings: S3Settings) -> AsyncIterator[S3BlobStore]:
    async with open_s3_blob_store(
        bucket=s3_settings.bucket,
        endpoint_url=s3_settings.endpoint_url,
        region=s3_settings.region,
        access_key_id=s3_settings.access_key_id,
        secret_access_key=s3_settings.secret_access_key,
    ) as opened:
        yield opened


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def pending_uploads(settings: S3Settings, key: str) -> list[dict[str, Any]]:
    client: Any = settings.boto3_client()
    answer = client.list_multipart_uploads(Bucket=settings.bucket, Prefix=key)
    return list(answer.get("Uploads", []))


def etag(settings: S3Settings, key: str) -> str:
    client: Any = settings.boto3_client()
    return str(client.head_object(Bucket=settings.bucket, Key=key)["ETag"])


# --- presigned URLs, over real HTTP ------------------------------------------------------------


async def test_a_presigned_url_serves_the_bytes_with_their_type(
    store: S3BlobStore, http: httpx.AsyncClient
) -> None:
    key = fresh_key()
    await store.put(key, b"picture", content_type="image/jpeg")
    signed = await store.signed_url(key, expires_in_s=60)
    answer = await http.get(signed.url)
    assert answer.status_code == 200
    assert answer.content == b"picture"
    assert answer.headers["content-type"] == "image/jpeg"
    assert f"exp={int(signed.expires_at.timestamp())}" in signed.url


async def test_an_expired_presigned_url_is_refused_with_403(
    store: S3BlobStore, http: httpx.AsyncClient
) -> None:
    key = fresh_key()
    await store.put(key, b"picture", content_type="image/jpeg")
    signed = await store.signed_url(key, expires_in_s=1)
    assert (await http.get(signed.url)).status_code == 200
    await asyncio.sleep(2.2)
    assert (await http.get(signed.url)).status_code == 403


async def test_a_tampered_presigned_url_is_refused_with_403(
    store: S3BlobStore, http: httpx.AsyncClient
) -> None:
    key, other = fresh_key(), fresh_key()
    await store.put(key, b"mine", content_type="image/jpeg")
    await store.put(other, b"yours", content_type="image/jpeg")
    url = (await store.signed_url(key, expires_in_s=600)).url
    last = url[-1]
    tampered = {
        "signature": url[:-1] + ("0" if last != "0" else "1"),
        "key": url.replace(key, other),
        "expiry": url.replace("X-Amz-Expires=600", "X-Amz-Expires=6000"),
    }
    exp = url.split("exp=", 1)[1].split("&", 1)[0]
    tampered["exp"] = url.replace(f"exp={exp}", f"exp={int(exp) + 3600}")
    for what, bad in tampered.items():
        assert bad != url, what
        answer = await http.get(bad)
        assert answer.status_code == 403, what
        assert b"yours" not in answer.content


# --- multipart uploads -------------------------------------------------------------------------


async def test_a_12_mb_stream_goes_up_in_parts_and_round_trips(
    store: S3BlobStore, s3_settings: S3Settings
) -> None:
    key = fresh_key("videos")
    body = os.urandom(12 * MiB)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 700_000):  # chunk sizes unrelated to the part size
            yield body[start : start + 700_000]

    assert await store.put(key, chunks(), content_type="video/mp4") == len(body)
    stored = await store.get(key)
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(body).hexdigest()
    assert etag(s3_settings, key).strip('"').endswith("-2")  # a 2-part multipart object
    assert pending_uploads(s3_settings, key) == []


async def test_large_bytes_go_up_in_parts_too(store: S3BlobStore, s3_settings: S3Settings) -> None:
    key = fresh_key("videos")
    body = os.urandom(PART_SIZE + 1)
    assert await store.put(key, body, content_type="video/mp4") == len(body)
    assert await store.get(key) == body
    assert etag(s3_settings, key).strip('"').endswith("-2")


async def test_a_stream_failing_after_a_part_leaves_no_object_and_no_pending_upload(
    store: S3BlobStore, s3_settings: S3Settings
) -> None:
    key = fresh_key("videos")

    async def failing() -> AsyncIterator[bytes]:
        for _ in range(20):  # 20 MiB: two whole parts are uploaded before the failure
            yield b"v" * MiB
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put(key, failing(), content_type="video/mp4")
    assert await store.exists(key) is False
    assert pending_uploads(s3_settings, key) == []


async def test_a_cancelled_multipart_upload_is_aborted(
    store: S3BlobStore, s3_settings: S3Settings
) -> None:
    key = fresh_key("videos")
    stalled = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b"v" * MiB
        stalled.set()
        await asyncio.sleep(60)
        yield b"never"

    task = asyncio.create_task(store.put(key, stalling(), content_type="video/mp4"))
    await stalled.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.exists(key) is False
    assert pending_uploads(s3_settings, key) == []


# --- errors ------------------------------------------------------------------------------------


async def test_missing_objects_are_not_found_and_delete_is_idempotent(store: S3BlobStore) -> None:
    key = fresh_key()
    with pytest.raises(NotFound):
        await store.get(key)
    assert await store.exists(key) is False
    await store.delete(key)
    await store.put(key, b"x", content_type="image/jpeg")
    await store.delete(key)
    await store.delete(key)
    assert await store.exists(key) is False


async def test_keys_outside_the_scheme_are_refused(store: S3BlobStore) -> None:
    with pytest.raises(InvalidFrame):
        await store.put("../escape.jpg", b"x", content_type="image/jpeg")
    assert await store.exists("../escape.jpg") is False


async def test_an_unreachable_endpoint_is_unavailable() -> None:
    async with open_s3_blob_store(
        bucket="omninudge-media",
        endpoint_url=f"http://127.0.0.1:{spare_port()}",
        region="us-east-1",
        access_key_id="nobody",
        secret_access_key="nothing-at-all",
        connect_timeout_s=1,
    ) as store:
        key = fresh_key()
        with pytest.raises(Unavailable) as raised:
            await store.get(key)
        assert raised.value.__cause__ is not None
        with pytest.raises(Unavailable):
            await store.put(key, b"x", content_type="image/jpeg")
        with pytest.raises(Unavailable):
            await store.exists(key)


async def test_a_missing_bucket_or_bad_credentials_are_unavailable(
    s3_settings: S3Settings,
) -> None:
    async with open_s3_blob_store(
        bucket="omninudge-no-such-bucket",
        endpoint_url=s3_settings.endpoint_url,
        region=s3_settings.region,
        access_key_id=s3_settings.access_key_id,
        secret_access_key=s3_settings.secret_access_key,
    ) as store:
        with pytest.raises(Unavailable):
            await store.put(fresh_key(), b"x", content_type="image/jpeg")
        with pytest.raises(Unavailable):
            await store.get(fresh_key())
    async with open_s3_blob_store(
        bucket=s3_settings.bucket,
        endpoint_url=s3_settings.endpoint_url,
        region=s3_settings.region,
        access_key_id=s3_settings.access_key_id,
        secret_access_key="not-the-secret-at-all",
    ) as store:
        with pytest.raises(Unavailable):
            await store.put(fresh_key(), b"x", content_type="image/jpeg")


def test_parts_smaller_than_s3_allows_are_refused() -> None:
    with pytest.raises(ValueError):
        S3BlobStore(object(), "bucket", part_size=MiB)
