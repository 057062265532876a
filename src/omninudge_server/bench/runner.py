"""One bench run: the server (started or remote), the accounts, the generator
processes (``processes``), and the result, a JSON-ready dict (``report``)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from omninudge_server.bench.idle import IdlePlan, idle_process
from omninudge_server.bench.load import WorkerPlan, worker_process
from omninudge_server.bench.options import SCENARIOS, BenchOptions
from omninudge_server.bench.processes import Progress, collect, spawn_context
from omninudge_server.bench.report import aggregate, limit, machine, percentiles
from omninudge_server.bench.server import Sampler, ServerProbe, Usage, launch_server, remote_server
from omninudge_server.bench.setup import Lane, make_accounts, make_lanes

# SCENARIOS, BenchOptions (``options``) and percentiles (``report``): for ``bench``.
__all__ = ["SCENARIOS", "BenchOptions", "percentiles", "run_bench"]


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
    context = spawn_context()
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
    progress = Progress(options.scenario, options.progress, write)
    with Sampler(probe, start_at) as sampler:
        for process in processes:
            process.start()
        try:
            results = list(collect(processes, results_queue, progress).values())
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
        progress.done()
        server_cpu, after = sampler.cpu_since_start()
    server_busy, machine_busy = sampler.busy_until(max(r["sending_done"] for r in results))
    out = aggregate(options, results, server_cpu, after, len(processes))
    out.update(limit(results, server_busy, machine_busy))
    return out


def _run_idle(
    options: BenchOptions, probe: ServerProbe, write: Callable[[str], Any]
) -> dict[str, Any]:
    connections = options.connections or 0
    users = options.users or max(1, min(connections, 1000))
    accounts = tuple(asyncio.run(make_accounts(probe.base_url, users=users)))
    base = probe.usage()
    context = spawn_context()
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
    progress = Progress("idle", options.progress, write)
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
        results = collect(processes, results_queue, progress, on_message)
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
