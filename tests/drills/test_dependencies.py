"""Dependency drills: PostgreSQL and Redis go away under load and come back; the server
process is never restarted, answers 503 fast while the database is down, and loses
nothing it acknowledged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from omninudge_server.client import Client, Stream
from tests.drills.harness import (
    JWT_SECRET,
    Load,
    ServerProcess,
    drill_env,
    envelope,
    login,
    scale,
)
from tests.services import PostgresCluster, create_database
from tests.services_redis import RedisServer

MESSAGES = scale(80, 1500)


async def frame_of(
    stream: Stream, kind: str, wait_s: float = 10.0, **fields: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        frame = await stream.recv(max(0.01, deadline - time.monotonic()))
        if frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame


async def test_postgres_restarted_mid_load_fails_fast_then_recovers_without_loss(
    tmp_path: Path, postgres_cluster_factory: Callable[[], PostgresCluster]
) -> None:
    cluster = postgres_cluster_factory()
    env = drill_env(
        DATABASE_URL=create_database(cluster.admin_url), OMNINUDGE_JWT_SECRET=JWT_SECRET
    )
    server = ServerProcess.new(tmp_path, env)
    server.start()
    await server.wait_ready()
    pid = server.pid
    load = await Load.prepare(server.base_url, pairs=4, messages=MESSAGES)
    probe = load.pairs[1]
    try:
        running = asyncio.create_task(load.run(timeout_s=scale(90, 600)))
        await load.wait_acknowledged(4 * MESSAGES // 3)
        cluster.stop("fast")
        # While it is down: a typed 503 within a few seconds, never a hang or a 500.
        statuses, slowest = [], 0.0
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20.0) as http:
            headers = {"Authorization": f"Bearer {probe.sender.token}"}
            for _ in range(3):
                started = time.monotonic()
                r = await http.get(f"/api/conversations/{probe.conversation_id}/messages",
                                   headers=headers)  # fmt: skip
                slowest = max(slowest, time.monotonic() - started)
                statuses.append((r.status_code, r.json()["error"]["code"]))
            health = await http.get("/health")
        await asyncio.sleep(1.0)  # the load keeps retrying against the outage
        cluster.start()
        counts = await running
        await load.verify_store()
    finally:
        await load.close()
        server.stop()
    print(f"\npostgres restart drill: {counts.line()}; 503 in <= {slowest:.2f}s")
    assert statuses == [(503, "unavailable")] * 3
    assert slowest < 5.0
    assert health.status_code == 503
    assert (server.pid, server.starts) == (pid, 1)  # the pool recovered by itself
    assert counts.acknowledged == 4 * MESSAGES
    assert (counts.lost, counts.out_of_order) == (0, 0)
    assert counts.delivered == counts.acknowledged


async def test_redis_stopped_and_started_mid_load_recovers_presence_and_fan_out(
    tmp_path: Path,
    postgres_database_factory: Callable[[], str],
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    redis = redis_server_factory()
    redis.start()
    env = drill_env(
        DATABASE_URL=postgres_database_factory(),
        OMNINUDGE_JWT_SECRET=JWT_SECRET,
        REDIS_URL=redis.url,
        OMNINUDGE_REDIS_PREFIX="drill-redis:",
    )
    server = ServerProcess.new(tmp_path, env)
    server.start()
    await server.wait_ready()
    load = await Load.prepare(server.base_url, pairs=4, messages=MESSAGES)
    alice, bob = await login(server.base_url, "alice"), await login(server.base_url, "bob")
    try:
        conversation_id = (await alice.open_conversation(bob.user_id))["id"]
        running = asyncio.create_task(load.run(timeout_s=scale(90, 600)))
        await load.wait_acknowledged(4 * MESSAGES // 3)
        redis.stop()
        await asyncio.sleep(1.0)
        redis.start()
        counts = await running
        await load.verify_store()
        # Presence: bob connecting now is announced to alice as online.
        async with alice.connect() as a_stream, bob.connect() as b_stream:
            seen = await frame_of(
                a_stream, "presence", wait_s=15.0, user_id=bob.user_id, online=True
            )
            # Fan-out: a message is pushed live, without a reconnect.
            sent = await alice.send(conversation_id, _envelope(alice, bob))
            live = await frame_of(b_stream, "message", wait_s=10.0)
    finally:
        await load.close()
        for client in (alice, bob):
            await client.aclose()
        server.stop()
    print(f"\nredis restart drill: {counts.line()}")
    assert seen["online"] is True
    assert live["message"]["id"] == sent["id"]
    assert counts.acknowledged == 4 * MESSAGES
    assert (counts.lost, counts.out_of_order) == (0, 0)
    assert counts.delivered == counts.acknowledged


def _envelope(sender: Client, recipient: Client) -> dict[str, Any]:
    devices = [sender.device_id or "", recipient.device_id or ""]
    return envelope(devices[0], devices)
