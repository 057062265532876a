"""The ``idle`` scenario's generator side: many authenticated connections that send
nothing, held open while the runner reads the server's memory."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable
from typing import Any

import attrs

from omninudge_server.bench.connect import install_uvloop, open_session, wait_until
from omninudge_server.bench.setup import Account
from omninudge_server.bench.wsclient import WebSocketClient

__all__ = ["IdlePlan", "idle_process", "run_idle_worker"]


@attrs.frozen
class IdlePlan:
    ws_url: str
    accounts: tuple[Account, ...]
    connections: int
    concurrency: int = 64  # connection attempts at once


async def run_idle_worker(
    plan: IdlePlan, connected: Callable[[int, int], None], release: Any
) -> None:
    """Open ``plan.connections`` authenticated connections (round-robin over the
    accounts), report ``connected(ok, failed)``, hold them until ``release`` is set."""
    opened: list[WebSocketClient] = []
    failed = 0
    semaphore = asyncio.Semaphore(plan.concurrency)

    async def one(index: int) -> None:
        nonlocal failed
        account = plan.accounts[index % len(plan.accounts)]
        async with semaphore:
            try:
                opened.append(await open_session(plan.ws_url, account))
            except Exception:
                failed += 1

    try:
        await asyncio.gather(*(one(i) for i in range(plan.connections)))
        connected(len(opened), failed)
        await wait_until(release.is_set, step=0.1)
        # Still open? A server that dropped idle sockets would show here.
        alive = sum(1 for client in opened if not client.closed)
        connected(alive, failed)
    finally:
        await asyncio.gather(*(client.close() for client in opened), return_exceptions=True)


def idle_process(plan: IdlePlan, queue: Any, release: Any) -> None:
    """Child process entry for idle connections: ``("connected", pid, (ok, failed))``
    twice (after opening, after the hold), then ``("result", pid, usage)``."""
    install_uvloop()
    pid = os.getpid()
    try:
        asyncio.run(
            run_idle_worker(plan, lambda ok, bad: queue.put(("connected", pid, (ok, bad))), release)
        )
    except BaseException as exc:
        queue.put(("failed", pid, f"{type(exc).__name__}: {exc}"))
        raise
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put(
        (
            "result",
            pid,
            {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_bytes": usage.ru_maxrss * 1024},
        )
    )
