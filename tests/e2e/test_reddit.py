"""Reddit in the browser, against the Reddit stand-in: the "Log in with Reddit" button,
subreddit browsing with the "on OmniNudge" badge, and a chat with a Reddit-only author
whose messages carry the "sent via Reddit — not encrypted" badge."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from playwright.async_api import expect

from omninudge_adapters.reddit.testing import RedditStandIn, running_standin
from omninudge_core.models import User
from tests.e2e.conftest import (
    TIMEOUT_MS,
    E2EServer,
    loopback_socket,
    screenshot,
    serving,
    unique,
)
from tests.server.reddit_env import CLIENT_ID, CLIENT_SECRET, FIXTURES, reddit_env

_NAME = re.compile(r"^[A-Za-z0-9_-]{3,20}$")


@attrs.frozen
class RedditE2E:
    standin: RedditStandIn
    server: E2EServer


@pytest.fixture(scope="module")
async def reddit_e2e(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedditE2E]:
    """Our server with REDDIT_* pointing at the stand-in; Reddit sends the browser back
    to our own ``/api/auth/reddit/callback``."""
    sock = loopback_socket()
    callback = f"http://127.0.0.1:{sock.getsockname()[1]}/api/auth/reddit/callback"
    standin = RedditStandIn(FIXTURES)
    standin.register_app(CLIENT_ID, CLIENT_SECRET, callback)
    data_dir = tmp_path_factory.mktemp("omninudge-e2e-reddit")
    async with running_standin(standin) as url:
        env = reddit_env(url, REDDIT_REDIRECT_URI=callback)
        async with serving(env, data_dir, sock=sock) as server:
            yield RedditE2E(standin, server)


@pytest.fixture
async def reddit_page(browser: Any, reddit_e2e: RedditE2E) -> AsyncIterator[Any]:
    errors: list[str] = []
    context = await browser.new_context(
        viewport={"width": 1100, "height": 760}, base_url=reddit_e2e.server.base_url
    )
    context.set_default_timeout(TIMEOUT_MS)
    context.on("weberror", lambda web_error: errors.append(str(web_error.error)))
    try:
        yield await context.new_page()
    finally:
        with contextlib.suppress(Exception):
            await context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def _authors(standin: RedditStandIn) -> list[str]:
    """Distinct usable author names of r/popular's hot listing, in listing order."""
    names: list[str] = []
    for child in standin.subreddits["popular"]["hot"]:
        author = child["data"]["author"]
        if _NAME.fullmatch(author) and author not in names:
            names.append(author)
    return names


async def test_reddit_login_browsing_badges_and_a_chat_relayed_through_reddit(
    reddit_page: Any, reddit_e2e: RedditE2E
) -> None:
    standin, server = reddit_e2e.standin, reddit_e2e.server
    page = reddit_page
    me = unique("redditor")
    standin.add_user(me)
    standin.consent_user = me  # the stand-in's authorize page consents at once as `me`
    member, outsider = _authors(standin)[:2]
    standin.add_user(outsider)
    services = server.services
    await services.storage.users.create(
        User(id=services.new_id(), username=member, created_at=services.clock())
    )

    # Reddit is configured and dev login is not: the page offers only the Reddit button.
    await page.goto("/")
    await expect(page.get_by_label("Username (development login)")).to_be_hidden()
    await page.get_by_role("link", name="Log in with Reddit").click()
    await expect(page.locator("#conn-status")).to_have_attribute("data-status", "online")
    await expect(page.locator("#me")).to_have_text(f"u/{me}")

    await page.get_by_role("button", name="Browse subreddits").click()
    await page.get_by_label("r/").fill("popular")
    await page.get_by_role("button", name="Show").click()
    posts = page.locator("#posts li.post")
    await expect(posts.first).to_be_visible()
    by_member = posts.filter(has_text=f"u/{member} ·")
    by_outsider = posts.filter(has_text=f"u/{outsider} ·")
    await expect(by_member.first.locator(".badge.on-platform")).to_have_text("on OmniNudge")
    await expect(by_outsider.first.locator(".badge.on-platform")).to_have_count(0)
    assert await posts.locator(".badge.on-platform").count() == await by_member.count()
    await screenshot(page, "reddit-browse")

    # A chat with the Reddit-only author: not encrypted, said so on the chat and on
    # each message, and delivered to their Reddit inbox.
    await by_outsider.first.get_by_role("button", name=f"Message u/{outsider}").click()
    await expect(page.locator("#chat-title")).to_have_text(outsider)
    await expect(page.locator("#chat-kind")).to_have_text("Reddit chat: not encrypted")
    await expect(page.get_by_role("button", name="Slideshow")).to_be_hidden()
    await expect(page.locator("#attach-label")).to_be_hidden()
    text = f"hello over reddit {unique('m')}"
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_label("Message", exact=True).press("Enter")
    mine = page.locator("#messages li.mine", has_text=text)
    await expect(mine.locator(".badge.reddit")).to_have_text("sent via Reddit — not encrypted")
    await expect(page.locator("#conversation-list .badge.reddit")).to_have_text("via Reddit")
    await screenshot(page, "reddit-chat")
    for _ in range(200):
        if any(text in m.get("body", "") for m in standin.mail.inbox_of(outsider)):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the message never reached the Reddit inbox")

    # After a reload the stored message still says where it went.
    await page.reload()
    await page.locator("#conversation-list button", has_text=outsider).click()
    await expect(page.locator("#messages li", has_text=text).locator(".badge.reddit")).to_have_text(
        "sent via Reddit — not encrypted"
    )


def test_the_fixture_listing_has_two_usable_authors() -> None:
    # Guards the test above against a re-recorded fixture.
    assert len(_authors(RedditStandIn(Path(FIXTURES)))) >= 2
