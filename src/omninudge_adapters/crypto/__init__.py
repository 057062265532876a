"""End-to-end encryption on ``cryptography``: device keys and the v1 envelope.

The client side of API.md "E2E envelope (v1)": the Python SDK seals what it sends
and opens what it receives; the server never imports this package's private-key
paths (it only checks envelope structure in the core codec). See docs/encryption.md.
"""

from omninudge_adapters.crypto.b64 import b64url_decode, b64url_encode
from omninudge_adapters.crypto.envelope import (
    ALG,
    VERSION,
    aad_for,
    derive_kek,
    encode_plaintext,
    open_envelope,
    seal,
    signature_input,
)
from omninudge_adapters.crypto.errors import CryptoError, EnvelopeRejected, InvalidKey
from omninudge_adapters.crypto.keys import (
    DeviceKeys,
    device_fingerprint,
    jwk_from_public_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_from_jwk,
)

__all__ = [
    "ALG",
    "VERSION",
    "CryptoError",
    "DeviceKeys",
    "EnvelopeRejected",
    "InvalidKey",
    "aad_for",
    "b64url_decode",
    "b64url_encode",
    "derive_kek",
    "device_fingerprint",
    "encode_plaintext",
    "jwk_from_public_key",
    "open_envelope",
    "private_key_from_pem",
    "private_key_to_pem",
    "public_key_from_jwk",
    "seal",
    "signature_input",
]
