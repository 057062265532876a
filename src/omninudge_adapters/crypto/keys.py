"""Device keys: P-256 key pairs, their public halves as JWK, and PEM for disk.

A device holds two private keys (DESIGN.md "End-to-end encryption"): an ECDH key
that receives wrapped content keys, and an ECDSA key that signs what the device
sends. Their public halves travel as JWK, ``{"kty": "EC", "crv": "P-256", "x", "y"}``
with 32-byte big-endian coordinates in unpadded base64url — exactly what
``PUT /api/devices/{id}`` takes as ``public_key`` / ``signing_key`` and what Web
Crypto's ``exportKey("jwk", ...)`` yields (minus its ``ext``/``key_ops``, which we
ignore on import).

Private keys never leave this module except as PKCS#8 PEM for the SDK's key file;
no ``repr`` or log line shows them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import attrs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from omninudge_adapters.crypto.b64 import b64url_decode, b64url_encode
from omninudge_adapters.crypto.errors import InvalidKey

__all__ = [
    "DeviceKeys",
    "device_fingerprint",
    "jwk_from_public_key",
    "private_key_from_pem",
    "private_key_to_pem",
    "public_key_from_jwk",
]

COORDINATE_BYTES = 32


def _require_p256(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise InvalidKey(f"expected a P-256 key, got {key.curve.name}")


def jwk_from_public_key(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK of a P-256 key (four members, fixed-width coordinates)."""
    _require_p256(key)
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(COORDINATE_BYTES, "big")),
        "y": b64url_encode(numbers.y.to_bytes(COORDINATE_BYTES, "big")),
    }


def public_key_from_jwk(jwk: Mapping[str, object]) -> ec.EllipticCurvePublicKey:
    """Import a public P-256 JWK.

    Extra members (``ext``, ``key_ops``, ``kid``...) are ignored; a private member
    ``d`` is refused so a leaked private key is never stored as a public one.
    Raises InvalidKey for a wrong ``kty``/``crv``, bad coordinates, or a point off
    the curve.
    """
    if not isinstance(jwk, Mapping):
        raise InvalidKey("a JWK must be a JSON object")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise InvalidKey('expected kty "EC" and crv "P-256"')
    if "d" in jwk:
        raise InvalidKey("a public JWK must not carry the private member d")
    coordinates = []
    for name in ("x", "y"):
        value = jwk.get(name)
        try:
            raw = b64url_decode(value)  # type: ignore[arg-type]  # checked inside
        except ValueError as exc:
            raise InvalidKey(f"JWK member {name} is not unpadded base64url") from exc
        if len(raw) != COORDINATE_BYTES:
            raise InvalidKey(f"JWK member {name} must be {COORDINATE_BYTES} bytes")
        coordinates.append(int.from_bytes(raw, "big"))
    try:
        return ec.EllipticCurvePublicNumbers(
            coordinates[0], coordinates[1], ec.SECP256R1()
        ).public_key()
    except ValueError as exc:
        raise InvalidKey("the JWK point is not on P-256") from exc


def private_key_to_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with ``password`` when given (best available scheme)."""
    _require_p256(key)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def private_key_from_pem(pem: bytes, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Load a PKCS#8 PEM written by ``private_key_to_pem``.

    Raises InvalidKey for a corrupt file, a wrong or missing password, or a key
    that is not P-256.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # cryptography says "bad decrypt", "password was not given" or "could not
        # deserialize" here; none of them may leak key material, but we keep ours.
        raise InvalidKey("cannot load the private key (corrupt file or wrong password)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidKey("the PEM does not hold an elliptic-curve key")
    _require_p256(key)
    return key


def device_fingerprint(public_key: Mapping[str, object], signing_key: Mapping[str, object]) -> str:
    """A short, stable fingerprint of a device's two public keys, for key-change
    warnings and (later) safety numbers.

    SHA-256 over ``"omninudge/v1/fp|" + x|y of the ECDH key + "|" + x|y of the
    signing key`` (canonical JWK coordinates), first 16 bytes as 8 groups of 4 hex
    digits. Raises InvalidKey for an invalid JWK.
    """
    parts = ["omninudge/v1/fp"]
    for jwk in (public_key, signing_key):
        canonical = jwk_from_public_key(public_key_from_jwk(jwk))
        parts += [canonical["x"], canonical["y"]]
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


@attrs.frozen
class DeviceKeys:
    """A device's two private keys. ``repr`` hides them."""

    ecdh_private: ec.EllipticCurvePrivateKey = attrs.field(repr=False)
    signing_private: ec.EllipticCurvePrivateKey = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        _require_p256(self.ecdh_private)
        _require_p256(self.signing_private)

    @classmethod
    def generate(cls) -> DeviceKeys:
        """Two fresh P-256 keys from the operating system's CSPRNG."""
        return cls(
            ecdh_private=ec.generate_private_key(ec.SECP256R1()),
            signing_private=ec.generate_private_key(ec.SECP256R1()),
        )

    @property
    def public_key(self) -> dict[str, str]:
        """The ECDH public JWK (``public_key`` of ``PUT /api/devices/{id}``)."""
        return jwk_from_public_key(self.ecdh_private.public_key())

    @property
    def signing_key(self) -> dict[str, str]:
        """The ECDSA public JWK (``signing_key`` of ``PUT /api/devices/{id}``)."""
        return jwk_from_public_key(self.signing_private.public_key())

    @property
    def fingerprint(self) -> str:
        """``device_fingerprint`` of this device's public keys."""
        return device_fingerprint(self.public_key, self.signing_key)

    def to_pem(self, password: bytes | None = None) -> tuple[bytes, bytes]:
        """(ECDH PEM, signing PEM) as PKCS#8, encrypted when ``password`` is given."""
        return (
            private_key_to_pem(self.ecdh_private, password),
            private_key_to_pem(self.signing_private, password),
        )

    @classmethod
    def from_pem(
        cls, ecdh_pem: bytes, signing_pem: bytes, password: bytes | None = None
    ) -> DeviceKeys:
        """Load the pair written by ``to_pem``. Raises InvalidKey."""
        return cls(
            ecdh_private=private_key_from_pem(ecdh_pem, password),
            signing_private=private_key_from_pem(signing_pem, password),
        )
