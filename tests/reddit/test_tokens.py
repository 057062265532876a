"""Reddit tokens encrypted at rest with a server key (AES-256-GCM, versioned blob)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omninudge_adapters.reddit import TokenCipher, TokenDecryptionFailed

KEY = bytes(range(32))


@given(token=st.text(max_size=2000), context=st.text(max_size=40))
def test_round_trip(token: str, context: str) -> None:
    cipher = TokenCipher(KEY)
    blob = cipher.encrypt(token, context=context)
    assert cipher.decrypt(blob, context=context) == token


def test_each_encryption_uses_a_fresh_nonce() -> None:
    cipher = TokenCipher(KEY)
    first, second = cipher.encrypt("rt"), cipher.encrypt("rt")
    assert first != second
    assert b"rt" not in first


@given(position=st.integers(min_value=0, max_value=200), flip=st.integers(1, 255))
def test_any_tampered_byte_is_refused(position: int, flip: int) -> None:
    cipher = TokenCipher(KEY)
    blob = bytearray(cipher.encrypt("a-refresh-token-" + "x" * 100))
    blob[position % len(blob)] ^= flip
    with pytest.raises(TokenDecryptionFailed):
        cipher.decrypt(bytes(blob))


def test_truncated_blob_is_refused() -> None:
    cipher = TokenCipher(KEY)
    blob = cipher.encrypt("token")
    for size in (0, 1, 17, len(blob) - 1):
        with pytest.raises(TokenDecryptionFailed):
            cipher.decrypt(blob[:size])


def test_wrong_key_is_refused() -> None:
    blob = TokenCipher(KEY).encrypt("token")
    with pytest.raises(TokenDecryptionFailed, match="unknown key"):
        TokenCipher(bytes(32)).decrypt(blob)


def test_wrong_context_is_refused() -> None:
    cipher = TokenCipher(KEY)
    blob = cipher.encrypt("token", context="user-1")
    with pytest.raises(TokenDecryptionFailed):
        cipher.decrypt(blob, context="user-2")


def test_previous_keys_still_decrypt_and_flag_rotation() -> None:
    old = TokenCipher.from_secret("old secret")
    blob = old.encrypt("token")
    rotated = TokenCipher.from_secret("new secret", previous=["old secret"])
    assert rotated.decrypt(blob) == "token"
    assert rotated.needs_rotation(blob)
    assert not rotated.needs_rotation(rotated.encrypt("token"))


def test_keys_must_be_32_bytes_and_secrets_non_empty() -> None:
    with pytest.raises(ValueError):
        TokenCipher(b"short")
    with pytest.raises(ValueError):
        TokenCipher.from_secret("")
    assert TokenCipher.from_secret("s").decrypt(TokenCipher.from_secret("s").encrypt("t")) == "t"
