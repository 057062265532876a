"""The committed known-answer vector (tests/fixtures/crypto/v1_vector.json) is what
``seal`` produces today, and its values check out against independent computations
(stdlib HMAC for HKDF, raw AES-GCM), so a browser implementation can trust it."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from omninudge_adapters.crypto import (
    b64url_decode,
    jwk_from_public_key,
    open_envelope,
    public_key_from_jwk,
)
from tests.crypto.vector import FIXTURE, build_vector, render


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return loaded


def _private_key(jwk: dict[str, str]) -> ec.EllipticCurvePrivateKey:
    key = ec.derive_private_key(int.from_bytes(b64url_decode(jwk["d"]), "big"), ec.SECP256R1())
    assert jwk_from_public_key(key.public_key()) == {k: jwk[k] for k in ("kty", "crv", "x", "y")}
    return key


def _hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with an empty salt (HMAC pads it to the block size, like HashLen zeros)."""
    prk = hmac.new(b"", ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def test_seal_reproduces_the_committed_vector_byte_for_byte() -> None:
    assert render(build_vector()) == FIXTURE.read_text(encoding="utf-8")


def test_every_device_of_the_vector_opens_it(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    for device, data in vector["intermediate"]["devices"].items():
        plaintext = open_envelope(
            vector["envelope"],
            conversation_id=inputs["conversation_id"],
            client_msg_id=inputs["client_msg_id"],
            my_device_id=device,
            my_ecdh_private_key=_private_key(data["ecdh_private_jwk"]),
            sender_signing_jwk=inputs["sender_signing_key"],
        )
        assert plaintext == inputs["plaintext"]


def test_vector_intermediates_match_independent_computation(vector: dict[str, Any]) -> None:
    inputs, middle, envelope = vector["inputs"], vector["intermediate"], vector["envelope"]
    content_key = b64url_decode(inputs["content_key"])
    ephemeral = _private_key(inputs["ephemeral_private_jwk"])

    epk = b64url_decode(envelope["epk"])
    public = ephemeral.public_key().public_numbers()
    assert epk == b"\x04" + public.x.to_bytes(32, "big") + public.y.to_bytes(32, "big")

    aad = f"{inputs['conversation_id']}|{inputs['client_msg_id']}".encode()
    assert middle["aad_utf8"].encode() == aad
    plaintext = AESGCM(content_key).decrypt(
        b64url_decode(envelope["iv"]), b64url_decode(envelope["ct"]), aad
    )
    assert plaintext == b64url_decode(middle["plaintext_utf8"])
    assert plaintext == json.dumps(
        inputs["plaintext"], separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")

    entries = {entry["device"]: entry for entry in envelope["keys"]}
    assert list(entries) == sorted(middle["devices"])
    for device, data in middle["devices"].items():
        device_public = public_key_from_jwk(data["public_key"])
        shared = ephemeral.exchange(ec.ECDH(), device_public)
        assert shared == b64url_decode(data["shared_secret"])
        kek = _hkdf_sha256(shared, f"omninudge/v1/kek/{device}".encode())
        assert kek == b64url_decode(data["kek"])
        assert entries[device]["iv"] == data["wrap_iv"]
        unwrapped = AESGCM(kek).decrypt(
            b64url_decode(entries[device]["iv"]), b64url_decode(entries[device]["wk"]), None
        )
        assert unwrapped == content_key


def test_vector_signature_input_and_raw_signature(vector: dict[str, Any]) -> None:
    inputs, envelope = vector["inputs"], vector["envelope"]
    expected = "|".join(
        [
            "omninudge/v1/sig",
            inputs["conversation_id"],
            inputs["client_msg_id"],
            envelope["sender_device"],
            envelope["epk"],
            envelope["iv"],
            envelope["ct"],
        ]
    ) + "".join(
        f"|{e['device']}:{e['iv']}:{e['wk']}"
        for e in sorted(envelope["keys"], key=lambda e: e["device"])
    )
    assert vector["intermediate"]["signature_input_utf8"] == expected

    raw = b64url_decode(envelope["sig"])
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    signer = public_key_from_jwk(inputs["sender_signing_key"])
    signer.verify(der, expected.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
