"""Scale benchmark: end-to-end messages per second and latency with one and two server
processes (PostgreSQL + Redis) against the embedded default, and the cost of Redis
fan-out per message.

    python benchmarks/bench_scale.py [--pairs 40] [--messages 50] [--out result.json]

End-to-end cases start real ``omninudge serve`` subprocesses on loopback ports:

- embedded: one process, SQLite in a temporary data directory, in-process fan-out;
- postgres+redis, 1 instance: a throwaway database, Redis under a throwaway prefix;
- postgres+redis, 2 instances: the same database and Redis; each pair's sender is on
  one instance and its recipient on the other, so EVERY message crosses instances.

``--pairs`` sender/recipient pairs run at once; each sender sends ``--messages``
messages with ``POST /api/messages``, one after the other (closed loop), and each
recipient receives them on its WebSocket and acks every 32. Latency is from the start of
the POST to the recipient's ``message`` frame. The client
runs in this one Python process, on the same machine.

Fan-out case: ``RedisFanOut.publish`` to a user subscribed in the same process, one at a
time, until the listener has the payload (publish + Lua routing + PUBLISH + the reader),
against ``MemoryFanOut``.

PostgreSQL: --pg (default $OMNINUDGE_BENCH_PG, else postgresql://postgres@127.0.0.1:5432/
postgres) is an admin URL where a throwaway database is created and dropped. Redis:
--redis (default redis://127.0.0.1:6379/0); keys live under a throwaway prefix, deleted
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql

from omninudge_server.client import Client, Stream

OMNINUDGE = str(Path(sys.executable).parent / "omninudge")
JWT_SECRET = "bench-scale-secret-" + "b" * 40


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk() -> dict[str, str]:
    return {"kty": "EC", "crv": "P-256", "x": _b64(os.urandom(32)), "y": _b64(os.urandom(32))}


def _envelope(sender_device: str, devices: list[str]) -> dict[str, Any]:
    """A structurally valid v1 envelope of random bytes (the server cannot tell)."""
    return {
        "v": 1,
        "alg": "ECDH-P256+HKDF-SHA256+A256GCM+ES256",
        "sender_device": sender_device,
        "epk": _b64(b"\x04" + os.urandom(64)),
        "iv": _b64(os.urandom(12)),
        "ct": _b64(os.urandom(200)),
        "keys": [
            {"device": d, "iv": _b64(os.urandom(12)), "wk": _b64(os.urandom(48))}
            for d in sorted(devices)
        ],
        "sig": _b64(os.urandom(64)),
    }


# --- servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _instances(count: int, env: dict[str, str], root: Path) -> Iterator[list[str]]:
    """Start ``count`` ``omninudge serve`` processes one after the other; their URLs."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_"))}
    base = {k: v for k, v in base.items() if not k.startswith("OMNINUDGE_")}
    base.update(env)
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for n in range(count):
            port = _port()
            data_dir = root / f"instance{n}"
            data_dir.mkdir(parents=True, exist_ok=True)
            log = (root / f"instance{n}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        OMNINUDGE,
                        "serve",
                        "--port",
                        str(port),
                        "--data-dir",
                        str(data_dir),
                        "--log-level",
                        "warning",
                    ],
                    env=base,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/health", timeout=1.0)
                    break
                except httpx.TransportError:
                    if processes[-1].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"instance {n} did not start") from None
                    time.sleep(0.05)
            urls.append(url)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def _database(admin_url: str) -> Iterator[str]:
    name = f"omninudge_bench_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    # DATABASE_URL must be a postgresql:// URL: swap the database name in the path.
    url = admin_url.split("?", 1)[0].rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


# --- the end-to-end load ------------------------------------------------------------------


async def _user(url: str) -> Client:
    client = await Client.dev_login(url, f"b_{uuid.uuid4().hex[:12]}")
    await client.register_device(
        f"d_{uuid.uuid4().hex[:12]}", public_key=_jwk(), signing_key=_jwk()
    )
    return client


async def _sender(
    client: Client, conversation_id: str, devices: list[str], me: str, count: int,
    started: dict[str, float],
) -> None:  # fmt: skip
    # REST, not the WebSocket: a connection may send 10 frames/s (API limits), a user
    # 50 messages in a burst; the load here stays within the user's burst.
    for _ in range(count):
        client_msg_id = uuid.uuid4().hex
        started[client_msg_id] = time.perf_counter()
        await client.send(conversation_id, _envelope(me, devices), client_msg_id=client_msg_id)


async def _recipient(
    stream: Stream, count: int, started: dict[str, float], latencies: list[float]
) -> None:
    got = 0
    while got < count:
        frame = await stream.recv(60)
        if frame["type"] != "message":
            continue
        got += 1
        latencies.append(time.perf_counter() - started[frame["message"]["client_msg_id"]])
        if got % 32 == 0 or got == count:
            await stream.ack()


async def _end_to_end(urls: list[str], pairs: int, messages: int) -> dict[str, Any]:
    n = len(urls)
    senders = [await _user(urls[i % n]) for i in range(pairs)]
    recipients = [await _user(urls[(i + 1) % n]) for i in range(pairs)]
    conversations = [
        (await s.open_conversation(r.user_id))["id"]
        for s, r in zip(senders, recipients, strict=True)
    ]
    started: dict[str, float] = {}
    latencies: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        r_streams = [await stack.enter_async_context(r.connect()) for r in recipients]
        t0 = time.perf_counter()
        tasks = [_recipient(r_streams[i], messages, started, latencies) for i in range(pairs)] + [
            _sender(
                senders[i],
                conversations[i],
                [senders[i].device_id or "", recipients[i].device_id or ""],
                senders[i].device_id or "",
                messages,
                started,
            )
            for i in range(pairs)
        ]
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    for client in senders + recipients:
        await client.aclose()
    latencies.sort()
    total = pairs * messages
    return {
        "messages": total,
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(total / elapsed),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
    }


# --- the fan-out microbenchmark -----------------------------------------------------------


async def _fanout_round_trips(fanout: Any, count: int) -> list[float]:
    arrived: asyncio.Queue[bytes] = asyncio.Queue()
    subscription = await fanout.subscribe("bench-user", arrived.put_nowait)
    times = []
    try:
        for i in range(count):
            payload = b'{"k":"events","up_to":%d}' % i
            t0 = time.perf_counter()
            await fanout.publish("bench-user", payload)
            await asyncio.wait_for(arrived.get(), 5)
            times.append(time.perf_counter() - t0)
    finally:
        await subscription.close()
    return times


async def _fanout_case(redis_url: str, prefix: str, count: int) -> dict[str, Any]:
    from omninudge_adapters.memory.fanout import MemoryFanOut
    from omninudge_adapters.redis import open_redis

    memory = await _fanout_round_trips(MemoryFanOut(), count)
    async with open_redis(redis_url, prefix=prefix) as adapters:
        redis_times = await _fanout_round_trips(adapters.fanout, count)

    def micros(values: list[float]) -> dict[str, float]:
        values = sorted(values)
        return {
            "mean_us": round(1e6 * statistics.fmean(values), 1),
            "p99_us": round(1e6 * values[int(len(values) * 0.99)], 1),
        }

    return {"publishes": count, "memory": micros(memory), "redis": micros(redis_times)}


# --- main --------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "pairs": args.pairs,
        "messages_per_pair": args.messages,
        "cases": {},
    }
    prefix = f"omninudge-bench-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory(prefix="omninudge-bench-scale-") as tmp:
        root = Path(tmp)
        with _instances(1, {"OMNINUDGE_DEV_LOGIN": "1"}, root / "embedded") as urls:
            results["cases"]["embedded (SQLite, 1 process)"] = await _end_to_end(
                urls, args.pairs, args.messages
            )
        for count in (1, 2):
            with _database(args.pg) as database_url:
                env = {
                    "DATABASE_URL": database_url,
                    "REDIS_URL": args.redis,
                    "OMNINUDGE_REDIS_PREFIX": f"{prefix}{count}:",
                    "OMNINUDGE_JWT_SECRET": JWT_SECRET,
                    "OMNINUDGE_DEV_LOGIN": "1",
                }
                with _instances(count, env, root / f"pg{count}") as urls:
                    name = f"postgres+redis, {count} process{'es' if count > 1 else ''}"
                    results["cases"][name] = await _end_to_end(urls, args.pairs, args.messages)
    try:
        results["fanout"] = await _fanout_case(args.redis, f"{prefix}fanout:", args.publishes)
    finally:
        _delete_prefix(args.redis, prefix)
    return results


def _print(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}")
    print(f"{results['pairs']} pairs x {results['messages_per_pair']} messages\n")
    print("| setup | messages | msgs/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, case in results["cases"].items():
        print(
            f"| {name} | {case['messages']} | {case['msgs_per_s']} | {case['p50_ms']} "
            f"| {case['p99_ms']} |"
        )
    fanout = results["fanout"]
    print(f"\nfan-out round trip ({fanout['publishes']} publishes, one at a time)")
    print("| fan-out | mean µs | p99 µs |")
    print("|---|---:|---:|")
    for name in ("memory", "redis"):
        print(f"| {name} | {fanout[name]['mean_us']} | {fanout[name]['p99_us']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--messages", type=int, default=50, help="per pair (at most 50)")
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "OMNINUDGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # The server allows a burst of 50 messages per user; the closed loop stays inside it.
    args.messages = min(args.messages, 50)
    results = asyncio.run(_run(args))
    _print(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
