"""Base64url without padding (RFC 4648 §5), strict: the encoding JWK and the v1
envelope use. Decoding accepts only the canonical form, so one byte string has
exactly one spelling (the signature covers the spelling)."""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["b64url_decode", "b64url_encode"]

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Base64url of ``data`` with the ``=`` padding removed."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode canonical unpadded base64url.

    Raises ValueError for padding, characters outside the URL-safe alphabet, an
    impossible length, or non-zero unused trailing bits.
    """
    if not isinstance(text, str) or _ALPHABET.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:  # pragma: no cover - the checks above exclude it
        raise ValueError("not unpadded base64url") from exc
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url (unused bits set)")
    return data
