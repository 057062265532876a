"""``omninudge bench``: the load generator, for capacity planning.

It drives a running server (``--url``) or starts one (the embedded default, or the
PostgreSQL/Redis the environment names), makes its users through the public API,
connects real WebSocket clients and sends real v1 envelopes; it reports what was
sent, acknowledged, delivered and lost, latencies, the server's CPU per message and
its memory, and its own CPU (so the reader can tell which side was the limit).
docs/performance.md explains the scenarios and the result file.
"""

from omninudge_server.bench.runner import SCENARIOS, BenchOptions, percentiles, run_bench

__all__ = ["SCENARIOS", "BenchOptions", "percentiles", "run_bench"]
