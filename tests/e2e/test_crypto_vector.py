"""The browser's Web Crypto envelope (web/crypto.js) against the Python known-answer vector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from omninudge_adapters.crypto import DeviceKeys, b64url_decode, open_envelope, seal
from tests.e2e.conftest import E2EServer

VECTOR = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "crypto" / "v1_vector.json").read_text()
)

# Runs in the page: seal the vector's inputs with its fixed randomness and ephemeral key,
# open the committed envelope with every device's key, verify the Python signature.
SEAL_AND_OPEN = """
async (vector) => {
  const c = await import("/static/crypto.js");
  const I = vector.inputs, D = vector.intermediate.devices;
  const ids = Object.keys(D).sort(c.compareCodePoints);
  const queue = [c.unb64u(I.content_key), c.unb64u(I.iv),
    ...ids.map((d) => c.unb64u(D[d].wrap_iv))];
  const eph = I.ephemeral_private_jwk;
  const ephemeral = {
    privateKey: await c.importPrivateJwk(eph, "ecdh"),
    publicRaw: new Uint8Array([4, ...c.unb64u(eph.x), ...c.unb64u(eph.y)]),
  };
  const signingKey = await c.importPrivateJwk(I.sender_signing_private_jwk, "sign");
  const recipients = Object.fromEntries(ids.map((d) => [d, D[d].public_key]));
  const ids_ = { conversationId: I.conversation_id, clientMsgId: I.client_msg_id };
  const envelope = await c.seal(I.plaintext,
    { ...ids_, senderDevice: I.sender_device, signingKey, recipients },
    { randomBytes: () => queue.shift(), ephemeral });
  const secrets = {};
  for (const d of ids) {
    const devicePublic = await c.importEcdhPublic(D[d].public_key);
    const shared = await c.ecdhSharedSecret(ephemeral.privateKey, devicePublic);
    secrets[d] = { shared_secret: c.b64u(shared), kek: c.b64u(await c.deriveKek(shared, d)) };
  }
  const opened = {};
  for (const d of ids) {
    const key = await c.importPrivateJwk(D[d].ecdh_private_jwk, "ecdh");
    opened[d] = await c.openEnvelope(vector.envelope,
      { ...ids_, myDeviceId: d, myEcdhPrivateKey: key, senderSigningJwk: I.sender_signing_key });
  }
  const dec = new TextDecoder();
  return {
    envelope, secrets, opened,
    plaintext_utf8: c.b64u(c.encodePlaintext(I.plaintext)),
    aad_utf8: dec.decode(c.aadFor(I.conversation_id, I.client_msg_id)),
    signature_input_utf8: dec.decode(
      c.signatureInput(I.conversation_id, I.client_msg_id, envelope)),
  };
}
"""


def _private_key(jwk: dict[str, str]) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(jwk["d"]), "big"), ec.SECP256R1())


async def test_web_crypto_reproduces_every_field_of_the_python_vector(
    new_page: Any, e2e_server: E2EServer
) -> None:
    page = await new_page()
    await page.goto("/")
    result = await page.evaluate(SEAL_AND_OPEN, VECTOR)
    expected = VECTOR["envelope"]
    produced = result["envelope"]
    assert {k: v for k, v in produced.items() if k != "sig"} == {
        k: v for k, v in expected.items() if k != "sig"
    }
    intermediate = VECTOR["intermediate"]
    assert result["plaintext_utf8"] == intermediate["plaintext_utf8"]
    assert result["aad_utf8"] == intermediate["aad_utf8"]
    assert result["signature_input_utf8"] == intermediate["signature_input_utf8"]
    for device, values in intermediate["devices"].items():
        assert result["secrets"][device] == {
            "shared_secret": values["shared_secret"],
            "kek": values["kek"],
        }
    # The Python (RFC 6979) signature verified in the browser, for every device.
    assert result["opened"] == {d: VECTOR["inputs"]["plaintext"] for d in intermediate["devices"]}
    # The browser's own (randomised) signature verifies in Python, and it opens there.
    inputs = VECTOR["inputs"]
    bob = intermediate["devices"]["bob-phone"]["ecdh_private_jwk"]
    assert (
        open_envelope(
            produced,
            conversation_id=inputs["conversation_id"],
            client_msg_id=inputs["client_msg_id"],
            my_device_id="bob-phone",
            my_ecdh_private_key=_private_key(bob),
            sender_signing_jwk=inputs["sender_signing_key"],
        )
        == inputs["plaintext"]
    )


async def test_an_envelope_sealed_in_the_browser_opens_in_python_and_back(
    new_page: Any, e2e_server: E2EServer
) -> None:
    """Fresh keys both sides: Python seals for a browser device, the browser opens it;
    the browser seals for a Python device, Python opens it."""
    page = await new_page()
    await page.goto("/")
    python_keys = DeviceKeys.generate()
    browser_side = await page.evaluate(
        """async () => {
          const c = await import("/static/crypto.js");
          window.__keys = await c.generateDeviceKeys();
          return { publicKey: window.__keys.publicKey, signingKey: window.__keys.signingKey };
        }"""
    )
    envelope = seal(
        {"type": "text", "body": "from Python ✓"},
        conversation_id="conv-1",
        client_msg_id="msg-1",
        sender_device_id="py",
        sender_signing_key=python_keys.signing_private,
        recipients={"py": python_keys.public_key, "web": browser_side["publicKey"]},
    )
    opened = await page.evaluate(
        """async ([envelope, signingJwk]) => {
          const c = await import("/static/crypto.js");
          return c.openEnvelope(envelope, { conversationId: "conv-1", clientMsgId: "msg-1",
            myDeviceId: "web", myEcdhPrivateKey: window.__keys.ecdhPrivate,
            senderSigningJwk: signingJwk });
        }""",
        [envelope, python_keys.signing_key],
    )
    assert opened == {"type": "text", "body": "from Python ✓"}

    sealed = await page.evaluate(
        """async (pyPublic) => {
          const c = await import("/static/crypto.js");
          return c.seal({ type: "text", body: "from the browser ✓" }, { conversationId: "conv-1",
            clientMsgId: "msg-2", senderDevice: "web", signingKey: window.__keys.signingPrivate,
            recipients: { web: window.__keys.publicKey, py: pyPublic } });
        }""",
        python_keys.public_key,
    )
    plaintext = open_envelope(
        sealed,
        conversation_id="conv-1",
        client_msg_id="msg-2",
        my_device_id="py",
        my_ecdh_private_key=python_keys.ecdh_private,
        sender_signing_jwk=browser_side["signingKey"],
    )
    assert plaintext == {"type": "text", "body": "from the browser ✓"}
