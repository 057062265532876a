"""Seal and open the v1 end-to-end envelope (API.md "E2E envelope (v1)").

Theory of operation. A message is encrypted once, with a fresh 32-byte content key
under AES-256-GCM; the AAD ``conversation_id + "|" + client_msg_id`` binds the
ciphertext to its place. The content key is then wrapped once per device (every
device of the recipient and of the sender): a fresh ephemeral P-256 key agrees a
secret with each device's ECDH key, HKDF-SHA-256 (empty salt, info
``"omninudge/v1/kek/" + device``) turns it into a key-encryption key, and
AES-256-GCM (its own 12-byte IV, no AAD) wraps the content key. Finally the sending
device signs every field, and both ids, with ECDSA P-256 / SHA-256.

Opening checks in this order, and stops at the first failure: version and suite,
structure and sizes, the signature (before touching any ciphertext), our wrapped
key, then the two AES-GCM tags. A stolen envelope replayed under another
conversation or client_msg_id fails twice over: the signature input and the AAD
both contain the ids.

The signature input joins fields with ``|`` (and ``:`` inside a key entry); all the
base64url fields are free of both, so ids must not contain ``|`` or the input would
be ambiguous. ``seal`` refuses such ids and ``open_envelope`` rejects them.

The byte layout here is what the browser (Web Crypto) implements too; the fixture
``tests/fixtures/crypto/v1_vector.json`` pins it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from omninudge_adapters.crypto.b64 import b64url_decode, b64url_encode
from omninudge_adapters.crypto.errors import EnvelopeRejected, InvalidKey
from omninudge_adapters.crypto.keys import public_key_from_jwk

__all__ = [
    "ALG",
    "VERSION",
    "aad_for",
    "derive_kek",
    "encode_plaintext",
    "open_envelope",
    "seal",
    "signature_input",
]

VERSION = 1
ALG = "ECDH-P256+HKDF-SHA256+A256GCM+ES256"

CONTENT_KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
EPK_BYTES = 65  # 0x04 || X || Y
WRAPPED_KEY_BYTES = CONTENT_KEY_BYTES + TAG_BYTES
SIGNATURE_BYTES = 64  # r || s, 32 bytes each, as Web Crypto produces
SCALAR_BYTES = 32

KEK_INFO_PREFIX = "omninudge/v1/kek/"
SIGNATURE_PREFIX = "omninudge/v1/sig"

# RFC 6979 signatures: no signing-time randomness to get wrong, and a reproducible
# test vector. A randomized signature (Web Crypto's) verifies all the same.
_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_ECDSA_VERIFY = ec.ECDSA(hashes.SHA256())

RandBytes = Callable[[int], bytes]


# --- the byte-level pieces (public so tests and other implementations can check them) --


def aad_for(conversation_id: str, client_msg_id: str) -> bytes:
    """The AES-GCM additional data of the content ciphertext."""
    return f"{conversation_id}|{client_msg_id}".encode()


def encode_plaintext(plaintext: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept as UTF-8), key order kept."""
    return json.dumps(plaintext, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def derive_kek(shared_secret: bytes, device_id: str) -> bytes:
    """HKDF-SHA-256(ikm = ECDH x-coordinate, salt = empty, info = prefix + device), 32 bytes."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=CONTENT_KEY_BYTES,
        salt=b"",
        info=(KEK_INFO_PREFIX + device_id).encode("utf-8"),
    ).derive(shared_secret)


def signature_input(conversation_id: str, client_msg_id: str, envelope: Mapping[str, Any]) -> bytes:
    """The exact bytes ``sig`` covers, from the envelope's own (base64url) strings.

    ``keys`` entries are taken in ascending code-point order of ``device`` whatever
    their order in the list (Python's ``str`` order is code-point order; in
    JavaScript compare code points, not the UTF-16 units of the default sort).
    """
    head = "|".join(
        [
            SIGNATURE_PREFIX,
            conversation_id,
            client_msg_id,
            envelope["sender_device"],
            envelope["epk"],
            envelope["iv"],
            envelope["ct"],
        ]
    )
    entries = sorted(envelope["keys"], key=lambda entry: entry["device"])
    tail = "".join(f"|{e['device']}:{e['iv']}:{e['wk']}" for e in entries)
    return (head + tail).encode("utf-8")


def _check_id(name: str, value: str) -> None:
    if not value or "|" in value:
        raise ValueError(f"{name} must be non-empty and must not contain '|'")


def _raw_signature(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(SCALAR_BYTES, "big") + s.to_bytes(SCALAR_BYTES, "big")


def _ecdh(private_key: ec.EllipticCurvePrivateKey, public_key: ec.EllipticCurvePublicKey) -> bytes:
    return private_key.exchange(ec.ECDH(), public_key)


# --- seal ---------------------------------------------------------------------------------


def seal(
    plaintext: Mapping[str, Any],
    *,
    conversation_id: str,
    client_msg_id: str,
    sender_device_id: str,
    sender_signing_key: ec.EllipticCurvePrivateKey,
    recipients: Mapping[str, Mapping[str, object]],
    randbytes: RandBytes = os.urandom,
    ephemeral_key: ec.EllipticCurvePrivateKey | None = None,
) -> dict[str, Any]:
    """Encrypt ``plaintext`` for every device in ``recipients`` and sign it.

    ``recipients`` maps device id -> public ECDH JWK and must list every device of
    the recipient *and* of the sender (the server answers 409 ``device_mismatch``
    otherwise). ``randbytes`` and ``ephemeral_key`` exist for test vectors only;
    ``randbytes`` is called for the content key (32), the content IV (12), then one
    IV (12) per device in ascending device order.

    Returns the envelope as a JSON-ready dict with ``keys`` in ascending device
    order. Raises ValueError for no recipients or an id containing ``|``, InvalidKey
    for a bad recipient JWK or a non-P-256 key.
    """
    if not recipients:
        raise ValueError("an envelope needs at least one recipient device")
    _check_id("conversation_id", conversation_id)
    _check_id("client_msg_id", client_msg_id)
    _check_id("sender_device_id", sender_device_id)
    for device_id in recipients:
        _check_id("recipient device id", device_id)
    if not isinstance(sender_signing_key.curve, ec.SECP256R1):
        raise InvalidKey("the signing key must be a P-256 key")
    # Import every recipient key before drawing randomness: a bad JWK fails cleanly.
    device_keys = {
        device_id: public_key_from_jwk(recipients[device_id]) for device_id in sorted(recipients)
    }

    content_key = randbytes(CONTENT_KEY_BYTES)
    iv = randbytes(IV_BYTES)
    ct = AESGCM(content_key).encrypt(
        iv, encode_plaintext(plaintext), aad_for(conversation_id, client_msg_id)
    )
    if ephemeral_key is None:
        ephemeral_key = ec.generate_private_key(ec.SECP256R1())
    elif not isinstance(ephemeral_key.curve, ec.SECP256R1):
        raise InvalidKey("the ephemeral key must be a P-256 key")
    epk = ephemeral_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    keys = []
    for device_id, device_public in device_keys.items():
        kek = derive_kek(_ecdh(ephemeral_key, device_public), device_id)
        wrap_iv = randbytes(IV_BYTES)
        wrapped = AESGCM(kek).encrypt(wrap_iv, content_key, None)
        keys.append(
            {"device": device_id, "iv": b64url_encode(wrap_iv), "wk": b64url_encode(wrapped)}
        )

    envelope: dict[str, Any] = {
        "v": VERSION,
        "alg": ALG,
        "sender_device": sender_device_id,
        "epk": b64url_encode(epk),
        "iv": b64url_encode(iv),
        "ct": b64url_encode(ct),
        "keys": keys,
    }
    der = sender_signing_key.sign(signature_input(conversation_id, client_msg_id, envelope), _ECDSA)
    envelope["sig"] = b64url_encode(_raw_signature(der))
    return envelope


# --- open ---------------------------------------------------------------------------------


def _reject(code: str, message: str) -> EnvelopeRejected:
    return EnvelopeRejected(message, code=code)


def _field(envelope: Mapping[str, Any], name: str, size: int | None, minimum: int = 0) -> bytes:
    """Decode a base64url member and check its length (exact ``size`` or ``minimum``)."""
    value = envelope.get(name)
    if not isinstance(value, str):
        raise _reject("malformed_envelope", f"{name} must be a string")
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise _reject("malformed_envelope", f"{name} is not unpadded base64url") from exc
    if (size is not None and len(raw) != size) or len(raw) < minimum:
        expected = f"{size}" if size is not None else f"at least {minimum}"
        raise _reject("malformed_envelope", f"{name} must be {expected} bytes, got {len(raw)}")
    return raw


def _parse(envelope: Mapping[str, Any]) -> tuple[ec.EllipticCurvePublicKey, dict[str, Any]]:
    """Check version, suite and structure; return the ephemeral key and decoded fields."""
    if not isinstance(envelope, Mapping):
        raise _reject("malformed_envelope", "the envelope must be a JSON object")
    version = envelope.get("v")
    if type(version) is not int or version != VERSION or envelope.get("alg") != ALG:
        raise _reject("unsupported_envelope", f"expected v {VERSION} and alg {ALG}")
    sender_device = envelope.get("sender_device")
    if not isinstance(sender_device, str) or not sender_device or "|" in sender_device:
        raise _reject("malformed_envelope", "sender_device must be a device id without '|'")
    epk = _field(envelope, "epk", EPK_BYTES)
    if epk[0] != 0x04:
        raise _reject("malformed_envelope", "epk must be an uncompressed point (0x04 || X || Y)")
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), epk)
    except ValueError as exc:
        raise _reject("malformed_envelope", "epk is not a point on P-256") from exc
    decoded: dict[str, Any] = {
        "iv": _field(envelope, "iv", IV_BYTES),
        "ct": _field(envelope, "ct", None, minimum=TAG_BYTES),
        "sig": _field(envelope, "sig", SIGNATURE_BYTES),
    }
    entries = envelope.get("keys")
    if not isinstance(entries, list) or not entries:
        raise _reject("malformed_envelope", "keys must be a non-empty list")
    wrapped: dict[str, tuple[bytes, bytes]] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise _reject("malformed_envelope", "each keys entry must be an object")
        device = entry.get("device")
        if not isinstance(device, str) or not device or "|" in device:
            raise _reject("malformed_envelope", "keys[].device must be a device id without '|'")
        if device in wrapped:
            raise _reject("malformed_envelope", f"device {device!r} appears twice in keys")
        wrapped[device] = (_field(entry, "iv", IV_BYTES), _field(entry, "wk", WRAPPED_KEY_BYTES))
    decoded["keys"] = wrapped
    return ephemeral, decoded


def _verify(signing_jwk: Mapping[str, object], message: bytes, raw_signature: bytes) -> None:
    public_key = public_key_from_jwk(signing_jwk)
    r = int.from_bytes(raw_signature[:SCALAR_BYTES], "big")
    s = int.from_bytes(raw_signature[SCALAR_BYTES:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), message, _ECDSA_VERIFY)
    except InvalidSignature as exc:
        raise _reject("bad_signature", "the signature does not verify") from exc


def open_envelope(
    envelope: Mapping[str, Any],
    *,
    conversation_id: str,
    client_msg_id: str,
    my_device_id: str,
    my_ecdh_private_key: ec.EllipticCurvePrivateKey,
    sender_signing_jwk: Mapping[str, object],
) -> dict[str, Any]:
    """Verify and decrypt an envelope addressed (among others) to ``my_device_id``.

    ``sender_signing_jwk`` is the ``signing_key`` of the device named by
    ``envelope["sender_device"]``, looked up among the *message sender's* devices.
    The ids are the message's own, as the server reported them.

    Returns the plaintext object. Raises EnvelopeRejected (codes in
    ``omninudge_adapters.crypto.errors``) and InvalidKey for a bad signing JWK;
    nothing is decrypted before the signature verifies.
    """
    ephemeral, decoded = _parse(envelope)
    try:
        _check_id("conversation_id", conversation_id)
        _check_id("client_msg_id", client_msg_id)
    except ValueError as exc:
        # A signature over such ids would be ambiguous: refuse rather than guess.
        raise _reject("malformed_envelope", str(exc)) from exc
    _verify(
        sender_signing_jwk,
        signature_input(conversation_id, client_msg_id, envelope),
        decoded["sig"],
    )

    mine = decoded["keys"].get(my_device_id)
    if mine is None:
        raise _reject("not_a_recipient", f"no wrapped key for device {my_device_id!r}")
    wrap_iv, wrapped_key = mine
    if not isinstance(my_ecdh_private_key.curve, ec.SECP256R1):
        raise InvalidKey("the device key must be a P-256 key")
    kek = derive_kek(_ecdh(my_ecdh_private_key, ephemeral), my_device_id)
    try:
        content_key = AESGCM(kek).decrypt(wrap_iv, wrapped_key, None)
        plaintext = AESGCM(content_key).decrypt(
            decoded["iv"], decoded["ct"], aad_for(conversation_id, client_msg_id)
        )
    except InvalidTag as exc:
        raise _reject("decrypt_failed", "authentication tag mismatch") from exc

    try:
        value = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _reject("malformed_plaintext", "the plaintext is not UTF-8 JSON") from exc
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _reject("malformed_plaintext", "the plaintext must be an object with a type")
    return value
