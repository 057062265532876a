"""Reddit tokens encrypted at rest (``RedditTokens.refresh_token_ciphertext``).

A refresh token is a long-lived credential for someone's Reddit account, so the
database only ever holds it sealed with a server key: AES-256-GCM, a fresh random
96-bit nonce per encryption, and a versioned blob::

    0x01 | key id (4 bytes) | nonce (12 bytes) | ciphertext + tag (16 bytes)

The key id (first bytes of SHA-256 of the key) lets ``decrypt`` pick the right key
while keys are rotated (``previous`` keys still decrypt, only the current one
encrypts) and tell "wrong key" from "tampered". ``context`` (e.g. the user id) is
bound as associated data, so a blob copied to another row does not decrypt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from omninudge_core.errors import PortError

__all__ = ["TokenCipher", "TokenDecryptionFailed"]

_VERSION = 1
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_HEADER = 1 + _KEY_ID_BYTES + _NONCE_BYTES
_HKDF_INFO = b"omninudge/v1/reddit-token-key"


class TokenDecryptionFailed(PortError):
    """A stored token blob cannot be opened (unknown version or key, or tampered)."""

    code = "token_decryption_failed"
    status = 500


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"omninudge/v1/key-id|" + key).digest()[:_KEY_ID_BYTES]


class TokenCipher:
    """Encrypt/decrypt tokens with AES-256-GCM under a 32-byte server key."""

    def __init__(self, key: bytes, *, previous: Sequence[bytes] = ()) -> None:
        """Raises ValueError unless every key is 32 bytes."""
        for candidate in (key, *previous):
            if len(candidate) != 32:
                raise ValueError("token keys are 32 bytes (AES-256)")
        self._key_id = _key_id(key)
        self._aead = AESGCM(key)
        self._keys = {_key_id(k): AESGCM(k) for k in (*previous, key)}

    @classmethod
    def from_secret(
        cls, secret: str | bytes, *, previous: Sequence[str | bytes] = ()
    ) -> TokenCipher:
        """Derive the key from a server secret (HKDF-SHA-256) so the JWT secret and the
        token key are never the same bytes. Raises ValueError for an empty secret."""
        return cls(_derive(secret), previous=[_derive(old) for old in previous])

    def encrypt(self, token: str, *, context: str = "") -> bytes:
        """The sealed blob of ``token``, bound to ``context``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, token.encode("utf-8"), context.encode("utf-8"))
        return bytes([_VERSION]) + self._key_id + nonce + sealed

    def decrypt(self, blob: bytes, *, context: str = "") -> str:
        """The token sealed in ``blob``. Raises TokenDecryptionFailed for an unknown
        version or key, a wrong ``context``, or any tampering."""
        if len(blob) < _HEADER + 16 or blob[0] != _VERSION:
            raise TokenDecryptionFailed("not a v1 token blob")
        aead = self._keys.get(blob[1 : 1 + _KEY_ID_BYTES])
        if aead is None:
            raise TokenDecryptionFailed("token blob sealed with an unknown key")
        nonce = blob[1 + _KEY_ID_BYTES : _HEADER]
        try:
            plain = aead.decrypt(nonce, blob[_HEADER:], context.encode("utf-8"))
        except InvalidTag as exc:
            raise TokenDecryptionFailed("token blob does not verify") from exc
        return plain.decode("utf-8")

    def needs_rotation(self, blob: bytes) -> bool:
        """True when ``blob`` was sealed with a previous key (re-encrypt it)."""
        return blob[1 : 1 + _KEY_ID_BYTES] != self._key_id


def _derive(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not raw:
        raise ValueError("the token secret is empty")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(raw)
