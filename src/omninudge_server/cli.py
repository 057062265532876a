"""``omninudge`` command line: ``serve`` and ``migrate`` (``bench`` is added later).

Each subcommand is one ``add_parser`` call and one ``_cmd_*`` function; a
configuration error prints ONE line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from omninudge_core.errors import OmniNudgeError
from omninudge_server.config import ConfigError, Settings, load_settings

__all__ = ["build_parser", "main"]

EXIT_CONFIG = 2
EXIT_DEPENDENCY = 3
_CHATTY_DRIVERS = (
    "psycopg", "redis", "httpx", "httpcore", "hpack", "websockets",
    "botocore", "aiobotocore", "s3transfer", "urllib3", "PIL", "multipart", "python_multipart",
)  # fmt: skip


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default="./omninudge-data",
        help="directory for the SQLite database and generated secrets (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omninudge", description="OmniNudge reference server")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    _add_common(serve)
    serve.set_defaults(handler=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database schema migrations and exit")
    _add_common(migrate)
    migrate.set_defaults(handler=_cmd_migrate)

    from omninudge_server.bench.cli import add_bench_parser

    add_bench_parser(sub)  # `omninudge bench`: the load generator (docs/performance.md)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        host=getattr(args, "host", "127.0.0.1"),
        port=getattr(args, "port", 8080),
        data_dir=args.data_dir,
    )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Drivers log statements WITH their parameters (envelopes, tokens) at DEBUG:
    # --log-level debug is for our own loggers only (docs/reliability.md, secrets drill).
    for name in _CHATTY_DRIVERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level.upper())))


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from omninudge_server.app import create_app
    from omninudge_server.shutdown import GracefulServer
    from omninudge_server.transport import websocket_options
    from omninudge_server.wiring import preflight

    settings = _settings(args)
    _configure_logging(args.log_level)
    asyncio.run(preflight(settings))
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        **websocket_options(settings),
        lifespan="on",
        log_level=args.log_level,
        access_log=False,  # RequestLogMiddleware logs without query strings
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=10,  # in-flight requests finish (docs/reliability.md)
    )
    server = GracefulServer(config, app=app)  # SIGTERM: WebSockets close with 1001
    server.run()
    # uvicorn sets started only when the lifespan and the socket came up.
    return 0 if server.started else EXIT_DEPENDENCY


def _cmd_migrate(args: argparse.Namespace) -> int:
    from omninudge_server.wiring import migrate

    settings = _settings(args)
    _configure_logging(args.log_level)
    applied = asyncio.run(migrate(settings))
    if applied:
        print(f"applied migrations: {', '.join(str(v) for v in applied)}")
    else:
        print("database is up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"omninudge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OmniNudgeError as exc:
        print(f"omninudge: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_DEPENDENCY
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
