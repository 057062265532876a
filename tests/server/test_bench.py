"""A short run of ``omninudge bench`` so CI exercises the load generator end to end:
it starts its own server, sends real envelopes over real WebSockets, and reports."""

from __future__ import annotations

from pathlib import Path

import orjson

from omninudge_server.bench import BenchOptions, percentiles, run_bench
from omninudge_server.cli import main

LATENCY_KEYS = {"count", "p50", "p95", "p99", "max"}


def test_pairs_run_delivers_every_acknowledged_message_once() -> None:
    result = run_bench(BenchOptions(scenario="pairs", pairs=4, messages=300, progress=False))
    assert result["sent"] == result["acknowledged"] == 300
    assert result["delivered"] == 300
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    for kind in ("send_to_ack", "send_to_deliver"):
        assert set(result["latency_ms"][kind]) == LATENCY_KEYS
        assert result["latency_ms"][kind]["count"] == 300
    assert result["throughput_msgs_per_s"] > 0
    assert result["server_cpu_ms_per_message"] > 0
    assert result["server_peak_rss_bytes"] > 0
    assert result["server"]["usage_from"] == "/proc"
    assert result["generator"]["processes"] == 1
    assert result["generator"]["cpu_ms_per_message"] > 0
    assert set(result["busy_while_sending"]) == {"generator_processes", "server", "machine"}
    assert isinstance(result["saturated"], list)
    assert result["machine"]["cpus"] >= 1


def test_processes_split_the_lanes_and_the_results_are_merged() -> None:
    result = run_bench(
        BenchOptions(scenario="pairs", pairs=4, messages=200, processes=2, progress=False)
    )
    assert result["acknowledged"] == result["delivered"] == 200
    assert result["lost"] == result["duplicates"] == 0
    generator = result["generator"]
    assert generator["processes"] == 2
    assert len(set(generator["pids"])) == 2
    assert len(generator["cpu_s"]) == len(generator["run_cpu_s"]) == 2
    assert len(result["busy_while_sending"]["generator_processes"]) == 2


def test_latency_run_sends_at_the_fixed_rate() -> None:
    result = run_bench(
        BenchOptions(scenario="latency", pairs=4, rate=200, duration_s=1.0, progress=False)
    )
    # One send every 5 ms for 1 s (the last may fall on either side of the end).
    assert 199 <= result["sent"] <= 201
    assert result["delivered"] == result["acknowledged"] == result["sent"]
    assert result["pacing_lag_ms"]["count"] == result["sent"]
    assert result["latency_ms"]["send_to_deliver"]["count"] == result["sent"]


def test_offline_backlog_is_replayed_on_reconnect() -> None:
    result = run_bench(BenchOptions(scenario="offline", messages=300, progress=False))
    assert result["delivered"] == 300
    assert result["lost"] == 0
    assert result["replay_s"] is not None
    assert result["replay_s"] > 0


def test_idle_connections_report_memory_per_connection() -> None:
    result = run_bench(
        BenchOptions(scenario="idle", connections=40, users=10, hold_s=0.5, progress=False)
    )
    assert result["opened"] == 40
    assert result["failed"] == 0
    assert result["still_open_after_hold"] == 40
    assert result["server_rss_per_connection_bytes"] is not None


def test_cli_writes_the_json_result_and_exits_zero(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    status = main(
        ["bench", "fanout", "--devices", "3", "--messages", "60", "--quiet", "--out", str(out)]
    )
    assert status == 0
    result = orjson.loads(out.read_bytes())
    assert result["scenario"] == "fanout"
    assert result["acknowledged"] == 60
    assert result["expected_deliveries"] == 180
    assert result["delivered"] == 180
    assert result["lost"] == 0


def test_percentiles_use_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {
        "count": 100,
        "p50": 51.0,
        "p95": 96.0,
        "p99": 100.0,
        "max": 100.0,
    }
    assert percentiles([])["count"] == 0
