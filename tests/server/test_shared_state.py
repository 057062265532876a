"""The server's Redis degradation rules (``omninudge_server.shared_state``) against a
private redis-server that the tests stop and start again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from omninudge_adapters.memory.fanout import MemoryFanOut
from omninudge_adapters.memory.revocations import MemoryRevocations
from omninudge_adapters.redis import RedisAdapters, open_redis
from omninudge_core.models import StreamEvent
from omninudge_server.shared_state import (
    ResilientFanOut,
    ResilientPresence,
    ResilientRevocations,
)
from tests.services_redis import RedisServer


class Heads:
    """An EventStore whose stream heads the test sets (only ``last_seq`` is used)."""

    def __init__(self) -> None:
        self.heads: dict[str, int] = {}

    async def last_seq(self, user_id: str) -> int:
        return self.heads.get(user_id, 0)

    async def append(self, events: object) -> list[StreamEvent]:
        raise NotImplementedError

    async def read(self, user_id: str, *, after: int, limit: int) -> list[StreamEvent]:
        raise NotImplementedError


@pytest.fixture
async def private(
    redis_server_factory: Callable[[], RedisServer],
) -> AsyncIterator[tuple[RedisServer, RedisAdapters]]:
    server = redis_server_factory()
    async with open_redis(server.url, prefix="shared-state-test:") as adapters:
        yield server, adapters


async def test_revocation_fails_open_but_a_local_logout_holds_and_reaches_redis_later(
    private: tuple[RedisServer, RedisAdapters],
) -> None:
    server, redis = private
    revocations = ResilientRevocations(redis.revocations, MemoryRevocations())
    until = datetime.now(UTC) + timedelta(hours=1)
    server.stop()
    assert await revocations.is_revoked("someone-elses-token") is False  # fail-open
    await revocations.revoke("my-token", until)  # does not raise
    assert await revocations.is_revoked("my-token") is True
    assert revocations.pending == 1
    server.start()
    assert await revocations.is_revoked("my-token") is True  # flushes the pending logout
    assert revocations.pending == 0
    assert await redis.revocations.is_revoked("my-token") is True


async def test_presence_heartbeats_do_not_fail_while_redis_is_down(
    private: tuple[RedisServer, RedisAdapters],
) -> None:
    server, redis = private
    presence = ResilientPresence(redis.presence)
    server.stop()
    await presence.heartbeat("u1", "c1", 30)
    await presence.disconnected("u1", "c1")
    assert (await presence.status(["u1"]))["u1"].online is None
    server.start()
    await presence.heartbeat("u1", "c1", 30)
    assert (await presence.status(["u1"]))["u1"].online is True


async def test_fanout_degrades_to_this_process_logs_once_and_catches_up(
    private: tuple[RedisServer, RedisAdapters], caplog: pytest.LogCaptureFixture
) -> None:
    server, redis = private
    heads = Heads()
    fanout = ResilientFanOut(redis.fanout, MemoryFanOut(), heads, poll_s=0.02)
    fanout.start()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    subscription = await fanout.subscribe("u1", got.put_nowait)
    try:
        await fanout.publish("u1", b"live")
        assert await asyncio.wait_for(got.get(), 5) == b"live"

        server.stop()
        with caplog.at_level(logging.WARNING, logger="omninudge.shared_state"):
            for n in range(5):
                await fanout.publish("u1", b"local %d" % n)  # never raises
        assert [got.get_nowait() for _ in range(5)] == [b"local %d" % n for n in range(5)]
        outage_lines = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
        assert len(outage_lines) == 1

        heads.heads["u1"] = 42
        server.start()
        notice = await asyncio.wait_for(got.get(), 10)
        while orjson.loads(notice).get("up_to") != 42:
            notice = await asyncio.wait_for(got.get(), 10)
        assert orjson.loads(notice) == {"k": "events", "up_to": 42}
        assert fanout.catch_ups >= 1
    finally:
        await subscription.close()
        await fanout.close()
