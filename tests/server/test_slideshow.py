"""Synchronised slideshows over the WebSocket, end to end (real uvicorn, SDK clients)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from omninudge_server.client import Client, Stream
from tests.server.conftest import Person, RunningServer, login, run_server
from tests.server.media_helpers import tiny_jpeg, upload

COLOURS = ["red", "green", "blue", "white", "black", "yellow", "purple", "orange", "grey", "pink"]


async def _media(person: Person, count: int, offset: int = 0) -> list[str]:
    ids = []
    for i in range(count):
        r = await upload(person.http, tiny_jpeg(COLOURS[(i + offset) % len(COLOURS)]))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def _client(server: RunningServer, person: Person) -> Client:
    return Client(server.base_url, person.token, device_id=person.device_id)


async def _next(stream: Stream, *types: str, wait_s: float = 5.0) -> dict[str, Any]:
    """The next frame of one of ``types`` (presence and others skipped)."""
    while True:
        frame = await stream.recv(wait_s)
        if frame["type"] in types:
            return frame


async def _state(stream: Stream, version: int | None = None) -> dict[str, Any]:
    """The next slideshow state (of ``version`` if given)."""
    while True:
        frame = await _next(stream, "slideshow")
        assert isinstance(frame["seq"], int)
        if version is None or frame["state"]["version"] == version:
            state: dict[str, Any] = frame["state"]
            return state


@pytest.fixture
async def pair(server: RunningServer, people: Any) -> tuple[Person, Person, str]:
    alice, bob = await people(), await people()
    conversation_id = await alice.conversation_with(bob)
    return alice, bob, conversation_id


async def test_two_clients_navigating_against_each_other_end_on_the_same_state(
    server: RunningServer, pair: tuple[Person, Person, str]
) -> None:
    alice, bob, conversation_id = pair
    media = await _media(alice, 5) + await _media(bob, 5, offset=5)  # both own some
    a, b = _client(server, alice), _client(server, bob)
    commands_each = 20
    async with a.connect() as sa, b.connect() as sb:
        await sa.slideshow_start(conversation_id, media)
        start_a, start_b = await _state(sa, 1), await _state(sb, 1)
        assert start_a == start_b
        assert (start_a["phase"], start_a["index"], start_a["media_ids"]) == ("active", 0, media)

        async def drive(stream: Stream, seed: int) -> dict[str, Any]:
            """Fire navigation based on the latest version this side knows, while
            reading what comes back; returns what the side saw."""
            rng = random.Random(seed)
            seen: dict[int, dict[str, Any]] = {1: start_a}
            order: list[int] = []
            refused = [0]
            known = [1]

            async def read() -> None:
                while True:
                    frame = await _next(stream, "slideshow", "error")
                    if frame["type"] == "error":
                        assert frame["code"] == "stale_command", frame
                        refused[0] += 1
                        state = frame["state"]  # the refusal carries the current state
                    else:
                        state = frame["state"]
                        order.append(state["version"])
                        seen[state["version"]] = state
                    known[0] = max(known[0], state["version"])

            reader = asyncio.create_task(read())
            for _ in range(commands_each):
                action = rng.choice(["next", "prev", "goto", "goto", "pause", "resume"])
                target = {"index": rng.randrange(10)} if action == "goto" else {}
                await stream.slideshow_nav(conversation_id, action, known[0], **target)
                await asyncio.sleep(rng.uniform(0, 0.02))
            await asyncio.sleep(1.0)  # let the last answers and broadcasts arrive
            reader.cancel()
            return {"seen": seen, "order": order, "refused": refused[0]}

        seen_a, seen_b = await asyncio.gather(drive(sa, 1), drive(sb, 2))

    final_version = max(seen_a["seen"])
    assert final_version == max(seen_b["seen"])
    assert seen_a["seen"][final_version] == seen_b["seen"][final_version]
    # Every state was delivered to both sides, identical, and in version order.
    assert seen_a["seen"] == seen_b["seen"]
    assert seen_a["order"] == sorted(seen_a["order"]) == list(range(2, final_version + 1))
    assert seen_b["order"] == seen_a["order"]
    # Each command was either applied (one version each) or refused as stale.
    accepted = final_version - 1
    assert accepted + seen_a["refused"] + seen_b["refused"] == 2 * commands_each
    await a.aclose()
    await b.aclose()


async def test_a_stale_command_is_refused_with_the_current_state(
    server: RunningServer, pair: tuple[Person, Person, str]
) -> None:
    alice, _, conversation_id = pair
    media = await _media(alice, 3)
    a = _client(server, alice)
    async with a.connect() as sa:
        await sa.slideshow_start(conversation_id, media)
        await _state(sa, 1)
        await sa.slideshow_nav(conversation_id, "next", 1)
        await _state(sa, 2)
        await sa.slideshow_nav(conversation_id, "next", 1)  # made before version 2
        error = await _next(sa, "error")
    assert error["code"] == "stale_command"
    assert error["ref"] == conversation_id
    assert error["current_version"] == 2
    assert (error["state"]["version"], error["state"]["index"]) == (2, 1)
    await a.aclose()


async def test_a_reconnecting_client_resumes_the_slideshow_from_the_stream(
    server: RunningServer, pair: tuple[Person, Person, str]
) -> None:
    alice, bob, conversation_id = pair
    media = await _media(alice, 10)
    a, b = _client(server, alice), _client(server, bob)
    async with a.connect() as sa:
        async with b.connect() as sb:
            await sa.slideshow_start(conversation_id, media)
            await _state(sb, 1)
            await sb.ack()
            resume_from = sb.resume_from
        # Bob is gone; Alice moves on.
        await sa.slideshow_nav(conversation_id, "next", 1)
        await sa.slideshow_nav(conversation_id, "goto", 2, index=7)
        final = await _state(sa, 3)
    async with b.connect(resume_from=resume_from) as sb:
        replayed = [await _state(sb), await _state(sb)]
    assert [s["version"] for s in replayed] == [2, 3]
    assert replayed[-1] == final
    assert final["index"] == 7
    await a.aclose()
    await b.aclose()


async def test_a_block_ends_the_running_show_and_nobody_can_drive_it(
    server: RunningServer, pair: tuple[Person, Person, str]
) -> None:
    alice, bob, conversation_id = pair
    media = await _media(alice, 3)
    a, b = _client(server, alice), _client(server, bob)
    async with a.connect() as sa, b.connect() as sb:
        await sa.slideshow_start(conversation_id, media)
        await _state(sa, 1)
        assert (await bob.http.put(f"/api/blocks/{alice.id}")).status_code == 204
        for stream in (sa, sb):  # both see the show end, with the blocker in control
            ended = await _state(stream, 2)
            assert (ended["phase"], ended["controller"]) == ("ended", bob.id)
        await sa.slideshow_nav(conversation_id, "next", 2)
        assert (await _next(sa, "error"))["code"] == "blocked"
        await sb.slideshow_nav(conversation_id, "next", 2)  # the blocker cannot either
        assert (await _next(sb, "error"))["code"] == "blocked"
        await sa.slideshow_start(conversation_id, media)
        assert (await _next(sa, "error"))["code"] == "blocked"
    await a.aclose()
    await b.aclose()


async def test_outsiders_and_foreign_media_are_refused(
    server: RunningServer, pair: tuple[Person, Person, str], people: Any
) -> None:
    alice, _, conversation_id = pair
    carol = await people()
    mine, carols = await _media(alice, 1), await _media(carol, 1)
    c, a = _client(server, carol), _client(server, alice)
    async with c.connect() as sc, a.connect() as sa:
        await sc.slideshow_start(conversation_id, mine)
        assert (await _next(sc, "error"))["code"] == "not_found"
        await sa.slideshow_start(conversation_id, mine + carols)
        assert (await _next(sa, "error"))["code"] == "forbidden"
        await sa.slideshow_start(conversation_id, ["no-such-media"])
        assert (await _next(sa, "error"))["code"] == "forbidden"
        await sa.slideshow_nav(conversation_id, "next", 0)  # nothing started
        assert (await _next(sa, "error"))["code"] == "illegal_transition"
    await a.aclose()
    await c.aclose()


async def test_autoplay_is_driven_by_the_server_and_stops_on_the_last_slide(
    server: RunningServer, pair: tuple[Person, Person, str]
) -> None:
    alice, bob, conversation_id = pair
    media = await _media(alice, 3)
    a, b = _client(server, alice), _client(server, bob)
    async with a.connect() as sa, b.connect() as sb:
        await sa.slideshow_start(conversation_id, media, autoplay_s=1)
        states = [await _state(sb, 1), await _state(sb, 2), await _state(sb, 3)]
        assert [s["index"] for s in states] == [0, 1, 2]
        assert states[0].get("next_tick_at") is not None
        assert states[-1].get("next_tick_at") is None  # absent: no timer
        assert {s["controller"] for s in states} == {alice.id}
        with pytest.raises(TimeoutError):  # no more ticks after the last slide
            await _next(sb, "slideshow", wait_s=1.5)
    await a.aclose()
    await b.aclose()


async def test_autoplay_and_state_survive_a_restart(tmp_path: Path) -> None:
    async with run_server({}, tmp_path) as first:
        alice, bob = await login(first), await login(first)
        conversation_id = await alice.conversation_with(bob)
        media = await _media(alice, 4)
        a = _client(first, alice)
        async with a.connect() as sa:
            await sa.slideshow_start(conversation_id, media, autoplay_s=1)
            await _state(sa, 1)
        await a.aclose()
        await alice.close()
        await bob.close()
    # A new process on the same data: it learns the show from the stream and the
    # autoplay timer is rearmed when a participant connects.
    async with run_server({}, tmp_path) as second:
        a = Client(second.base_url, alice.token)
        async with a.connect(resume_from=0) as sa:
            assert (await _state(sa, 1))["index"] == 0  # replayed
            last = await _state(sa, 4)
            assert last["index"] == 3
            assert last.get("next_tick_at") is None
            await sa.slideshow_nav(conversation_id, "prev", 4)  # continues from version 4
            moved = await _state(sa, 5)
            assert moved["index"] == 2
        await a.aclose()
