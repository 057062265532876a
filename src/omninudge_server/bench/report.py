"""The numbers of a bench run's result: latency percentiles, the totals of the
generator processes, which side set the pace, and the machine it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Sequence
from typing import Any

from omninudge_server.bench.options import BenchOptions
from omninudge_server.bench.server import Usage

__all__ = ["SATURATED", "aggregate", "limit", "machine", "percentiles"]

# A side is "saturated" from this busy fraction (of one core; of all cores for the
# machine) while the generator sends: past it, that side sets the pace.
SATURATED = 0.9


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


def aggregate(
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


def limit(
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
