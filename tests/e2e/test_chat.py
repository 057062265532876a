"""Two people in two browsers: live chat both ways, receipts, typing, unread counts,
catching up after being away, and a canary that never reaches the server in clear."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.e2e.conftest import E2EServer, login, screenshot, send, start_chat, unique


def _files_of(directory: Path) -> dict[str, bytes]:
    """Every file of the server's data directory (the SQLite database, its WAL...)."""
    return {p.name: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _their(page: Any, text: str) -> Any:
    return page.locator("#messages li.theirs .text", has_text=text)


def _ticks_of(page: Any, text: str) -> Any:
    return page.locator("#messages li.mine", has_text=text).locator(".ticks")


async def test_two_browsers_chat_live_with_receipts_typing_and_catch_up(
    new_page: Any, e2e_server: E2EServer
) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    canary = f"canary-{unique('plain')}-Grüße-👋"
    alice = await new_page()
    bob = await new_page(phone=True)
    await login(bob, bob_name)
    await login(alice, alice_name)

    await start_chat(alice, bob_name)
    await expect(alice.locator("#chat-kind")).to_have_text("End-to-end encrypted")
    await send(alice, f"hello bob {canary}")
    await expect(_ticks_of(alice, canary)).to_have_attribute("data-status", "delivered")

    # Bob's list shows the new conversation with one unread message.
    entry = bob.locator("#conversation-list button", has_text=alice_name)
    await expect(entry.locator(".unread")).to_have_text("1")
    await screenshot(bob, "bob-unread-phone")
    await entry.click()
    await expect(_their(bob, canary)).to_be_visible()
    # Bob has the conversation open: alice's message turns to read.
    await expect(_ticks_of(alice, canary)).to_have_attribute("data-status", "read")

    # Typing, then a live reply.
    await bob.get_by_label("Message", exact=True).press_sequentially("hi al", delay=20)
    await expect(alice.locator("#typing")).to_have_text(f"{bob_name} is typing…")
    await bob.get_by_label("Message", exact=True).press_sequentially("ice", delay=20)
    await bob.get_by_label("Message", exact=True).press("Enter")
    await expect(_their(alice, "hi alice")).to_be_visible()
    await expect(alice.locator("#typing")).to_have_text("")
    await expect(_ticks_of(bob, "hi alice")).to_have_attribute("data-status", "read")
    await screenshot(alice, "alice-chat-desktop")
    await screenshot(bob, "bob-chat-phone")

    # Bob drops off the network; alice keeps writing; bob comes back and catches up
    # over the resumed WebSocket without reloading.
    await bob.context.set_offline(True)
    await expect(bob.locator("#conn-status")).to_have_attribute("data-status", "offline")
    await send(alice, "while you were away 1")
    await send(alice, "while you were away 2")
    await expect(_ticks_of(alice, "away 2")).to_have_attribute("data-status", "sent")
    await bob.context.set_offline(False)
    await expect(bob.locator("#conn-status")).to_have_attribute("data-status", "online")
    await expect(_their(bob, "while you were away 2")).to_be_visible()
    await expect(bob.locator("#messages li.theirs", has_text="while you were away")).to_have_count(
        2
    )
    await expect(_ticks_of(alice, "away 2")).to_have_attribute("data-status", "read")

    # Bob closes the page; alice writes; bob opens the app again (the session cookie
    # logs him in, resume_from comes from IndexedDB) and sees it, once.
    await bob.close()
    await send(alice, "after you closed the tab")
    await expect(_ticks_of(alice, "closed the tab")).to_have_attribute("data-status", "sent")
    bob = await bob.context.new_page()
    await bob.goto("/")
    await expect(bob.locator("#conn-status")).to_have_attribute("data-status", "online")
    await bob.locator("#conversation-list button", has_text=alice_name).click()
    await expect(_their(bob, "after you closed the tab")).to_have_count(1)
    await expect(_their(bob, canary)).to_have_count(1)
    await screenshot(bob, "bob-after-reconnect-phone")

    # The canary went browser to browser, and the server never saw it in any form.
    needle = canary.encode("utf-8")
    assert e2e_server.recorder.size() > 0
    assert not e2e_server.recorder.contains(needle)
    assert needle not in e2e_server.log_file.read_bytes()
    assert b"/api/messages" in e2e_server.log_file.read_bytes()  # the log is really written
    files = await asyncio.to_thread(_files_of, Path(e2e_server.settings.data_dir))
    assert any(name.startswith("omninudge.db") for name in files)
    for name, content in files.items():
        assert needle not in content, name
    # Redis (shared state, and every fan-out payload published while the test ran).
    tap = e2e_server.redis
    assert tap is not None
    stored = await tap.dump()
    assert stored, "the server keeps nothing in Redis: the scan would prove nothing"
    for key, value in stored.items():
        assert needle not in key + value, key
    # Fan-out carries "new events up to seq N" notices and live frames (typing...).
    assert any(b'"k":"events"' in p for p in tap.published), "no fan-out went through Redis"
    for payload in tap.published:
        assert needle not in payload


async def test_history_pages_back_with_load_older(new_page: Any, e2e_server: E2EServer) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    bob = await new_page()
    await login(bob, bob_name)
    # Alice writes 35 messages from her own browser before bob opens the chat.
    alice = await new_page()
    await login(alice, alice_name)
    await start_chat(alice, bob_name)
    for n in range(35):
        await send(alice, f"numbered message {n:02d}")
    await expect(_ticks_of(alice, "message 34")).to_have_attribute("data-status", "delivered")
    await bob.locator("#conversation-list button", has_text=alice_name).click()
    await expect(_their(bob, "message 34")).to_be_visible()
    await expect(bob.locator("#messages li")).to_have_count(30)
    await bob.get_by_role("button", name="Load older messages").click()
    await expect(bob.locator("#messages li")).to_have_count(35)
    await expect(bob.locator("#messages li").first).to_contain_text("numbered message 00")
    await expect(bob.get_by_role("button", name="Load older messages")).to_be_hidden()
