"""The ceilings the end-to-end figures are compared with, measured on the same machine
in the same run (docs/performance.md, "Ceilings"):

- transport: a bare ``websockets`` relay (no auth, no JSON parsing, no storage) in its
  own process; N sender/receiver pairs; each sender keeps --window frames in flight,
  each receiver answers every frame with a short ack relayed back. Frames are the
  size of a bench ``send`` frame. Reports relayed messages/s and the relay's CPU per
  message (from /proc).
- storage: batched raw INSERTs into the same ``messages`` table the adapters use,
  --batch rows per transaction: SQLite (WAL, synchronous=FULL, like the embedded
  default) and, with --pg, PostgreSQL (a throwaway database).

    python benchmarks/bench_ceilings.py [--seconds 5] [--pairs 64] [--pg URL] [--out f.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

FRAME_BYTES = 1100  # a bench `send` frame with a 200-byte body and 2 devices
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


# --- transport ------------------------------------------------------------------------


def _relay_main(port: int) -> None:
    from websockets.asyncio.server import serve

    peers: dict[str, Any] = {}

    async def handler(ws: Any) -> None:
        name = await ws.recv()  # "A3" / "B3": role and pair
        peers[name] = ws
        other = ("B" if name[0] == "A" else "A") + name[1:]
        async for frame in ws:
            target = peers.get(other)
            if target is not None:
                await target.send(frame)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
            await asyncio.Future()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


async def _transport_clients(port: int, pairs: int, window: int, seconds: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    payload = "x" * FRAME_BYTES
    url = f"ws://127.0.0.1:{port}"
    delivered = 0
    latencies: list[float] = []
    stop = time.monotonic() + 3600

    async def pair(index: int) -> None:
        nonlocal delivered
        a = await connect(url, compression=None, ping_interval=None)
        b = await connect(url, compression=None, ping_interval=None)
        await a.send(f"A{index}")
        await b.send(f"B{index}")
        await asyncio.sleep(0.2)
        sent_at: dict[str, float] = {}
        number = 0

        async def receiver() -> None:
            nonlocal delivered
            with contextlib.suppress(ConnectionClosed):
                async for frame in b:
                    delivered += 1
                    ref = frame[:12]
                    sent = sent_at.pop(ref.strip(), time.monotonic())
                    latencies.append(time.monotonic() - sent)
                    await b.send(ref)

        async def send_one() -> None:
            nonlocal number
            ref = f"{number:>12}"
            number += 1
            sent_at[ref.strip()] = time.monotonic()
            await a.send(ref + payload)

        task = asyncio.create_task(receiver())
        await barrier.wait()
        for _ in range(window):
            await send_one()
        with contextlib.suppress(ConnectionClosed):
            async for _ack in a:
                if time.monotonic() >= stop:
                    break
                await send_one()
        task.cancel()
        await a.close()
        await b.close()

    barrier = asyncio.Barrier(pairs + 1)
    tasks = [asyncio.create_task(pair(i)) for i in range(pairs)]
    await barrier.wait()
    start = time.monotonic()
    stop = start + seconds
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "delivered": delivered,
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(delivered / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3) if latencies else None,
    }


def transport_ceiling(pairs: int, window: int, seconds: float) -> dict[str, Any]:
    """The bare relay's throughput with ``pairs`` pairs (relay in its own process)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    relay = context.Process(target=_relay_main, args=(port,), daemon=True)
    relay.start()
    try:
        time.sleep(1.0)
        assert relay.pid is not None
        before = _cpu_of(relay.pid)
        clients_before = time.process_time()
        result = asyncio.run(_transport_clients(port, pairs, window, seconds))
        relay_cpu = _cpu_of(relay.pid) - before
    finally:
        relay.terminate()
        relay.join(5)
    result.update(
        pairs=pairs,
        window=window,
        frame_bytes=FRAME_BYTES,
        relay_cpu_ms_per_message=round(relay_cpu / max(result["delivered"], 1) * 1000, 4),
        clients_cpu_s=round(time.process_time() - clients_before, 3),
    )
    return result


# --- storage --------------------------------------------------------------------------


def _message_row(conversation_id: str, sender_id: str, envelope: str) -> tuple[Any, ...]:
    message_id = uuid.uuid4().hex
    return (message_id, conversation_id, sender_id, message_id, "platform", envelope)


async def _sqlite_setup(path: Path) -> tuple[str, str]:
    from omninudge_adapters.sqlite import open_sqlite_storage
    from omninudge_core.models import Conversation, ConversationKind, User

    now = datetime.now(UTC)
    async with open_sqlite_storage(path) as storage:
        a = await storage.users.create(User(id="ua", username="ceil_a", created_at=now))
        b = await storage.users.create(User(id="ub", username="ceil_b", created_at=now))
        conversation, _ = await storage.conversations.get_or_create(
            Conversation(
                id="c1", participants=(a.id, b.id), kind=ConversationKind.PLATFORM, created_at=now
            )
        )
    return conversation.id, a.id


def sqlite_ceiling(seconds: float, batch: int) -> dict[str, Any]:
    """Rows/s of raw ``INSERT INTO messages``, ``batch`` rows per transaction."""
    envelope = json.dumps({"ct": "x" * 600})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ceiling.db"
        conversation_id, sender_id = asyncio.run(_sqlite_setup(path))
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        rows = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO messages (id, conversation_id, sender_id, client_msg_id, origin,"
                " sent_at, envelope) VALUES (?, ?, ?, ?, ?, 0, ?)",
                [_message_row(conversation_id, sender_id, envelope) for _ in range(batch)],
            )
            db.execute("COMMIT")
            rows += batch
        elapsed = time.monotonic() - start
        db.close()
    return {"rows": rows, "batch": batch, "rows_per_s": round(rows / elapsed, 1)}


async def _pg_ceiling(admin_url: str, seconds: float, batch: int) -> dict[str, Any]:
    from bench_storage import throwaway_database

    from omninudge_adapters.postgres import open_postgres_storage
    from omninudge_core.models import Conversation, ConversationKind, User

    now = datetime.now(UTC)
    envelope = json.dumps({"ct": "x" * 600})
    async with throwaway_database(admin_url) as dsn:
        async with open_postgres_storage(dsn) as storage:
            a = await storage.users.create(User(id="ua", username="ceil_a", created_at=now))
            b = await storage.users.create(User(id="ub", username="ceil_b", created_at=now))
            conversation, _ = await storage.conversations.get_or_create(
                Conversation(
                    id="c1",
                    participants=(a.id, b.id),
                    kind=ConversationKind.PLATFORM,
                    created_at=now,
                )
            )
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            rows = 0
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                async with conn.transaction(), conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO messages (id, conversation_id, sender_id, client_msg_id,"
                        " origin, sent_at, envelope) VALUES (%s, %s, %s, %s, %s, now(), %s)",
                        [_message_row(conversation.id, a.id, envelope) for _ in range(batch)],
                    )
                rows += batch
            elapsed = time.monotonic() - start
    return {"rows": rows, "batch": batch, "rows_per_s": round(rows / elapsed, 1)}


def postgres_ceiling(admin_url: str, seconds: float, batch: int) -> dict[str, Any]:
    return asyncio.run(_pg_ceiling(admin_url, seconds, batch))


def run_ceilings(
    *, seconds: float, pairs: int, window: int, batch: int, pg: str | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "transport": transport_ceiling(pairs, window, seconds),
        "storage_sqlite": sqlite_ceiling(seconds, batch),
    }
    if pg:
        result["storage_postgres"] = postgres_ceiling(pg, seconds, batch)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pg", default=os.environ.get("OMNINUDGE_BENCH_PG"))
    parser.add_argument("--out")
    args = parser.parse_args()
    result = run_ceilings(
        seconds=args.seconds, pairs=args.pairs, window=args.window, batch=args.batch, pg=args.pg
    )
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
