"""Device keys: JWK export/import as PUT /api/devices takes them, PEM for disk."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from omninudge_adapters.crypto import (
    DeviceKeys,
    InvalidKey,
    b64url_decode,
    b64url_encode,
    device_fingerprint,
    jwk_from_public_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_from_jwk,
)

B64URL_32 = re.compile(r"[A-Za-z0-9_-]{43}")


def test_generated_device_exports_two_distinct_p256_public_jwks() -> None:
    keys = DeviceKeys.generate()
    for jwk in (keys.public_key, keys.signing_key):
        assert set(jwk) == {"kty", "crv", "x", "y"}
        assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
        assert B64URL_32.fullmatch(jwk["x"])
        assert B64URL_32.fullmatch(jwk["y"])
    assert keys.public_key != keys.signing_key


def test_jwk_round_trip_gives_the_same_public_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = jwk_from_public_key(key)
    assert public_key_from_jwk(jwk).public_numbers() == key.public_numbers()
    assert jwk_from_public_key(public_key_from_jwk(jwk)) == jwk


def test_small_coordinates_keep_32_bytes() -> None:
    """Leading zero bytes are kept: coordinates are fixed width (Web Crypto requires it)."""
    key = ec.derive_private_key(1, ec.SECP256R1()).public_key()  # G, fixed point
    for _ in range(200):
        jwk = jwk_from_public_key(key)
        assert len(b64url_decode(jwk["x"])) == 32
        assert len(b64url_decode(jwk["y"])) == 32
        if key.public_numbers().x < 2**248:
            break
        key = ec.generate_private_key(ec.SECP256R1()).public_key()


def test_import_ignores_web_crypto_extras() -> None:
    jwk = {**DeviceKeys.generate().public_key, "ext": True, "key_ops": []}
    assert jwk_from_public_key(public_key_from_jwk(jwk))["x"] == jwk["x"]


def _with(jwk: dict[str, str], **changes: object) -> dict[str, object]:
    return {**jwk, **changes}


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda j: _with(j, kty="RSA"), id="wrong-kty"),
        pytest.param(lambda j: _with(j, crv="P-384"), id="wrong-crv"),
        pytest.param(lambda j: {k: v for k, v in j.items() if k != "y"}, id="missing-y"),
        pytest.param(lambda j: _with(j, x=j["x"] + "="), id="padded"),
        pytest.param(lambda j: _with(j, x=b64url_encode(b"\x01" * 31)), id="short-x"),
        pytest.param(lambda j: _with(j, y=b64url_encode(b"\x01" * 32)), id="off-curve"),
        pytest.param(lambda j: _with(j, x=j["x"].replace(j["x"][0], "+")), id="std-alphabet"),
        pytest.param(lambda j: _with(j, x=12), id="not-a-string"),
        pytest.param(lambda j: _with(j, d="AAAA"), id="private-member"),
    ],
)
def test_import_refuses_invalid_jwk(mutate: object) -> None:
    jwk = DeviceKeys.generate().public_key
    with pytest.raises(InvalidKey):
        public_key_from_jwk(mutate(jwk))  # type: ignore[operator]


def test_import_refuses_a_non_object() -> None:
    with pytest.raises(InvalidKey):
        public_key_from_jwk(["EC"])  # type: ignore[arg-type]


def test_b64url_decode_refuses_non_canonical_spelling() -> None:
    assert b64url_decode("AQ") == b"\x01"
    for bad in ("AR", "A", "AQ==", "A Q", "AQ\n"):
        with pytest.raises(ValueError, match="base64url"):
            b64url_decode(bad)


@pytest.mark.parametrize("password", [None, b"correct horse battery staple"])
def test_pem_round_trip_restores_the_same_device(password: bytes | None) -> None:
    keys = DeviceKeys.generate()
    ecdh_pem, signing_pem = keys.to_pem(password)
    assert ecdh_pem.startswith(
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----" if password else b"-----BEGIN PRIVATE KEY-----"
    )
    restored = DeviceKeys.from_pem(ecdh_pem, signing_pem, password)
    assert restored.public_key == keys.public_key
    assert restored.signing_key == keys.signing_key


def test_encrypted_pem_with_wrong_or_missing_password_is_invalid_key() -> None:
    pem = private_key_to_pem(ec.generate_private_key(ec.SECP256R1()), b"right")
    with pytest.raises(InvalidKey):
        private_key_from_pem(pem, b"wrong")
    with pytest.raises(InvalidKey):
        private_key_from_pem(pem, None)
    with pytest.raises(InvalidKey):
        private_key_from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_non_p256_keys_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(InvalidKey):
        private_key_to_pem(p384)
    with pytest.raises(InvalidKey):
        jwk_from_public_key(p384.public_key())
    with pytest.raises(InvalidKey):
        DeviceKeys(ecdh_private=p384, signing_private=p384)
    p384_pem = p384.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidKey):
        private_key_from_pem(p384_pem)


def test_repr_never_shows_private_material() -> None:
    keys = DeviceKeys.generate()
    scalar = keys.ecdh_private.private_numbers().private_value
    assert repr(keys) == "DeviceKeys()"
    assert str(scalar) not in repr(keys)


def test_fingerprint_is_stable_and_changes_with_either_key() -> None:
    keys, other = DeviceKeys.generate(), DeviceKeys.generate()
    assert re.fullmatch(r"([0-9a-f]{4} ){7}[0-9a-f]{4}", keys.fingerprint)
    extras = {**keys.public_key, "ext": True}
    assert device_fingerprint(extras, keys.signing_key) == keys.fingerprint
    assert device_fingerprint(other.public_key, keys.signing_key) != keys.fingerprint
    assert device_fingerprint(keys.public_key, other.signing_key) != keys.fingerprint
    # The two roles are not interchangeable.
    assert device_fingerprint(keys.signing_key, keys.public_key) != keys.fingerprint
