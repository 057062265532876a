"""What ``seal`` writes passes the core codec's structural envelope checks, and the
envelope the server re-serializes from ``models.Envelope`` still opens (the
signature covers the base64url strings, so they must come back unchanged)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from omninudge_adapters.crypto import DeviceKeys, open_envelope, seal
from tests.crypto.vector import FIXTURE

codec = pytest.importorskip("omninudge_core.codec")
wire = pytest.importorskip("omninudge_core.wire")

ALICE, BOB = DeviceKeys.generate(), DeviceKeys.generate()


def _sealed(devices: int = 2) -> dict[str, Any]:
    extra = {f"extra-{i:02d}": DeviceKeys.generate().public_key for i in range(devices - 2)}
    return seal(
        {"type": "text", "body": "über"},
        conversation_id="conv_1",
        client_msg_id="msg_1",
        sender_device_id="alice-1",
        sender_signing_key=ALICE.signing_private,
        recipients={"alice-1": ALICE.public_key, "bob-1": BOB.public_key, **extra},
    )


@pytest.mark.parametrize("devices", [2, 5, 64])
def test_sealed_envelope_passes_the_codec_and_survives_its_round_trip(devices: int) -> None:
    envelope = _sealed(devices)
    body = codec.decode_body(
        json.dumps({"conversation_id": "conv_1", "client_msg_id": "msg_1", "envelope": envelope}),
        wire.PostMessageBody,
    )
    assert body.envelope is not None
    assert codec.unstructure(body.envelope) == envelope
    reopened = open_envelope(
        json.loads(json.dumps(codec.unstructure(body.envelope))),
        conversation_id="conv_1",
        client_msg_id="msg_1",
        my_device_id="bob-1",
        my_ecdh_private_key=BOB.ecdh_private,
        sender_signing_jwk=ALICE.signing_key,
    )
    assert reopened == {"type": "text", "body": "über"}


def test_sealed_envelope_passes_as_a_websocket_send_frame() -> None:
    envelope = _sealed()
    frame = codec.structure_client_frame(
        {
            "type": "send",
            "conversation_id": "conv_1",
            "client_msg_id": "msg_1",
            "envelope": envelope,
        }
    )
    assert codec.unstructure(frame.envelope) == envelope


def test_vector_envelope_passes_the_codec() -> None:
    envelope = json.loads(FIXTURE.read_text(encoding="utf-8"))["envelope"]
    body = codec.decode_body(
        {"conversation_id": "c", "client_msg_id": "m", "envelope": envelope}, wire.PostMessageBody
    )
    assert codec.unstructure(body.envelope) == envelope


def test_device_jwks_pass_the_codec_as_a_device_registration() -> None:
    keys = DeviceKeys.generate()
    body = codec.decode_body(
        {"public_key": keys.public_key, "signing_key": keys.signing_key, "name": "laptop"},
        wire.DevicePutBody,
    )
    assert body.public_key.to_mapping() == keys.public_key
    assert body.signing_key.to_mapping() == keys.signing_key
