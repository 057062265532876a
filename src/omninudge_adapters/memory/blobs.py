"""In-process blob store for the single-process embedded mode and for tests of code
that needs media without a disk.

Blobs are bytes in a dict. Signed URLs point at the server's ``GET /media/{key}``
route: ``{base_url}/media/{key}?exp={unix seconds}&sig={hex HMAC-SHA256}``, signed over
the key and the expiry with a secret given at construction; ``verify`` checks them in
constant time. ``sign_media_url``/``verify_media_signature`` are shared with any
store that serves its own URLs the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import AsyncIterable, Callable
from datetime import UTC, datetime
from urllib.parse import quote

from omninudge_core.errors import InvalidFrame, NotFound
from omninudge_core.policies.keys import is_valid_key
from omninudge_core.ports import SignedUrl

__all__ = ["MemoryBlobStore", "media_signature", "verify_media_signature"]


def media_signature(secret: bytes, key: str, exp: int) -> str:
    """Hex HMAC-SHA256 over ``key`` and ``exp`` (newline-separated: a key holds none)."""
    return hmac.new(secret, f"{key}\n{exp}".encode(), hashlib.sha256).hexdigest()


def verify_media_signature(
    secret: bytes, key: str, exp: int | str, sig: str, *, now: float
) -> bool:
    """True when ``sig`` signs ``key`` and ``exp`` and ``now`` is before ``exp``."""
    try:
        expiry = int(exp)
    except (TypeError, ValueError):
        return False
    expected = media_signature(secret, key, expiry)
    valid = hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))
    return valid and now < expiry


class MemoryBlobStore:
    """Implements ``omninudge_core.ports.BlobStore`` in process memory.

    Keys must follow ``omninudge_core.policies.keys``; ``put`` raises InvalidFrame
    (``invalid_key``) otherwise, and reads of such a key find nothing.
    """

    def __init__(
        self,
        *,
        secret: bytes,
        base_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self._secret = secret
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self._lock = threading.Lock()
        self._blobs: dict[str, tuple[bytes, str]] = {}

    async def put(self, key: str, data: bytes | AsyncIterable[bytes], *, content_type: str) -> int:
        if not is_valid_key(key):
            raise InvalidFrame(f"not a valid blob key: {key!r}", code="invalid_key")
        if isinstance(data, bytes | bytearray | memoryview):
            blob = bytes(data)
        else:
            # All or nothing: a stream that fails midway stores nothing.
            chunks = [bytes(chunk) async for chunk in data]
            blob = b"".join(chunks)
        with self._lock:
            self._blobs[key] = (blob, content_type)
        return len(blob)

    async def get(self, key: str) -> bytes:
        with self._lock:
            entry = self._blobs.get(key)
        if entry is None:
            raise NotFound(f"no blob {key!r}")
        return entry[0]

    def content_type(self, key: str) -> str:
        """The content type given at ``put``. Raises NotFound."""
        with self._lock:
            entry = self._blobs.get(key)
        if entry is None:
            raise NotFound(f"no blob {key!r}")
        return entry[1]

    async def delete(self, key: str) -> None:
        with self._lock:
            self._blobs.pop(key, None)

    async def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._blobs

    async def signed_url(self, key: str, *, expires_in_s: int) -> SignedUrl:
        # Round up so a URL is valid for at least expires_in_s seconds.
        exp = math.ceil(self._clock() + expires_in_s)
        sig = media_signature(self._secret, key, exp)
        url = f"{self._base_url}/media/{quote(key, safe='/')}?exp={exp}&sig={sig}"
        return SignedUrl(url=url, expires_at=datetime.fromtimestamp(exp, UTC))

    def verify(self, key: str, exp: int | str, sig: str) -> bool:
        """True when the signature is ours for ``key`` and ``exp`` and it has not expired."""
        return verify_media_signature(self._secret, key, exp, sig, now=self._clock())
