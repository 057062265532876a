"""``omninudge bench``: the arguments, the summary, the JSON file and the exit status
(1 when any acknowledged message was lost, so a CI job or a script can rely on it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from omninudge_server.bench.runner import SCENARIOS, BenchOptions, run_bench

__all__ = ["add_bench_parser", "command"]

EXIT_LOST = 1


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on the ``omninudge`` sub-command parser."""
    bench = sub.add_parser(
        "bench",
        help="load generator: drive a server with real WebSocket clients and report",
        description=(
            "Scenarios: pairs (throughput), latency (fixed rate), idle (N connections, RSS "
            "per connection), fanout (one user, many devices), offline (backlog replay). "
            "Without --url a server is started in a temporary directory (DATABASE_URL, "
            "REDIS_URL... from the environment apply)."
        ),
    )
    bench.add_argument("scenario", choices=SCENARIOS, nargs="?", default="pairs")
    bench.add_argument("--url", help="a running server (default: start one)")
    bench.add_argument("--pairs", type=int, help="sender/recipient pairs (lanes)")
    bench.add_argument("--messages", type=int, help="messages in all (ends the run)")
    bench.add_argument("--duration", type=float, dest="duration_s", help="seconds of sending")
    bench.add_argument("--rate", type=float, help="fixed rate in msgs/s (default: max)")
    bench.add_argument("--window", type=int, default=4, help="in-flight sends per pair (max)")
    bench.add_argument("--devices", type=int, help="fanout: the recipient's devices")
    bench.add_argument("--connections", type=int, help="idle: connections to hold")
    bench.add_argument("--users", type=int, help="idle: users the connections spread over")
    bench.add_argument("--hold", type=float, dest="hold_s", help="idle: seconds to hold")
    bench.add_argument("--body-bytes", type=int, default=200, help="plaintext body size")
    bench.add_argument(
        "--processes",
        type=int,
        default=1,
        help=(
            "generator processes (default 1: one drives well over 10,000 msg/s, more than"
            " a 2-core server takes; raise it when the summary says 'saturated: generator')"
        ),
    )
    bench.add_argument(
        "--no-group-commit",
        dest="group_commit",
        action="store_false",
        help="start the server with one transaction per message",
    )
    bench.add_argument("--drain", type=float, default=15.0, dest="drain_s")
    bench.add_argument("--out", help="write the JSON result to this file")
    bench.add_argument("--quiet", action="store_true", help="no live progress line")
    bench.set_defaults(handler=command)


def _summary(result: dict[str, Any]) -> str:
    if result["scenario"] == "idle":
        per = result.get("server_rss_per_connection_bytes") or 0
        return (
            f"idle: {result['opened']:,} connections open ({result['failed']} failed),"
            f" {result['still_open_after_hold']:,} after the hold;"
            f" server RSS {result['server_rss_bytes'] / 2**20:,.1f} MiB,"
            f" {per / 1024:,.1f} KiB per connection"
        )
    generator = result["generator"]
    deliver = result["latency_ms"]["send_to_deliver"]
    ack = result["latency_ms"]["send_to_ack"]
    lines = [
        f"{result['scenario']}: sent {result['sent']:,}  acknowledged"
        f" {result['acknowledged']:,}  delivered {result['delivered']:,}"
        f"  lost {result['lost']}  duplicates {result['duplicates']}",
        f"throughput {result['throughput_msgs_per_s']:,.0f} msg/s over {result['elapsed_s']} s",
        f"send->ack     ms p50 {ack['p50']}  p95 {ack['p95']}  p99 {ack['p99']}  max {ack['max']}",
        f"send->deliver ms p50 {deliver['p50']}  p95 {deliver['p95']}  p99 {deliver['p99']}"
        f"  max {deliver['max']}",
        f"CPU per message: server {result['server_cpu_ms_per_message']} ms"
        f" ({result['server_cpu_s']} s), generator {generator['cpu_ms_per_message']} ms"
        f" ({sum(generator['run_cpu_s']):.3f} s while running, {generator['cpu_s_total']} s"
        f" in all, {generator['processes']} process(es))",
        f"server peak RSS {result['server_peak_rss_bytes'] / 2**20:,.1f} MiB",
        _busy_line(result),
    ]
    if result.get("pacing_lag_ms") is not None:
        lag = result["pacing_lag_ms"]
        lines.append(
            f"pacing: {result['send_rate_msgs_per_s']:,.0f} sends/s, lag behind schedule ms"
            f" p50 {lag['p50']}  p99 {lag['p99']}  max {lag['max']}"
        )
    if result.get("replay_s") is not None:
        lines.append(f"backlog replay {result['replay_s']} s ({result['replay_msgs_per_s']} msg/s)")
    if result["errors"]:
        lines.append(f"errors: {result['errors']}")
    return "\n".join(lines)


def _percent(busy: float | None) -> str:
    return "?" if busy is None else f"{busy * 100:.0f} %"


def _busy_line(result: dict[str, Any]) -> str:
    busy = result["busy_while_sending"]
    generator = ", ".join(_percent(b) for b in busy["generator_processes"])
    saturated = " and ".join(result["saturated"]) or "neither side"
    return (
        f"busy while sending: generator {generator} of a core, server"
        f" {_percent(busy['server'])} of a core, machine {_percent(busy['machine'])}"
        f" of {result['machine']['cpus']} cores -> saturated: {saturated}"
    )


def command(args: argparse.Namespace) -> int:
    options = BenchOptions(
        scenario=args.scenario,
        url=args.url,
        pairs=args.pairs,
        messages=args.messages,
        duration_s=args.duration_s,
        rate=args.rate,
        window=args.window,
        devices=args.devices,
        connections=args.connections,
        users=args.users,
        hold_s=args.hold_s,
        body_bytes=args.body_bytes,
        processes=args.processes,
        group_commit=args.group_commit,
        drain_s=args.drain_s,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    result = run_bench(options)
    print(_summary(result))
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return EXIT_LOST if result.get("lost", 0) else 0
