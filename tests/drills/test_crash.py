"""Crash drill: 4 senders and 4 receivers while the server is SIGKILLed three times and
restarted on the same data; every acknowledged message is stored and delivered exactly
once (after client dedupe) in per-conversation order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.drills.harness import JWT_SECRET, Counts, Load, ServerProcess, drill_env, scale

MESSAGES = scale(100, 2000)  # per sender
KILLS = 3


async def crash_drill(server: ServerProcess) -> Counts:
    server.start()
    await server.wait_ready()
    load = await Load.prepare(server.base_url, pairs=4, messages=MESSAGES)
    try:
        running = asyncio.create_task(load.run(timeout_s=scale(90, 600)))
        total = 4 * MESSAGES
        for kill in range(1, KILLS + 1):
            await load.wait_acknowledged(total * kill // (KILLS + 1))
            server.kill()
            await asyncio.sleep(0.2)  # clients notice and start retrying
            await server.restart()
        counts = await running
        await load.verify_store()
    finally:
        await load.close()
        server.stop()
    print(f"\ncrash drill ({server.env.get('DATABASE_URL', 'sqlite')[:10]}): {counts.line()}")
    return counts


def assert_nothing_lost(counts: Counts, expected: int) -> None:
    assert counts.acknowledged == expected
    assert counts.lost == 0
    assert counts.delivered == counts.acknowledged
    assert counts.out_of_order == 0


async def test_sigkill_three_times_on_sqlite_loses_nothing(tmp_path: Path) -> None:
    server = ServerProcess.new(tmp_path, drill_env())
    counts = await crash_drill(server)
    assert server.starts == KILLS + 1
    assert_nothing_lost(counts, 4 * MESSAGES)


@pytest.mark.usefixtures("postgres_server")
async def test_sigkill_three_times_on_postgres_loses_nothing(
    tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> None:
    env = drill_env(DATABASE_URL=postgres_database_factory(), OMNINUDGE_JWT_SECRET=JWT_SECRET)
    server = ServerProcess.new(tmp_path, env)
    counts = await crash_drill(server)
    assert_nothing_lost(counts, 4 * MESSAGES)
