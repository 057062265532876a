"""The server ``omninudge bench`` starts when no ``--url`` is given: ``omninudge serve``
with the same uvicorn options, plus the bench's overrides (a send budget a load
generator does not trip over, group commit on or off).

    python -m omninudge_server.bench.serve --port 8123 --data-dir /tmp/x [--no-group-commit]

Configuration still comes from the environment (``DATABASE_URL``, ``REDIS_URL``, ...),
read by ``config.load_settings`` like everywhere else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import attrs

from omninudge_server.config import load_settings

__all__ = ["main"]

# Far above anything the generator offers: the bench measures the server, not its limits.
BENCH_SEND_RATE_PER_S = 1_000_000.0


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from omninudge_server.app import create_app
    from omninudge_server.transport import websocket_options

    parser = argparse.ArgumentParser(prog="omninudge-bench-serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--no-group-commit", action="store_true")
    parser.add_argument("--max-in-flight", type=int, default=None)
    args = parser.parse_args(argv)
    settings = load_settings(host=args.host, port=args.port, data_dir=args.data_dir)
    settings = attrs.evolve(
        settings,
        send_rate_per_s=BENCH_SEND_RATE_PER_S,
        send_burst=BENCH_SEND_RATE_PER_S,
        ws_frames_per_second=BENCH_SEND_RATE_PER_S,
        ws_frame_burst=BENCH_SEND_RATE_PER_S,
        group_commit=not args.no_group_commit,
        ws_max_in_flight=args.max_in_flight or settings.ws_max_in_flight,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        **websocket_options(settings),
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
