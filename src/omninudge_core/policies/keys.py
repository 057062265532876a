"""Blob storage keys (API.md "Media").

    images/{user_id}/{timestamp}_{random}.{ext}
    images/thumbnails/{media_id}_thumb.{ext}
    videos/{user_id}/{timestamp}_{random}.{ext}

The shell supplies the timestamp (e.g. Unix milliseconds) and the random part. Every
part must match ``[A-Za-z0-9_-]+`` so that no key can escape its prefix (no ``/``, no
``..``) on a file system or in a URL, and ``thumbnails`` is reserved as a user id so
that a user's images can never land among the thumbnails.
"""

from __future__ import annotations

import re

from omninudge_core.errors import InvalidFrame
from omninudge_core.models import MediaKind

__all__ = [
    "image_key",
    "is_valid_key",
    "media_key",
    "thumbnail_key",
    "video_key",
]

_PART = re.compile(r"[A-Za-z0-9_-]{1,128}")
_RESERVED_USER_IDS = frozenset({"thumbnails"})

_THUMBNAIL_KEY = re.compile(r"images/thumbnails/[A-Za-z0-9_-]{1,128}_thumb\.[A-Za-z0-9_-]{1,128}")
_UPLOAD_KEY = re.compile(
    r"(?:images|videos)/([A-Za-z0-9_-]{1,128})/[0-9]{1,20}_[A-Za-z0-9_-]{1,128}"
    r"\.[A-Za-z0-9_-]{1,128}"
)


def _part(name: str, value: str) -> str:
    if not _PART.fullmatch(value):
        raise InvalidFrame(
            f"{name} may only contain A-Z, a-z, 0-9, '_' and '-'",
            code="invalid_field",
            field=name,
        )
    return value


def _user(user_id: str) -> str:
    _part("user_id", user_id)
    if user_id in _RESERVED_USER_IDS:
        raise InvalidFrame("user_id is reserved", code="invalid_field", field="user_id")
    return user_id


def _timestamp(timestamp: int) -> str:
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int)
        or not 0 <= timestamp < 10**20  # at most 20 digits, as is_valid_key accepts
    ):
        raise InvalidFrame(
            "timestamp must be an integer in 0..10**20", code="invalid_field", field="timestamp"
        )
    return str(timestamp)


def image_key(user_id: str, timestamp: int, random: str, ext: str) -> str:
    """``images/{user_id}/{timestamp}_{random}.{ext}``. Raises InvalidFrame for an unsafe part."""
    return (
        f"images/{_user(user_id)}/{_timestamp(timestamp)}_{_part('random', random)}"
        f".{_part('ext', ext)}"
    )


def video_key(user_id: str, timestamp: int, random: str, ext: str) -> str:
    """``videos/{user_id}/{timestamp}_{random}.{ext}``. Raises InvalidFrame for an unsafe part."""
    return (
        f"videos/{_user(user_id)}/{_timestamp(timestamp)}_{_part('random', random)}"
        f".{_part('ext', ext)}"
    )


def media_key(kind: MediaKind, user_id: str, timestamp: int, random: str, ext: str) -> str:
    """The image or video key for ``kind``. Raises InvalidFrame for an unsafe part."""
    if kind is MediaKind.VIDEO:
        return video_key(user_id, timestamp, random, ext)
    return image_key(user_id, timestamp, random, ext)


def thumbnail_key(media_id: str, ext: str) -> str:
    """``images/thumbnails/{media_id}_thumb.{ext}``. Raises InvalidFrame for an unsafe part."""
    return f"images/thumbnails/{_part('media_id', media_id)}_thumb.{_part('ext', ext)}"


def is_valid_key(key: str) -> bool:
    """True when ``key`` has one of the three shapes above (for keys arriving in URLs)."""
    if _THUMBNAIL_KEY.fullmatch(key):
        return True
    upload = _UPLOAD_KEY.fullmatch(key)
    return upload is not None and upload.group(1) not in _RESERVED_USER_IDS
