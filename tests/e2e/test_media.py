"""Pictures in two browsers: an upload shows as a thumbnail on the other side, stripped
of its EXIF, and a shared slideshow stays on the same slide in both."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from playwright.async_api import expect

from tests.e2e.conftest import E2EServer, login, screenshot, start_chat, unique

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "media"
GPS_IFD = 0x8825


def _their_media(page: Any) -> Any:
    return page.locator("#messages li.theirs figure.media img")


async def _wait_loaded(image: Any) -> None:
    """Until the <img> has really decoded a picture (a broken link never does)."""
    handle = await image.element_handle()
    await image.page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0 && img.src !== ''", arg=handle
    )


async def _attach(page: Any, name: str) -> None:
    await page.locator("#media-input").set_input_files(str(FIXTURES / name))


async def _pair(new_page: Any) -> tuple[Any, Any, str]:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice, bob = await new_page(), await new_page(phone=True)
    await login(alice, alice_name)
    await login(bob, bob_name)
    await start_chat(alice, bob_name)
    return alice, bob, alice_name


async def test_an_uploaded_photo_shows_as_a_thumbnail_and_is_stored_without_exif(
    new_page: Any, e2e_server: E2EServer
) -> None:
    source = Image.open(FIXTURES / "exif_gps.jpg")
    assert source.getexif().get_ifd(GPS_IFD), "the fixture must carry GPS EXIF"
    alice, bob, alice_name = await _pair(new_page)

    await _attach(alice, "exif_gps.jpg")
    mine = alice.locator("#messages li.mine figure.media img")
    await expect(mine).to_have_count(1)
    await expect(alice.locator("#messages li.mine .ticks")).to_have_attribute(
        "data-status", "delivered"
    )

    await bob.locator("#conversation-list button", has_text=alice_name).click()
    thumbnail = _their_media(bob)
    await expect(thumbnail).to_be_visible()
    await _wait_loaded(thumbnail)
    src = await thumbnail.get_attribute("src")
    href = await bob.locator("#messages li.theirs figure.media a").get_attribute("href")
    assert src is not None
    assert href is not None
    assert src != href, "the list shows the thumbnail, the link the full image"
    assert await thumbnail.evaluate("(img) => img.naturalWidth") <= 512
    await screenshot(bob, "bob-media-thumbnail-phone")

    # The signed URLs the browser got serve the stored files: no EXIF left in either.
    async with httpx.AsyncClient(base_url=e2e_server.base_url) as http:
        full, thumb = await http.get(href), await http.get(src)
    assert full.status_code == 200
    assert thumb.status_code == 200
    for answer in (full, thumb):
        stored = Image.open(io.BytesIO(answer.content))
        exif = stored.getexif()
        assert not exif.get_ifd(GPS_IFD)
        assert "exif" not in stored.info
        assert b"Exif\x00\x00" not in answer.content
    assert Image.open(io.BytesIO(full.content)).size == source.size


async def test_a_slideshow_stays_on_the_same_slide_in_both_browsers(
    new_page: Any, e2e_server: E2EServer
) -> None:
    alice, bob, alice_name = await _pair(new_page)
    await _attach(alice, "hopper.jpg")
    await bob.locator("#conversation-list button", has_text=alice_name).click()
    await expect(_their_media(bob)).to_have_count(1)
    for n, name in enumerate(("flower2.webp", "exif_gps.jpg"), start=2):
        await _attach(alice, name)
        await expect(_their_media(bob)).to_have_count(n)

    await alice.get_by_role("button", name="Slideshow").click()
    shows = [page.locator("#slideshow") for page in (alice, bob)]
    for page, shown in zip((alice, bob), shows, strict=True):
        await expect(shown).to_be_visible()
        await expect(page.locator("#slide-counter")).to_have_text("1 / 3")
        await _wait_loaded(page.locator("#slide-image"))
    await screenshot(bob, "bob-slideshow-phone")

    # Bob moves on; alice's view follows.
    await bob.get_by_role("button", name="Next").click()
    await expect(alice.locator("#slide-counter")).to_have_text("2 / 3")
    await expect(bob.locator("#slide-counter")).to_have_text("2 / 3")
    version = await shows[0].get_attribute("data-version")
    await expect(shows[1]).to_have_attribute("data-version", version or "")
    first_media = await shows[0].get_attribute("data-media-id")

    # Both press at once: whichever way the server orders them, both browsers end on
    # the same slide and version.
    await asyncio.gather(
        alice.get_by_role("button", name="Previous").click(),
        bob.get_by_role("button", name="Next").click(),
    )
    await expect(shows[0]).not_to_have_attribute("data-version", version or "")
    await expect(shows[1]).not_to_have_attribute("data-version", version or "")
    await asyncio.sleep(0.5)  # any late frame would have landed by now
    a_version, b_version = [await s.get_attribute("data-version") for s in shows]
    a_index, b_index = [await s.get_attribute("data-index") for s in shows]
    assert (a_version, a_index) == (b_version, b_index)
    # Either one press was stale (one step from slide 2), or the second was made after
    # the first had arrived (both steps applied, back on slide 2).
    assert a_version is not None
    assert a_index is not None
    steps = int(a_version) - int(version or "0")
    assert (steps, a_index) in {(1, "0"), (1, "2"), (2, "1")}
    assert (
        await alice.locator("#slide-counter").text_content()
        == await bob.locator("#slide-counter").text_content()
    )
    # And both show that slide's picture (the one the state names, not the old one).
    media_id = await shows[0].get_attribute("data-media-id")
    assert media_id is not None
    assert (media_id == first_media) == (a_index == "1")
    for page in (alice, bob):
        await expect(page.locator("#slide-image")).to_have_attribute("data-media-id", media_id)

    await alice.get_by_role("button", name="End slideshow").click()
    await expect(shows[0]).to_be_hidden()
    await expect(shows[1]).to_be_hidden()
