"""The generator's child processes, seen from the runner: the spawn context, the
live progress line, and collecting what the processes report."""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Progress", "collect", "spawn_context"]


def spawn_context() -> multiprocessing.context.SpawnContext:
    # spawn: a clean interpreter per worker (no inherited event loop or sockets).
    return multiprocessing.get_context("spawn")


class Progress:
    def __init__(self, scenario: str, enabled: bool, write: Callable[[str], Any]) -> None:
        self.scenario = scenario
        self.enabled = enabled
        self.write = write
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.started = time.monotonic()
        self.last_delivered = 0
        self.last_at = self.started

    def update(self, pid: int, snapshot: dict[str, Any]) -> None:
        self.snapshots[pid] = snapshot

    def show(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        total = {
            key: sum(s[key] for s in self.snapshots.values())
            for key in ("sent", "acked", "delivered")
        }
        rate = (total["delivered"] - self.last_delivered) / max(now - self.last_at, 1e-6)
        self.last_delivered, self.last_at = total["delivered"], now
        self.write(
            f"\r[{self.scenario}] {now - self.started:6.1f}s  sent {total['sent']:>8,}"
            f"  acked {total['acked']:>8,}  delivered {total['delivered']:>8,}"
            f"  {rate:>8,.0f} msg/s   "
        )

    def done(self) -> None:
        if self.enabled:
            self.write("\n")


def collect(
    processes: Sequence[multiprocessing.process.BaseProcess],
    results_queue: Any,
    progress: Progress,
    on_message: Callable[[str, int, Any], None] | None = None,
) -> dict[int, Any]:
    results: dict[int, Any] = {}
    while len(results) < len(processes):
        try:
            kind, pid, payload = results_queue.get(timeout=0.5)
        except queue_module.Empty:
            if all(not p.is_alive() for p in processes) and len(results) < len(processes):
                raise RuntimeError("a generator process died without a result") from None
            progress.show()
            continue
        if kind == "progress":
            progress.update(pid, payload)
        elif kind == "result":
            results[pid] = payload
        elif kind == "failed":
            raise RuntimeError(f"generator process {pid} failed: {payload}")
        elif on_message is not None:
            on_message(kind, pid, payload)
    for process in processes:
        process.join(10)
    return results
