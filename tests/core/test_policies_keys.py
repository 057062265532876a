"""Blob storage keys: the three API.md shapes; nothing can escape its prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core.errors import InvalidFrame
from omninudge_core.models import MediaKind
from omninudge_core.policies.keys import (
    image_key,
    is_valid_key,
    media_key,
    thumbnail_key,
    video_key,
)


def test_keys_follow_the_api_shapes() -> None:
    assert image_key("u1", 1700000000123, "a1B2_c-", "jpg") == "images/u1/1700000000123_a1B2_c-.jpg"
    assert video_key("u1", 17, "xyz", "webm") == "videos/u1/17_xyz.webm"
    assert thumbnail_key("m42", "webp") == "images/thumbnails/m42_thumb.webp"
    assert media_key(MediaKind.VIDEO, "u1", 1, "r", "mp4") == "videos/u1/1_r.mp4"
    assert media_key(MediaKind.IMAGE, "u1", 1, "r", "png") == "images/u1/1_r.png"


@pytest.mark.parametrize(
    ("user_id", "random", "ext"),
    [
        ("../etc", "r", "jpg"),
        ("u/1", "r", "jpg"),
        ("u1", "..", "jpg"),
        ("u1", "r", "jpg/../../x"),
        ("u1", "r", ""),
        ("", "r", "jpg"),
        ("u1", "r.x", "jpg"),
        ("u1", "r", "jp g"),
        ("thumbnails", "r", "jpg"),  # would land among the thumbnails
        ("ü", "r", "jpg"),
    ],
)
def test_unsafe_parts_are_refused(user_id: str, random: str, ext: str) -> None:
    with pytest.raises(InvalidFrame) as caught:
        image_key(user_id, 1, random, ext)
    assert caught.value.code == "invalid_field"


@pytest.mark.parametrize("timestamp", [-1, True])
def test_timestamp_must_be_a_non_negative_integer(timestamp: int) -> None:
    with pytest.raises(InvalidFrame):
        video_key("u1", timestamp, "r", "mp4")


def test_thumbnail_media_id_is_checked() -> None:
    with pytest.raises(InvalidFrame):
        thumbnail_key("../m", "jpg")


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("images/u1/17_r.jpg", True),
        ("videos/u1/17_r.mp4", True),
        ("images/thumbnails/m1_thumb.jpg", True),
        ("images/thumbnails/17_r.jpg", False),
        ("images/u1/../u2/17_r.jpg", False),
        ("/images/u1/17_r.jpg", False),
        ("images/u1/17_r", False),
        ("other/u1/17_r.jpg", False),
        ("images/u1/17_r.jpg/", False),
        ("images/u1/abc_r.jpg", False),
    ],
)
def test_is_valid_key_recognises_only_the_three_shapes(key: str, valid: bool) -> None:
    assert is_valid_key(key) is valid


safe = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)


@given(
    safe.filter(lambda s: s != "thumbnails"),
    st.integers(min_value=0, max_value=10**20 - 1),
    safe,
    safe,
)
def test_every_built_key_is_valid_and_stays_under_its_prefix(
    user_id: str, timestamp: int, random: str, ext: str
) -> None:
    for key, prefix in [
        (image_key(user_id, timestamp, random, ext), f"images/{user_id}/"),
        (video_key(user_id, timestamp, random, ext), f"videos/{user_id}/"),
        (thumbnail_key(random, ext), "images/thumbnails/"),
    ]:
        assert key.startswith(prefix)
        assert ".." not in key.split("/")
        assert is_valid_key(key)
