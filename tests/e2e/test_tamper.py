"""A misbehaving server: envelopes replayed, altered or re-addressed are refused by the
receiving web client with a visible warning, and changed device keys are flagged.

Messages are injected straight into the store (``E2EServer.inject``), skipping every
check of the send path, as a compromised server could."""

from __future__ import annotations

import copy
import json
import os
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from playwright.async_api import expect

from omninudge_adapters.crypto import (
    DeviceKeys,
    b64url_decode,
    b64url_encode,
    seal,
    signature_input,
)
from omninudge_server.client import Client
from tests.e2e.conftest import E2EServer, login, screenshot, send, unique


def _resign(envelope: dict[str, Any], key: ec.EllipticCurvePrivateKey, conv: str, msg: str) -> None:
    der = key.sign(signature_input(conv, msg, envelope), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    envelope["sig"] = b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _flip(value: str) -> str:
    raw = bytearray(b64url_decode(value))
    raw[len(raw) // 2] ^= 0x01
    return b64url_encode(bytes(raw))


async def test_replayed_and_altered_envelopes_are_refused_with_a_warning(
    new_page: Any, e2e_server: E2EServer
) -> None:
    bob_name, alice_name, carol_name = unique("bob"), unique("alice"), unique("carol")
    a1, a2 = unique("alice-laptop"), unique("alice-phone")
    page = await new_page()
    await login(page, bob_name)
    alice = await Client.dev_login(e2e_server.base_url, alice_name, device_id=a1)
    carol = await Client.dev_login(e2e_server.base_url, carol_name, device_id=unique("carol-phone"))
    keys, other = DeviceKeys.generate(), DeviceKeys.generate()
    async with alice, carol:
        for device_id, device_keys in ((a1, keys), (a2, other)):
            await alice.register_device(
                device_id, public_key=device_keys.public_key, signing_key=device_keys.signing_key
            )
        bob = await alice.user_by_name(bob_name)
        conv_a = (await alice.open_conversation(bob["id"]))["id"]
        conv_b = (await carol.open_conversation(bob["id"]))["id"]  # carol and bob
        devices = await alice.devices(bob["id"]) + await alice.devices(alice.user_id)
        recipients = {d["device_id"]: d["public_key"] for d in devices}
        msg_id = str(uuid.uuid4())
        genuine = seal(
            {"type": "text", "body": "the genuine one"},
            conversation_id=conv_a,
            client_msg_id=msg_id,
            sender_device_id=a1,
            sender_signing_key=keys.signing_private,
            recipients=recipients,
        )
        await alice.send(conv_a, genuine, client_msg_id=msg_id)
        await page.locator("#conversation-list button", has_text=alice_name).click()
        await expect(
            page.locator("#messages li.theirs", has_text="the genuine one")
        ).to_have_attribute("data-verified", "true")

        async def inject(envelope: dict[str, Any], **kwargs: Any) -> None:
            kwargs.setdefault("conversation_id", conv_a)
            await e2e_server.inject(
                sender_id=alice.user_id, envelope=envelope, notify=bob["id"], **kwargs
            )

        ct_altered = copy.deepcopy(genuine)
        ct_altered["ct"] = _flip(ct_altered["ct"])
        await inject(ct_altered)
        key_altered = copy.deepcopy(genuine)
        for entry in key_altered["keys"]:
            entry["wk"] = b64url_encode(os.urandom(48))
        await inject(key_altered)
        device_altered = copy.deepcopy(genuine)
        device_altered["sender_device"] = a2
        await inject(device_altered)
        await inject(copy.deepcopy(genuine))  # replayed under a new client_msg_id
        # Even with the sender's signature over the new ids (which the server cannot
        # make), the AAD binds the ciphertext to the original conversation and id.
        resigned_id = str(uuid.uuid4())
        resigned = copy.deepcopy(genuine)
        _resign(resigned, keys.signing_private, conv_a, resigned_id)
        await inject(resigned, client_msg_id=resigned_id)

        rejected = page.locator("#messages li.rejected")
        await expect(rejected).to_have_count(5)
        codes = [await item.get_attribute("data-rejected") for item in await rejected.all()]
        assert codes == ["bad_signature"] * 4 + ["decrypt_failed"]
        await expect(rejected.first).to_contain_text("could not be verified")
        await expect(page.locator("#messages li.theirs .text")).to_have_count(1)
        await screenshot(page, "bob-tampered-envelopes")

        # The stolen envelope replayed into ANOTHER conversation (carol's with bob), as it
        # is and re-signed for it: refused both ways, the re-signed one by the AAD.
        stolen_id = str(uuid.uuid4())
        stolen = copy.deepcopy(genuine)
        _resign(stolen, keys.signing_private, conv_b, stolen_id)
        await inject(copy.deepcopy(genuine), conversation_id=conv_b)
        await inject(stolen, conversation_id=conv_b, client_msg_id=stolen_id)
        entry = page.locator("#conversation-list button", has_text=carol_name)
        await expect(entry.locator(".unread")).to_have_text("2")
        await entry.click()
        rejected_b = page.locator("#messages li.rejected")
        await expect(rejected_b).to_have_count(2)
        codes = [await item.get_attribute("data-rejected") for item in await rejected_b.all()]
        assert codes == ["bad_signature", "decrypt_failed"]
        assert "the genuine one" not in await page.locator("#messages").inner_text()


async def test_the_web_client_warns_when_a_contacts_devices_change(
    new_page: Any, e2e_server: E2EServer
) -> None:
    bob_name, alice_name = unique("bob"), unique("alice")
    a1, a2 = unique("alice-laptop"), unique("alice-phone")
    page = await new_page()
    await login(page, bob_name)
    alice = await Client.dev_login(e2e_server.base_url, alice_name, device_id=a1)
    keys = DeviceKeys.generate()
    async with alice:
        await alice.register_device(a1, public_key=keys.public_key, signing_key=keys.signing_key)
        bob = await alice.user_by_name(bob_name)
        await alice.open_conversation(bob["id"])
        await page.reload()
        await page.locator("#conversation-list button", has_text=alice_name).click()
        await expect(page.locator("#chat-title")).to_have_text(alice_name)
        await expect(page.locator("#chat-notices li")).to_have_count(0)  # first use: trusted

        # A new device: a notice before anything is sent to it.
        spare = DeviceKeys.generate()
        await alice.register_device(a2, public_key=spare.public_key, signing_key=spare.signing_key)
        await send(page, "to both of your devices")
        await expect(page.locator("#chat-notices")).to_contain_text(
            f"{alice_name} added a new device"
        )
        await expect(
            page.locator("#messages li.mine", has_text="to both").locator(".ticks")
        ).to_have_attribute("data-status", "sent")

        # A known device id with different keys (the API never allows it: the server is
        # lying): a prominent warning, and nothing is sent.
        devices = await alice.devices(alice.user_id)
        forged = DeviceKeys.generate()
        for device in devices:
            if device["device_id"] == a1:
                device["public_key"] = forged.public_key
        body = json.dumps(devices)

        async def lie(route: Any) -> None:
            await route.fulfill(status=200, content_type="application/json", body=body)

        await page.route(f"**/api/users/{alice.user_id}/devices", lie)
        await send(page, "this must not be sent")
        warning = page.locator("#key-warning")
        await expect(warning).to_be_visible()
        await expect(warning).to_contain_text("changed")
        await expect(
            page.locator("#messages li.mine", has_text="must not be sent").locator(".ticks")
        ).to_have_attribute("data-status", "failed")
        await screenshot(page, "bob-key-change-warning")
        history = await alice.history((await alice.open_conversation(bob["id"]))["id"])
        assert len(history["messages"]) == 1
