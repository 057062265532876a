"""Graceful shutdown: SIGTERM under load closes WebSockets with 1001 after the frame in
hand, answers the long-polls in flight, exits 0, and loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
from websockets.exceptions import ConnectionClosed

from tests.drills.harness import Load, ServerProcess, drill_env, login, scale

MESSAGES = scale(80, 1500)


async def test_sigterm_under_load_closes_with_1001_and_loses_nothing(tmp_path: Path) -> None:
    server = ServerProcess.new(tmp_path, drill_env())
    server.start()
    await server.wait_ready()
    load = await Load.prepare(server.base_url, pairs=4, messages=MESSAGES)
    watcher = await login(server.base_url, "watcher")
    try:
        running = asyncio.create_task(load.run(timeout_s=scale(90, 600)))
        async with (
            watcher.connect() as stream,
            httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as http,
        ):
            headers = {"Authorization": f"Bearer {watcher.token}"}
            poll = asyncio.create_task(
                http.get("/api/events", params={"since": 0, "timeout": 25}, headers=headers)
            )
            await load.wait_acknowledged(4 * MESSAGES // 2)
            started = time.monotonic()
            server.terminate()
            exit_code = await server.wait_exit()
            shutdown_s = time.monotonic() - started
            long_poll = await poll
            while True:  # the watcher sees its connection end with a close code
                try:
                    await stream.recv(5.0)
                except TimeoutError:
                    break
                except ConnectionClosed:
                    break
            close_code = stream.close_code
        await server.restart()
        counts = await running
        await load.verify_store()
    finally:
        await load.close()
        await watcher.aclose()
        server.stop()
    print(f"\ngraceful shutdown in {shutdown_s:.2f}s, close {close_code}: {counts.line()}")
    # uvicorn re-raises the signal once it has shut down cleanly (exit by SIGTERM).
    assert exit_code in (0, -signal.SIGTERM)
    assert "Finished server process" in server.log(tail=None)
    assert close_code == 1001
    assert long_poll.status_code == 200  # answered, not cut
    assert shutdown_s < 10.0
    assert counts.acknowledged == 4 * MESSAGES
    assert (counts.lost, counts.out_of_order) == (0, 0)
    assert counts.delivered == counts.acknowledged
    assert "Traceback" not in server.log(tail=None)
