"""The web client and the Python SDK (client.py + omninudge_adapters.crypto) read each
other's messages, through the real server."""

from __future__ import annotations

import json
import uuid
from typing import Any

from playwright.async_api import expect

from omninudge_adapters.crypto import DeviceKeys, open_envelope, seal
from omninudge_server.client import Client
from tests.e2e.conftest import E2EServer, login, send, unique


async def _sdk_user(base_url: str, name: str, device_id: str) -> tuple[Client, DeviceKeys]:
    client = await Client.dev_login(base_url, name, device_id=device_id)
    keys = DeviceKeys.generate()
    await client.register_device(
        device_id, public_key=keys.public_key, signing_key=keys.signing_key
    )
    return client, keys


async def test_sdk_and_browser_read_each_other_and_a_stale_device_list_is_retried(
    new_page: Any, e2e_server: E2EServer
) -> None:
    web_name, sdk_name = unique("web"), unique("sdk")
    sdk1, sdk2 = unique("sdk-laptop"), unique("sdk-phone")
    page = await new_page()
    await login(page, web_name)
    sdk, keys = await _sdk_user(e2e_server.base_url, sdk_name, sdk1)
    async with sdk:
        web_user = await sdk.user_by_name(web_name)
        conversation = await sdk.open_conversation(web_user["id"])
        devices = await sdk.devices(web_user["id"]) + await sdk.devices(sdk.user_id)
        client_msg_id = str(uuid.uuid4())
        envelope = seal(
            {"type": "text", "body": "hello from the SDK ✓"},
            conversation_id=conversation["id"],
            client_msg_id=client_msg_id,
            sender_device_id=sdk1,
            sender_signing_key=keys.signing_private,
            recipients={d["device_id"]: d["public_key"] for d in devices},
        )
        await sdk.send(conversation["id"], envelope, client_msg_id=client_msg_id)

        await page.locator("#conversation-list button", has_text=sdk_name).click()
        mine = page.locator("#messages li.theirs", has_text="hello from the SDK ✓")
        await expect(mine).to_have_attribute("data-verified", "true")

        # The SDK user adds a device, and the browser's first device list is stale (the
        # route serves the old list once): the server answers 409 device_mismatch, the
        # client refreshes the lists and seals again, for both SDK devices.
        second = DeviceKeys.generate()
        stale = json.dumps(await sdk.devices(sdk.user_id))
        await sdk.register_device(
            sdk2, public_key=second.public_key, signing_key=second.signing_key
        )
        served_stale: list[str] = []

        async def serve_stale_once(route: Any) -> None:
            if served_stale:
                await route.continue_()
                return
            served_stale.append(route.request.url)
            await route.fulfill(status=200, content_type="application/json", body=stale)

        await page.route(f"**/api/users/{sdk.user_id}/devices", serve_stale_once)
        await send(page, "hello from the browser ✓")
        sent = page.locator("#messages li.mine", has_text="hello from the browser ✓")
        await expect(sent.locator(".ticks")).to_have_attribute("data-status", "sent")
        assert served_stale, "the stale device list was never served"
        assert b"POST /api/messages -> 409" in e2e_server.log_file.read_bytes()
        await expect(page.locator("#chat-notices")).to_contain_text(
            f"{sdk_name} added a new device"
        )

        history = await sdk.history(conversation["id"])
        from_web = [m for m in history["messages"] if m["sender_id"] == web_user["id"]]
        assert len(from_web) == 1
        message = from_web[0]
        web_devices = await sdk.devices(web_user["id"])
        signing = next(
            d["signing_key"]
            for d in web_devices
            if d["device_id"] == message["envelope"]["sender_device"]
        )
        for device_id, device_keys in ((sdk1, keys), (sdk2, second)):
            plaintext = open_envelope(
                message["envelope"],
                conversation_id=message["conversation_id"],
                client_msg_id=message["client_msg_id"],
                my_device_id=device_id,
                my_ecdh_private_key=device_keys.ecdh_private,
                sender_signing_jwk=signing,
            )
            assert plaintext == {"type": "text", "body": "hello from the browser ✓"}
