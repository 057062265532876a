"""Presence contract: per-connection TTLs; last_seen when the last connection goes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from omninudge_core.ports import Presence
from tests.contract.ports_fixtures import PRESENCE, Harness


@pytest.fixture(params=sorted(PRESENCE))
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[Harness[Presence]]:
    async with PRESENCE[request.param]() as harness:
        yield harness


async def test_a_user_never_seen_is_offline_with_no_last_seen(
    presence: Harness[Presence],
) -> None:
    status = await presence.port.status(["ghost"])
    assert status["ghost"].online is False
    assert status["ghost"].last_seen is None


async def test_a_heartbeat_makes_the_user_online(presence: Harness[Presence]) -> None:
    await presence.port.heartbeat("alice", "c1", ttl_s=30)
    status = await presence.port.status(["alice", "bob"])
    assert status["alice"].online is True
    assert status["bob"].online is False


async def test_user_stays_online_until_the_last_connection_disconnects(
    presence: Harness[Presence],
) -> None:
    await presence.port.heartbeat("alice", "c1", ttl_s=30)
    await presence.port.heartbeat("alice", "c2", ttl_s=30)
    await presence.port.disconnected("alice", "c1")
    assert (await presence.port.status(["alice"]))["alice"].online is True
    before = presence.now()
    await presence.port.disconnected("alice", "c2")
    info = (await presence.port.status(["alice"]))["alice"]
    assert info.online is False
    assert info.last_seen is not None
    assert before - timedelta(seconds=1) <= info.last_seen <= presence.now() + timedelta(seconds=1)


async def test_a_connection_without_heartbeats_expires_after_its_ttl(
    presence: Harness[Presence],
) -> None:
    started = presence.now()
    await presence.port.heartbeat("alice", "c1", ttl_s=0.3)
    await presence.advance(0.8)
    info = (await presence.port.status(["alice"]))["alice"]
    assert info.online is False
    assert info.last_seen is not None
    assert started - timedelta(seconds=1) <= info.last_seen <= presence.now()


async def test_heartbeats_keep_a_connection_alive(presence: Harness[Presence]) -> None:
    await presence.port.heartbeat("alice", "c1", ttl_s=0.6)
    await presence.advance(0.4)
    await presence.port.heartbeat("alice", "c1", ttl_s=0.6)
    await presence.advance(0.4)
    assert (await presence.port.status(["alice"]))["alice"].online is True


async def test_ttls_are_per_connection(presence: Harness[Presence]) -> None:
    await presence.port.heartbeat("alice", "short", ttl_s=0.3)
    await presence.port.heartbeat("alice", "long", ttl_s=30)
    await presence.advance(0.8)
    assert (await presence.port.status(["alice"]))["alice"].online is True
    await presence.port.disconnected("alice", "long")
    assert (await presence.port.status(["alice"]))["alice"].online is False


async def test_disconnecting_an_unknown_connection_changes_nothing(
    presence: Harness[Presence],
) -> None:
    await presence.port.heartbeat("alice", "c1", ttl_s=30)
    await presence.port.disconnected("alice", "nope")
    await presence.port.disconnected("ghost", "nope")
    status = await presence.port.status(["alice", "ghost"])
    assert status["alice"].online is True
    assert status["ghost"].online is False
    assert status["ghost"].last_seen is None


async def test_status_answers_for_every_user_asked(presence: Harness[Presence]) -> None:
    for n in range(5):
        await presence.port.heartbeat(f"u{n}", "c", ttl_s=30)
    status = await presence.port.status([f"u{n}" for n in range(8)])
    assert sorted(status) == [f"u{n}" for n in range(8)]
    assert [status[f"u{n}"].online for n in range(8)] == [True] * 5 + [False] * 3
