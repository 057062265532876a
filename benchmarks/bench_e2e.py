"""End-to-end figures (``omninudge bench``) next to the ceilings of the same run.

Runs, each against a fresh server the bench starts itself:
  SQLite (embedded default): pairs with group commit, pairs without, latency at a fixed
  rate, fanout, offline replay, idle connections;
  PostgreSQL (with --pg, a throwaway database; with --redis, fan-out and presence in that
  Redis too, as a multi-process deployment runs): pairs with and without group commit,
  latency at the fixed rate.
then ``bench_ceilings`` (transport and storage) on the same machine.

    python benchmarks/bench_e2e.py [--seconds 5] [--pairs 64] [--idle 2000] [--pg URL]
                                   [--redis URL] [--processes 1] [--out .bench/bench_e2e.json]

Bounded: about 2 minutes with the defaults. The targets need --idle 10000 and
--offline 10000 (the defaults are smaller to keep ``nox -s bench`` short).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import psycopg
from bench_ceilings import run_ceilings
from psycopg import sql

from omninudge_server.bench import BenchOptions, run_bench

KEYS = (
    "sent",
    "acknowledged",
    "delivered",
    "lost",
    "duplicates",
    "throughput_msgs_per_s",
    "latency_ms",
    "server_cpu_ms_per_message",
    "server_peak_rss_bytes",
    "generator",
    "replay_s",
    "server_rss_per_connection_bytes",
    "opened",
    "connect_s",
    "busy_while_sending",
    "saturated",
    "pacing_lag_ms",
)


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in KEYS if k in result}


def _run(name: str, options: BenchOptions, results: dict[str, Any]) -> None:
    print(f"--- {name}", file=sys.stderr)
    result = run_bench(options)
    results[name] = _brief(result)
    results.setdefault("machine", result["machine"])
    print(json.dumps(results[name]), file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--offline", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--pg", default=os.environ.get("OMNINUDGE_BENCH_PG"))
    parser.add_argument("--redis", default=os.environ.get("OMNINUDGE_BENCH_REDIS"))
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    common = {"progress": False, "processes": args.processes}
    results: dict[str, Any] = {}
    pairs = {"pairs": args.pairs, "duration_s": args.seconds}
    if not args.skip_sqlite:
        _run("sqlite pairs", BenchOptions(scenario="pairs", **pairs, **common), results)
        _run(
            "sqlite pairs, no group commit",
            BenchOptions(scenario="pairs", group_commit=False, **pairs, **common),
            results,
        )
        _run(
            f"sqlite latency at {args.rate:g} msg/s",
            BenchOptions(scenario="latency", rate=args.rate, duration_s=args.seconds, **common),
            results,
        )
        _run(
            "sqlite fanout 16 devices",
            BenchOptions(scenario="fanout", devices=16, duration_s=args.seconds, **common),
            results,
        )
        _run(
            f"sqlite offline {args.offline}",
            BenchOptions(scenario="offline", messages=args.offline, **common),
            results,
        )
        _run(
            f"sqlite idle {args.idle}",
            BenchOptions(scenario="idle", connections=args.idle, hold_s=2.0, **common),
            results,
        )
    if args.pg:
        name = f"omninudge_e2e_{os.getpid()}"
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = psycopg.conninfo.conninfo_to_dict(args.pg)
        os.environ["DATABASE_URL"] = (
            f"postgresql://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}"
            f":{info.get('port', 5432)}/{name}"
        )
        if args.redis:
            os.environ["REDIS_URL"] = args.redis
        label = "postgres + redis" if args.redis else "postgres"
        try:
            _run(f"{label} pairs", BenchOptions(scenario="pairs", **pairs, **common), results)
            _run(
                f"{label} pairs, no group commit",
                BenchOptions(scenario="pairs", group_commit=False, **pairs, **common),
                results,
            )
            _run(
                f"{label} latency at {args.rate:g} msg/s",
                BenchOptions(scenario="latency", rate=args.rate, duration_s=args.seconds, **common),
                results,
            )
        finally:
            del os.environ["DATABASE_URL"]
            os.environ.pop("REDIS_URL", None)
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    print("--- ceilings", file=sys.stderr)
    results["ceilings"] = run_ceilings(
        seconds=args.seconds, pairs=args.pairs, window=4, batch=64, pg=args.pg
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    lost = sum(v.get("lost", 0) for v in results.values() if isinstance(v, dict))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
