"""The v1 known-answer vector: fixed keys, fixed "random" bytes, every intermediate.

``build_vector()`` recomputes it; ``tests/fixtures/crypto/v1_vector.json`` is the
committed copy that the browser (Web Crypto) implementation is checked against.
Regenerate it only when the format changes on purpose:

    .venv/bin/python -m tests.crypto.vector > tests/fixtures/crypto/v1_vector.json

Private scalars are SHA-256 of a label, reduced mod n; the content key and IVs are
byte patterns, handed to ``seal`` through its ``randbytes`` hook in the order it
documents (content key, content IV, then one IV per device in ascending order).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from omninudge_adapters.crypto import (
    aad_for,
    b64url_encode,
    derive_kek,
    encode_plaintext,
    jwk_from_public_key,
    seal,
    signature_input,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "crypto" / "v1_vector.json"

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

CONVERSATION_ID = "conv_01J8ZQ4B7V9K2M3N4P5Q6R7S8T"
CLIENT_MSG_ID = "0b6f1c5e-3d2a-4f8b-9c7d-1e2f3a4b5c6d"
SENDER_DEVICE = "alice-laptop"
# Unsorted on purpose: the envelope must list keys in ascending device order anyway.
DEVICES = ("bob-phone", "alice-laptop", "alice-phone")
PLAINTEXT = {"type": "text", "body": "Hello Bob! Grüße aus Köln 👋"}

CONTENT_KEY = bytes(range(32))
CONTENT_IV = bytes(range(0xA0, 0xAC))
WRAP_IVS = {  # by device, consumed in ascending device order
    "alice-laptop": bytes([0xB1] * 12),
    "alice-phone": bytes([0xB2] * 12),
    "bob-phone": bytes([0xB3] * 12),
}


def fixed_private_key(label: str) -> ec.EllipticCurvePrivateKey:
    """A reproducible P-256 key: scalar = SHA-256("omninudge/v1/test-vector/" + label) mod n."""
    digest = hashlib.sha256(f"omninudge/v1/test-vector/{label}".encode()).digest()
    return ec.derive_private_key(int.from_bytes(digest, "big") % P256_ORDER, ec.SECP256R1())


def private_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """A private JWK (with ``d``), the form Web Crypto's importKey("jwk") takes."""
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return {**jwk_from_public_key(key.public_key()), "d": b64url_encode(scalar)}


def _randbytes_in_order() -> Any:
    queue = [CONTENT_KEY, CONTENT_IV, *(WRAP_IVS[d] for d in sorted(WRAP_IVS))]

    def randbytes(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n, (n, chunk)
        return chunk

    return randbytes


def build_vector() -> dict[str, Any]:
    """Seal the fixed inputs and record every input, intermediate and output."""
    signing = fixed_private_key("alice-laptop/signing")
    ephemeral = fixed_private_key("ephemeral")
    device_keys = {device: fixed_private_key(f"{device}/ecdh") for device in DEVICES}

    envelope = seal(
        PLAINTEXT,
        conversation_id=CONVERSATION_ID,
        client_msg_id=CLIENT_MSG_ID,
        sender_device_id=SENDER_DEVICE,
        sender_signing_key=signing,
        recipients={d: jwk_from_public_key(k.public_key()) for d, k in device_keys.items()},
        randbytes=_randbytes_in_order(),
        ephemeral_key=ephemeral,
    )

    per_device = {}
    for device in sorted(device_keys):
        shared = ephemeral.exchange(ec.ECDH(), device_keys[device].public_key())
        per_device[device] = {
            "ecdh_private_jwk": private_jwk(device_keys[device]),
            "public_key": jwk_from_public_key(device_keys[device].public_key()),
            "wrap_iv": b64url_encode(WRAP_IVS[device]),
            "hkdf_info": f"omninudge/v1/kek/{device}",
            "shared_secret": b64url_encode(shared),
            "kek": b64url_encode(derive_kek(shared, device)),
        }

    return {
        "description": (
            "OmniNudge E2E envelope v1 known-answer vector (API.md 'E2E envelope (v1)'). "
            "Binary values are unpadded base64url. 'sig' is RFC 6979 deterministic ECDSA: "
            "an implementation with randomized ECDSA (Web Crypto) reproduces every field "
            "except sig, and its own sig must verify with sender_signing_key."
        ),
        "inputs": {
            "conversation_id": CONVERSATION_ID,
            "client_msg_id": CLIENT_MSG_ID,
            "sender_device": SENDER_DEVICE,
            "plaintext": PLAINTEXT,
            "sender_signing_private_jwk": private_jwk(signing),
            "sender_signing_key": jwk_from_public_key(signing.public_key()),
            "ephemeral_private_jwk": private_jwk(ephemeral),
            "content_key": b64url_encode(CONTENT_KEY),
            "iv": b64url_encode(CONTENT_IV),
        },
        "intermediate": {
            "plaintext_utf8": b64url_encode(encode_plaintext(PLAINTEXT)),
            "aad_utf8": aad_for(CONVERSATION_ID, CLIENT_MSG_ID).decode("utf-8"),
            "devices": per_device,
            "signature_input_utf8": signature_input(
                CONVERSATION_ID, CLIENT_MSG_ID, envelope
            ).decode("utf-8"),
        },
        "envelope": envelope,
    }


def render(vector: dict[str, Any]) -> str:
    return json.dumps(vector, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(build_vector()), end="")
