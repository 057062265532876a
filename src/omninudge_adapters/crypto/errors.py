"""Typed errors of the crypto adapter; no ``cryptography`` exception escapes it.

Both are ``ProtocolError``s from ``omninudge_core.errors``: a bad envelope or a bad
public key came from a peer (another client, or a server we do not trust with
plaintext), so the fault is theirs and the caller shows a warning instead of the
message. Misuse by our own caller (an empty recipient list, an id the signature
format cannot carry) is a plain ``ValueError``.

``EnvelopeRejected.code`` says why:

| code | meaning |
|---|---|
| ``unsupported_envelope`` | ``v`` is not 1 or ``alg`` is not the v1 suite |
| ``malformed_envelope`` | a field missing, mistyped, mis-sized or not canonical base64url |
| ``bad_signature`` | ``sig`` does not verify with the sender device's signing key |
| ``not_a_recipient`` | ``keys`` has no entry for this device |
| ``decrypt_failed`` | an AES-GCM tag did not verify (wrong key, or ids not bound by the AAD) |
| ``malformed_plaintext`` | the plaintext is not a UTF-8 JSON object with a string ``type`` |
"""

from __future__ import annotations

from omninudge_core.errors import ProtocolError

__all__ = ["CryptoError", "EnvelopeRejected", "InvalidKey"]


class CryptoError(ProtocolError):
    """Base of the crypto adapter's errors."""

    code = "crypto_error"
    status = 400


class InvalidKey(CryptoError):
    """A JWK or PEM that is not a valid P-256 key of the expected kind (or a wrong
    passphrase for an encrypted PEM)."""

    code = "invalid_key"


class EnvelopeRejected(CryptoError):
    """An envelope that must not be shown; ``code`` narrows the reason (see module)."""

    code = "envelope_rejected"
