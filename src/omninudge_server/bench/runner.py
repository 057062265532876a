"""One bench run: the server (started or remote), the accounts, the generator
processes, the live progress line, and the result (a JSON-ready dict)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import platform
import queue as queue_module
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from omninudge_server.bench.idle import IdlePlan, idle_process
from omninudge_server.bench.load import WorkerPlan, worker_process
from omninudge_server.bench.server import (
    Sampler,
    ServerProbe,
    Usage,
    launch_server,
    remote_server,
)
from omninudge_server.bench.setup import Lane, make_accounts, make_lanes

__all__ = ["SCENARIOS", "BenchOptions", "percentiles", "run_bench"]

Scenario = Literal["pairs", "latency", "idle", "fanout", "offline"]
SCENARIOS: tuple[Scenario, ...] = ("pairs", "latency", "idle", "fanout", "offline")

# Each scenario's defaults, applied where the caller left an option at None.
# A side is "saturated" from this busy fraction (of one core; of all cores for the
# machine) while the generator sends: past it, that side sets the pace.
SATURATED = 0.9

_DEFAULTS: dict[str, dict[str, Any]] = {
    "pairs": {"pairs": 64, "duration_s": 10.0},
    "latency": {"pairs": 16, "duration_s": 10.0, "rate": 1000.0},
    "fanout": {"pairs": 1, "devices": 16, "duration_s": 10.0},
    "offline": {"pairs": 1, "messages": 10_000},
    "idle": {"connections": 1000, "hold_s": 5.0},
}


@attrs.frozen
class BenchOptions:
    scenario: Scenario = "pairs"
    url: str | None = None  # None: start a server (embedded default or DATABASE_URL)
    pairs: int | None = None
    messages: int | None = None  # in all; with duration_s, whichever ends first
    duration_s: float | None = None
    rate: float | None = None  # msgs/s in all (fixed rate); None: as fast as possible
    window: int = 4
    devices: int | None = None  # fanout: devices of the one recipient
    connections: int | None = None  # idle
    users: int | None = None  # idle: accounts the connections are spread over
    hold_s: float | None = None  # idle
    body_bytes: int = 200
    # One lean process drives ~26,000 msg/s at 0.036 ms of CPU per message against a
    # server that answers at once (0.065 ms paced at 5,000/s): on 2 cores the server is
    # the limit long before it. A second process costs more CPU per message (less
    # batching per read) and takes it from the server.
    processes: int = 1
    group_commit: bool = True
    drain_s: float = 15.0
    progress: bool = True

    def resolved(self) -> BenchOptions:
        defaults = _DEFAULTS[self.scenario]
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        if self.scenario in ("pairs", "fanout") and self.messages is not None:
            changes.pop("duration_s", None)
        return attrs.evolve(self, **changes)


def percentiles(values: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/p99/max (nearest rank) in the values' unit, and how many there were."""
    if not values:
        return {"count": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)
    last = len(ordered) - 1

    def rank(p: float) -> float:
        return round(ordered[min(last, int(p * len(ordered)))], 3)

    return {
        "count": len(ordered),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": round(ordered[-1], 3),
    }


def machine() -> dict[str, Any]:
    memory = 0
    with contextlib.suppress(OSError, ValueError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


@contextlib.contextmanager
def _server(options: BenchOptions) -> Iterator[ServerProbe]:
    if options.url is not None:
        yield remote_server(options.url)
        return
    with launch_server(group_commit=options.group_commit) as probe:
        yield probe


def _database_kind(options: BenchOptions) -> str:
    if options.url is not None:
        return "remote"
    from omninudge_server.config import ConfigError, load_settings

    try:
        return load_settings().database_kind
    except ConfigError:
        return "unknown"


class _Progress:
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


def _collect(
    processes: Sequence[multiprocessing.process.BaseProcess],
    results_queue: Any,
    progress: _Progress,
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


def _split(lanes: Sequence[Lane], parts: int) -> list[tuple[Lane, ...]]:
    return [tuple(lanes[i::parts]) for i in range(parts) if lanes[i::parts]]


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_bench(
    options: BenchOptions, *, write: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """Run one scenario; returns the result (see docs/performance.md for its fields).
    Raises RuntimeError when the server or a generator process fails."""
    options = options.resolved()
    out: Callable[[str], Any] = write or sys.stderr.write
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "scenario": options.scenario,
        "started_at": started.isoformat(),
        "machine": machine(),
        "options": attrs.asdict(options),
    }
    with _server(options) as probe:
        result["server"] = {
            "url": probe.base_url,
            "usage_from": probe.source,
            "database": _database_kind(options),
            "group_commit": options.group_commit if options.url is None else None,
        }
        if options.scenario == "idle":
            result.update(_run_idle(options, probe, out))
        else:
            result.update(_run_traffic(options, probe, out))
    result["generator"]["main_cpu_s"] = round(_own_cpu(), 3)
    return result


def _context() -> multiprocessing.context.SpawnContext:
    # spawn: a clean interpreter per worker (no inherited event loop or sockets).
    return multiprocessing.get_context("spawn")


def _run_traffic(
    options: BenchOptions, probe: ServerProbe, write: Callable[[str], Any]
) -> dict[str, Any]:
    pairs = options.pairs or 1
    lanes = asyncio.run(
        make_lanes(
            probe.base_url,
            lanes=pairs,
            devices_per_recipient=(options.devices or 1) if options.scenario == "fanout" else 1,
            body_bytes=options.body_bytes,
        )
    )
    per_lane = None if options.messages is None else max(1, options.messages // pairs)
    mode: Literal["max", "rate"] = "rate" if options.rate else "max"
    parts = _split(lanes, max(1, min(options.processes, len(lanes))))
    connections = sum(1 + len(lane.recipients) for lane in lanes)
    start_at = time.monotonic() + 3.0 + 0.01 * connections
    rate = options.rate or 0.0
    context = _context()
    results_queue = context.Queue()
    processes = [
        context.Process(
            target=worker_process,
            args=(
                WorkerPlan(
                    ws_url=probe.ws_url,
                    lanes=part,
                    mode=mode,
                    # N workers at rate/N each, worker i shifted by i/rate: together
                    # one send every 1/rate s.
                    rate=rate / len(parts),
                    phase_s=index / rate if rate else 0.0,
                    window=options.window,
                    messages_per_lane=per_lane,
                    duration_s=options.duration_s,
                    start_at=start_at,
                    drain_s=options.drain_s,
                    offline=options.scenario == "offline",
                ),
                results_queue,
            ),
            daemon=True,
        )
        for index, part in enumerate(parts)
    ]
    progress = _Progress(options.scenario, options.progress, write)
    with Sampler(probe, start_at) as sampler:
        for process in processes:
            process.start()
        try:
            results = list(_collect(processes, results_queue, progress).values())
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
        progress.done()
        server_cpu, after = sampler.cpu_since_start()
    server_busy, machine_busy = sampler.busy_until(max(r["sending_done"] for r in results))
    out = _aggregate(options, results, server_cpu, after, len(processes))
    out.update(_limit(results, server_busy, machine_busy))
    return out


def _aggregate(
    options: BenchOptions,
    results: list[dict[str, Any]],
    server_cpu: float,
    after: Usage,
    process_count: int,
) -> dict[str, Any]:
    def total(key: str) -> int:
        return int(sum(r[key] for r in results))

    start = min(r["start"] for r in results)
    last_delivery = max(r["last_delivery"] for r in results) or start
    acknowledged = total("acked")
    delivered = total("delivered")
    window = max(last_delivery - start, 1e-9)
    errors: dict[str, int] = {}
    for r in results:
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    generator_cpu = [round(r["cpu_s"], 3) for r in results]
    run_cpu = sum(r["run_cpu_s"] for r in results)
    sending = max(r["sending_done"] for r in results) - start
    out: dict[str, Any] = {
        "sent": total("sent"),
        "acknowledged": acknowledged,
        "delivered": delivered,
        "expected_deliveries": total("expected_deliveries"),
        "lost": total("lost"),
        "duplicates": total("duplicates"),
        "redelivered": total("redelivered"),
        "unanswered": total("unanswered"),
        "errors": errors,
        "elapsed_s": round(window, 3),
        "throughput_msgs_per_s": round(delivered / window, 1),
        "send_rate_msgs_per_s": round(total("sent") / sending, 1) if sending > 0 else None,
        "latency_ms": {
            "send_to_ack": _percentiles_ns(results, "ack_ns"),
            "send_to_deliver": _percentiles_ns(results, "deliver_ns"),
        },
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_s_per_1000_messages": (
            round(server_cpu / acknowledged * 1000, 4) if acknowledged else None
        ),
        "server_cpu_ms_per_message": (
            round(server_cpu / acknowledged * 1000, 4) if acknowledged else None
        ),
        "server_rss_bytes": after.rss_bytes,
        "server_peak_rss_bytes": after.peak_rss_bytes,
        "generator": {
            "processes": process_count,
            "cpu_s": generator_cpu,
            "cpu_s_total": round(sum(generator_cpu), 3),
            # From the start instant to the end of the drain: the per-message cost,
            # without interpreter start-up, account setup and connecting.
            "run_cpu_s": [round(r["run_cpu_s"], 3) for r in results],
            "cpu_ms_per_message": (
                round(run_cpu / acknowledged * 1000, 4) if acknowledged else None
            ),
            "pids": [r["pid"] for r in results],
        },
    }
    if options.rate:
        # Actual minus scheduled send instant: a late generator sends in bursts.
        out["pacing_lag_ms"] = _percentiles_ns(results, "pacing_lag_ns")
    if options.scenario == "offline":
        replay = [r["replay_s"] for r in results if r["replay_s"] is not None]
        out["replay_s"] = round(max(replay), 3) if replay else None
        out["replay_msgs_per_s"] = (
            round(delivered / max(replay), 1) if replay and max(replay) > 0 else None
        )
    return out


def _percentiles_ns(results: Sequence[dict[str, Any]], key: str) -> dict[str, float | int]:
    return percentiles([value / 1e6 for r in results for value in r[key]])


def _limit(
    results: Sequence[dict[str, Any]], server_busy: float | None, machine_busy: float | None
) -> dict[str, Any]:
    """How busy each side was while sending, and which ones set the pace: a generator
    process or the server at SATURATED of a core, the whole machine at SATURATED of
    all its cores (the database, other work); empty when none did."""
    generator_busy = [
        round(r["sending_cpu_s"] / (r["sending_done"] - r["start"]), 3)
        if r["sending_done"] > r["start"]
        else 0.0
        for r in results
    ]
    saturated = [
        side
        for side, busy in (
            ("generator", max(generator_busy, default=0.0)),
            ("server", server_busy),
            ("machine", machine_busy),
        )
        if busy is not None and busy >= SATURATED
    ]
    return {
        "busy_while_sending": {
            "generator_processes": generator_busy,
            "server": server_busy,
            "machine": machine_busy,
        },
        "saturated": saturated,
    }


def _run_idle(
    options: BenchOptions, probe: ServerProbe, write: Callable[[str], Any]
) -> dict[str, Any]:
    connections = options.connections or 0
    users = options.users or max(1, min(connections, 1000))
    accounts = tuple(asyncio.run(make_accounts(probe.base_url, users=users)))
    base = probe.usage()
    context = _context()
    results_queue = context.Queue()
    release = context.Event()
    parts = max(1, options.processes)
    shares = [connections // parts + (1 if i < connections % parts else 0) for i in range(parts)]
    processes = [
        context.Process(
            target=idle_process,
            args=(IdlePlan(probe.ws_url, accounts, share), results_queue, release),
            daemon=True,
        )
        for share in shares
        if share
    ]
    reports: dict[int, list[tuple[int, int]]] = {}
    held: dict[str, Any] = {}
    progress = _Progress("idle", options.progress, write)
    started = time.monotonic()

    def on_message(kind: str, pid: int, payload: Any) -> None:
        if kind != "connected":
            return
        reports.setdefault(pid, []).append(tuple(payload))
        progress.update(pid, {"sent": 0, "acked": 0, "delivered": payload[0]})
        first = [r[0] for r in reports.values()]
        if len(first) == len(processes) and "usage" not in held:
            held["connect_s"] = time.monotonic() - started
            peak = probe.usage()
            deadline = time.monotonic() + (options.hold_s or 0.0)
            while time.monotonic() < deadline:
                time.sleep(0.5)
                peak = max(peak, probe.usage(), key=lambda u: u.rss_bytes)
            held["usage"] = peak
            release.set()

    for process in processes:
        process.start()
    try:
        results = _collect(processes, results_queue, progress, on_message)
    finally:
        release.set()
        for process in processes:
            if process.is_alive():
                process.terminate()
    progress.done()
    usage: Usage = held.get("usage", probe.usage())
    opened = sum(r[0][0] for r in reports.values())
    alive = sum(r[-1][0] for r in reports.values())
    failed = sum(r[0][1] for r in reports.values())
    grown = usage.rss_bytes - base.rss_bytes
    generator_cpu = [round(r["cpu_s"], 3) for r in results.values()]
    return {
        "connections": connections,
        "users": users,
        "opened": opened,
        "failed": failed,
        "still_open_after_hold": alive,
        "connect_s": round(held.get("connect_s", 0.0), 3),
        "server_rss_before_bytes": base.rss_bytes,
        "server_rss_bytes": usage.rss_bytes,
        "server_peak_rss_bytes": usage.peak_rss_bytes,
        "server_rss_per_connection_bytes": round(grown / opened) if opened else None,
        "lost": 0,
        "generator": {
            "processes": len(processes),
            "cpu_s": generator_cpu,
            "cpu_s_total": round(sum(generator_cpu), 3),
        },
    }
