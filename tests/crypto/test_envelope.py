"""The v1 envelope: every addressed device opens it, nobody else does, and any change
to a signed field or to the ids it was sealed for is rejected."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from omninudge_adapters.crypto import (
    ALG,
    DeviceKeys,
    EnvelopeRejected,
    InvalidKey,
    b64url_decode,
    b64url_encode,
    open_envelope,
    seal,
    signature_input,
)

CONVERSATION = "conv_1"
CLIENT_MSG = "msg_1"
PLAINTEXT = {"type": "text", "body": "hello"}

# Generated once per module: key generation is the slow part and tests never mutate keys.
KEYS = {name: DeviceKeys.generate() for name in ("a1", "a2", "a3", "b1", "b2", "eve")}
SENDER = "a1"


def _seal(devices: list[str], plaintext: dict[str, Any] = PLAINTEXT) -> dict[str, Any]:
    return seal(
        plaintext,
        conversation_id=CONVERSATION,
        client_msg_id=CLIENT_MSG,
        sender_device_id=SENDER,
        sender_signing_key=KEYS[SENDER].signing_private,
        recipients={device: KEYS[device].public_key for device in devices},
    )


def _open(
    envelope: dict[str, Any],
    device: str,
    *,
    conversation_id: str = CONVERSATION,
    client_msg_id: str = CLIENT_MSG,
    signer: str = SENDER,
) -> dict[str, Any]:
    return open_envelope(
        envelope,
        conversation_id=conversation_id,
        client_msg_id=client_msg_id,
        my_device_id=device,
        my_ecdh_private_key=KEYS[device].ecdh_private,
        sender_signing_jwk=KEYS[signer].signing_key,
    )


@contextmanager
def _rejected(code: str) -> Iterator[None]:
    """``pytest.raises`` for an EnvelopeRejected with exactly this code."""
    with pytest.raises(EnvelopeRejected) as info:
        yield
    assert info.value.code == code, info.value


def _resign(envelope: dict[str, Any], conversation_id: str, client_msg_id: str) -> None:
    """Sign ``envelope`` as the genuine sender would for other ids (raw r||s)."""
    der = KEYS[SENDER].signing_private.sign(
        signature_input(conversation_id, client_msg_id, envelope), ec.ECDSA(hashes.SHA256())
    )
    r, s = decode_dss_signature(der)
    envelope["sig"] = b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "devices",
    [
        ["b1"],
        ["a1", "b1"],
        ["a1", "a2", "b1"],
        ["a1", "a2", "b1", "b2"],
        ["a1", "a2", "a3", "b1", "b2"],
    ],
    ids=lambda devices: f"{len(devices)}-devices",
)
def test_every_addressed_device_opens_the_envelope(devices: list[str]) -> None:
    envelope = _seal(devices)
    assert [entry["device"] for entry in envelope["keys"]] == sorted(devices)
    for device in devices:
        assert _open(envelope, device) == PLAINTEXT


def test_envelope_has_the_v1_shape_and_sizes() -> None:
    envelope = _seal(["b2", "a1", "b1"])
    assert set(envelope) == {"v", "alg", "sender_device", "epk", "iv", "ct", "keys", "sig"}
    assert (envelope["v"], envelope["alg"], envelope["sender_device"]) == (1, ALG, SENDER)
    epk = b64url_decode(envelope["epk"])
    assert len(epk) == 65
    assert epk[0] == 4
    assert len(b64url_decode(envelope["iv"])) == 12
    assert len(b64url_decode(envelope["ct"])) == len(b'{"type":"text","body":"hello"}') + 16
    assert len(b64url_decode(envelope["sig"])) == 64
    for entry in envelope["keys"]:
        assert set(entry) == {"device", "iv", "wk"}
        assert len(b64url_decode(entry["iv"])) == 12
        assert len(b64url_decode(entry["wk"])) == 48


def test_each_seal_uses_fresh_keys_and_ivs() -> None:
    first, second = _seal(["a1", "b1"]), _seal(["a1", "b1"])
    for field in ("epk", "iv", "ct", "sig"):
        assert first[field] != second[field]
    assert first["keys"][0]["wk"] != second["keys"][0]["wk"]


@given(
    body=st.text(max_size=200),
    extra=st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.none(), max_size=3),
)
def test_any_unicode_body_round_trips(body: str, extra: dict[str, Any]) -> None:
    plaintext = {**extra, "type": "text", "body": body}
    assert _open(_seal(["a1", "b1"], plaintext), "b1") == plaintext


def test_reordered_keys_list_still_opens() -> None:
    """The signature input is in canonical order, so list order carries no meaning."""
    envelope = _seal(["a1", "a2", "b1"])
    envelope["keys"].reverse()
    assert _open(envelope, "a2") == PLAINTEXT


# --- who can open ----------------------------------------------------------------------


def test_a_device_not_in_keys_is_not_a_recipient() -> None:
    envelope = _seal(["a1", "b1"])
    with _rejected("not_a_recipient"):
        _open(envelope, "eve")


def test_a_non_recipient_using_a_recipients_id_cannot_decrypt() -> None:
    envelope = _seal(["a1", "b1"])
    with _rejected("decrypt_failed"):
        open_envelope(
            envelope,
            conversation_id=CONVERSATION,
            client_msg_id=CLIENT_MSG,
            my_device_id="b1",
            my_ecdh_private_key=KEYS["eve"].ecdh_private,
            sender_signing_jwk=KEYS[SENDER].signing_key,
        )


def test_a_signature_by_another_device_is_rejected() -> None:
    with _rejected("bad_signature"):
        _open(_seal(["a1", "b1"]), "b1", signer="a2")


# --- tampering ------------------------------------------------------------------------


def _flip_last_byte(text: str) -> str:
    raw = bytearray(b64url_decode(text))
    raw[-1] ^= 0x01
    return b64url_encode(bytes(raw))


def _other_epk(_: str) -> str:
    point = ec.generate_private_key(ec.SECP256R1()).public_key()
    return b64url_encode(
        point.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


Tamper = Callable[[dict[str, Any]], None]


def _set(field: str, change: Callable[[str], str]) -> Tamper:
    def tamper(envelope: dict[str, Any]) -> None:
        envelope[field] = change(envelope[field])

    return tamper


def _set_key(index: int, field: str, change: Callable[[str], str]) -> Tamper:
    def tamper(envelope: dict[str, Any]) -> None:
        envelope["keys"][index][field] = change(envelope["keys"][index][field])

    return tamper


def _drop_key(envelope: dict[str, Any]) -> None:
    envelope["keys"] = [e for e in envelope["keys"] if e["device"] != "a1"]


def _add_key(envelope: dict[str, Any]) -> None:
    envelope["keys"].append({"device": "eve", "iv": "A" * 16, "wk": "A" * 64})


def _swap_wrapped_keys(envelope: dict[str, Any]) -> None:
    first, second = envelope["keys"][0], envelope["keys"][1]
    first["wk"], second["wk"] = second["wk"], first["wk"]


TAMPERS: dict[str, Tamper] = {
    "ct": _set("ct", _flip_last_byte),
    "iv": _set("iv", _flip_last_byte),
    "epk": _set("epk", _other_epk),
    "sender_device": _set("sender_device", lambda _: "a2"),
    "sig": _set("sig", _flip_last_byte),
    "sig-zero": _set("sig", lambda _: b64url_encode(bytes(64))),
    "sig-above-order": _set("sig", lambda _: b64url_encode(b"\xff" * 64)),
    "wk-of-recipient": _set_key(1, "wk", _flip_last_byte),
    "wk-of-other-device": _set_key(0, "wk", _flip_last_byte),
    "key-iv": _set_key(1, "iv", _flip_last_byte),
    "key-device-renamed": _set_key(0, "device", lambda _: "a9"),
    "drop-a-key": _drop_key,
    "add-a-key": _add_key,
    "swap-wrapped-keys": _swap_wrapped_keys,
}


@pytest.mark.parametrize("tamper", TAMPERS.values(), ids=TAMPERS.keys())
def test_tampering_with_any_signed_field_breaks_the_signature(tamper: Tamper) -> None:
    envelope = _seal(["a1", "b1"])  # keys[0] = a1, keys[1] = b1
    tamper(envelope)
    with _rejected("bad_signature"):
        _open(envelope, "b1")


@pytest.mark.parametrize(
    ("ids", "field"),
    [
        ({"conversation_id": "conv_2"}, "conversation_id"),
        ({"client_msg_id": "msg_2"}, "client_msg_id"),
        ({"conversation_id": "conv_1|msg", "client_msg_id": "_1"}, "shifted separator"),
    ],
)
def test_replay_under_other_ids_is_rejected(ids: dict[str, str], field: str) -> None:
    envelope = _seal(["a1", "b1"])
    with pytest.raises(EnvelopeRejected) as info:
        _open(envelope, "b1", **ids)
    assert info.value.code in {"bad_signature", "malformed_envelope"}, field


def test_aad_binds_the_ids_even_if_the_signature_were_redone() -> None:
    """Defence in depth: a sender-signed envelope moved to other ids still fails at
    the AES-GCM tag, because the AAD holds the ids it was encrypted under."""
    envelope = _seal(["a1", "b1"])
    _resign(envelope, "conv_2", CLIENT_MSG)
    with _rejected("decrypt_failed"):
        _open(envelope, "b1", conversation_id="conv_2")


def test_a_randomized_raw_signature_like_web_crypto_verifies() -> None:
    envelope = _seal(["a1", "b1"])
    _resign(envelope, CONVERSATION, CLIENT_MSG)
    assert _open(envelope, "b1") == PLAINTEXT


# --- malformed and unsupported ----------------------------------------------------------


MALFORMED: dict[str, tuple[Tamper, str]] = {
    "v2": (lambda e: e.update(v=2), "unsupported_envelope"),
    "v-true": (lambda e: e.update(v=True), "unsupported_envelope"),
    "alg": (lambda e: e.update(alg="ECDH-ES+A256KW"), "unsupported_envelope"),
    "no-alg": (lambda e: e.pop("alg"), "unsupported_envelope"),
    "ct-padded": (_set("ct", lambda t: t + "=="), "malformed_envelope"),
    "ct-std-alphabet": (_set("ct", lambda t: "+" + t[1:]), "malformed_envelope"),
    "ct-too-short": (_set("ct", lambda _: b64url_encode(b"x" * 15)), "malformed_envelope"),
    "iv-11-bytes": (_set("iv", lambda _: b64url_encode(b"x" * 11)), "malformed_envelope"),
    "sig-der": (_set("sig", lambda _: b64url_encode(b"0" * 70)), "malformed_envelope"),
    "epk-compressed": (
        _set("epk", lambda t: b64url_encode(b"\x02" + b64url_decode(t)[1:33])),
        "malformed_envelope",
    ),
    "epk-off-curve": (
        _set("epk", lambda t: b64url_encode(b64url_decode(t)[:-1] + b"\x00")),
        "malformed_envelope",
    ),
    "wk-47-bytes": (_set_key(0, "wk", lambda _: b64url_encode(b"x" * 47)), "malformed_envelope"),
    "keys-empty": (lambda e: e.update(keys=[]), "malformed_envelope"),
    "keys-not-list": (lambda e: e.update(keys={"b1": {}}), "malformed_envelope"),
    "keys-duplicate": (lambda e: e["keys"].append(dict(e["keys"][1])), "malformed_envelope"),
    "key-without-device": (lambda e: e["keys"][0].pop("device"), "malformed_envelope"),
    "sender-device-missing": (lambda e: e.pop("sender_device"), "malformed_envelope"),
    "sender-device-pipe": (lambda e: e.update(sender_device="a|1"), "malformed_envelope"),
    "sig-missing": (lambda e: e.pop("sig"), "malformed_envelope"),
}


@pytest.mark.parametrize(("tamper", "code"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_or_unsupported_envelopes_are_rejected_before_verifying(
    tamper: Tamper, code: str
) -> None:
    envelope = _seal(["a1", "b1"])
    tamper(envelope)
    with _rejected(code):
        _open(envelope, "b1")


def test_a_non_object_envelope_is_malformed() -> None:
    with _rejected("malformed_envelope"):
        _open(["not", "an", "envelope"], "b1")  # type: ignore[arg-type]


def test_a_plaintext_without_type_is_malformed_after_decrypting() -> None:
    envelope = _seal(["a1", "b1"], {"body": "no type"})
    with _rejected("malformed_plaintext"):
        _open(envelope, "b1")


def test_a_bad_signing_jwk_is_invalid_key_not_a_crash() -> None:
    envelope = _seal(["a1", "b1"])
    with pytest.raises(InvalidKey):
        open_envelope(
            envelope,
            conversation_id=CONVERSATION,
            client_msg_id=CLIENT_MSG,
            my_device_id="b1",
            my_ecdh_private_key=KEYS["b1"].ecdh_private,
            sender_signing_jwk={"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        )


def test_the_envelope_is_not_modified_by_opening() -> None:
    envelope = _seal(["a1", "b1"])
    before = copy.deepcopy(envelope)
    _open(envelope, "a1")
    assert envelope == before


# --- sealing refuses what it cannot encode -------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"recipients": {}},
        {"conversation_id": "a|b"},
        {"client_msg_id": ""},
        {"sender_device_id": "a|1"},
        {"recipients": {"b|1": KEYS["b1"].public_key}},
    ],
)
def test_seal_refuses_no_recipients_and_ids_with_the_separator(overrides: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "conversation_id": CONVERSATION,
        "client_msg_id": CLIENT_MSG,
        "sender_device_id": SENDER,
        "sender_signing_key": KEYS[SENDER].signing_private,
        "recipients": {"b1": KEYS["b1"].public_key},
        **overrides,
    }
    with pytest.raises(ValueError, match=r"recipient|must"):
        seal(PLAINTEXT, **arguments)


def test_seal_refuses_an_invalid_recipient_jwk() -> None:
    with pytest.raises(InvalidKey):
        seal(
            PLAINTEXT,
            conversation_id=CONVERSATION,
            client_msg_id=CLIENT_MSG,
            sender_device_id=SENDER,
            sender_signing_key=KEYS[SENDER].signing_private,
            recipients={"b1": {**KEYS["b1"].public_key, "crv": "P-521"}},
        )
