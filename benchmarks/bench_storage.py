"""Storage benchmark: messages appended per second and history pages read per second,
for the SQLite and PostgreSQL adapters, against a raw psycopg INSERT loop into the
same ``messages`` table (the floor an adapter cannot beat).

    python benchmarks/bench_storage.py [--messages 2000] [--pg URL] [--out result.json]

Cases (each bounded by --messages and by --case-budget-s):

- append, 1 sender: one coroutine appends one message after another (each append is
  a message, one delivery row, two stream events and the conversation bump);
- append, 16 senders: 16 coroutines, each in its own conversation, at once;
- append, 16 senders, one conversation: the same, all in one hot conversation;
- history: pages of 50, newest first, walking a conversation of --messages messages;
- raw INSERT (PostgreSQL only): ``INSERT INTO messages`` alone, 1 and 16 connections.

PostgreSQL: --pg (default $OMNINUDGE_BENCH_PG, else postgresql://postgres@127.0.0.1:5432/postgres)
is an admin URL; the benchmark creates a throwaway database there and drops it.
Prints a markdown table; --out writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from omninudge_adapters.postgres import open_postgres_storage
from omninudge_adapters.postgres.rows import envelope_to_json
from omninudge_core.models import (
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    Envelope,
    Message,
    Origin,
    User,
    WrappedKey,
)
from omninudge_core.ports import Storage

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAGE = 50
CONCURRENCY = 16


@attrs.frozen
class Result:
    backend: str
    case: str
    operations: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0


def envelope(index: int) -> Envelope:
    """A realistic platform envelope (~0.6 KiB): two devices, base64url fields."""
    return Envelope(
        v=1,
        alg="ECDH-P256+HKDF-SHA256+A256GCM+ES256",
        sender_device="d-sender",
        epk="B" + "x" * 86,
        iv="aXZpdml2aXZpdml2",
        ct=f"{index:08d}" + "c" * 200,
        keys=tuple(
            WrappedKey(device=d, iv="aXZpdml2aXZpdml2", wk="w" * 64) for d in ("d-1", "d-2")
        ),
        sig="s" * 86,
    )


def new_message(conversation: Conversation, sender: str, index: int) -> Message:
    return Message(
        id=f"m-{uuid.uuid4().hex}",
        conversation_id=conversation.id,
        sender_id=sender,
        client_msg_id=uuid.uuid4().hex,
        origin=Origin.PLATFORM,
        sent_at=T0 + timedelta(microseconds=index),
        envelope=envelope(index),
    )


async def make_conversations(storage: Storage, count: int) -> list[Conversation]:
    conversations = []
    for _ in range(count):
        ids = []
        for _ in range(2):
            suffix = uuid.uuid4().hex[:16]
            user = User(id=f"u-{suffix}", username=f"bench_{suffix}", created_at=T0)
            ids.append((await storage.users.create(user)).id)
        conversation, _ = await storage.conversations.get_or_create(
            Conversation(
                id=f"c-{uuid.uuid4().hex}",
                participants=(ids[0], ids[1]),
                kind=ConversationKind.PLATFORM,
                created_at=T0,
            )
        )
        conversations.append(conversation)
    return conversations


async def timed(
    count: int, workers: int, work: Callable[[int, int], Awaitable[None]], budget_s: float
) -> tuple[int, float]:
    """Run ``work(worker, index)`` for count operations split over workers; stop early
    at the time budget. Returns (operations done, seconds)."""
    done = 0
    start = time.perf_counter()
    deadline = start + budget_s

    async def worker(number: int) -> None:
        nonlocal done
        for index in range(number, count, workers):
            if time.perf_counter() > deadline:
                return
            await work(number, index)
            done += 1

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return done, time.perf_counter() - start


async def bench_adapter(
    backend: str,
    # Any, not Storage: an adapter whose store attributes are not typed as the ports
    # does not match the (invariant) Storage protocol for mypy, yet works.
    opener: Callable[[], AbstractAsyncContextManager[Any]],
    count: int,
    budget_s: float,
) -> list[Result]:
    results = []
    async with opener() as opened:
        storage: Storage = opened
        conversations = await make_conversations(storage, CONCURRENCY + 1)
        solo, many = conversations[0], conversations[1:]

        async def append(conversation: Conversation, index: int) -> None:
            sender, recipient = conversation.participants
            message = new_message(conversation, sender, index)
            delivery = DeliveryRecord(
                message_id=message.id,
                recipient_id=recipient,
                device_id="d-1",
                status=DeliveryStatus.ACCEPTED,
                updated_at=message.sent_at,
            )
            await storage.messages.append(message, [delivery], [recipient, sender])

        cases: list[tuple[str, int, Callable[[int, int], Awaitable[None]]]] = [
            ("append, 1 sender", 1, lambda _w, i: append(solo, i)),
            (f"append, {CONCURRENCY} senders", CONCURRENCY, lambda w, i: append(many[w], i)),
            (
                f"append, {CONCURRENCY} senders, one conversation",
                CONCURRENCY,
                lambda _w, i: append(many[0], count + i),
            ),
        ]
        for name, workers, work in cases:
            done, seconds = await timed(count, workers, work, budget_s)
            results.append(Result(backend, name, done, seconds))

        async def read_page(state: dict[str, str | None], _index: int) -> None:
            page = await storage.messages.history(solo.id, before=state["cursor"], limit=PAGE)
            state["cursor"] = page.next_cursor  # back to the newest page at the end

        state: dict[str, str | None] = {"cursor": None}
        pages = max(count // 2, 1)
        done, seconds = await timed(pages, 1, lambda _w, i: read_page(state, i), budget_s)
        results.append(Result(backend, f"history page of {PAGE}", done, seconds))
    return results


async def bench_raw_insert(dsn: str, count: int, budget_s: float) -> list[Result]:
    """The floor: the same message rows, one plain INSERT per message, autocommit."""
    async with open_postgres_storage(dsn) as storage:
        conversations = await make_conversations(storage, CONCURRENCY + 1)
    insert = (
        "INSERT INTO messages (id, conversation_id, sender_id, client_msg_id, origin, sent_at,"
        " envelope) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )
    results = []
    async with AsyncConnectionPool(
        dsn, min_size=CONCURRENCY, max_size=CONCURRENCY, kwargs={"autocommit": True}, open=False
    ) as pool:
        await pool.wait()

        async def raw(conversation: Conversation, index: int) -> None:
            message = new_message(conversation, conversation.participants[0], index)
            assert message.envelope is not None
            async with pool.connection() as conn:
                await conn.execute(
                    insert,
                    (
                        message.id,
                        message.conversation_id,
                        message.sender_id,
                        message.client_msg_id,
                        message.origin.value,
                        message.sent_at,
                        Jsonb(envelope_to_json(message.envelope)),
                    ),
                )

        for name, workers in (("raw INSERT, 1 connection", 1), ("raw INSERT, 16 connections", 16)):
            done, seconds = await timed(
                count, workers, lambda w, i: raw(conversations[w], i), budget_s
            )
            results.append(Result("postgres", name, done, seconds))
    return results


@asynccontextmanager
async def throwaway_database(admin_url: str) -> AsyncIterator[str]:
    name = f"omninudge_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    info["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo("", **info)
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def machine() -> dict[str, Any]:
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def server_version(admin_url: str) -> str:
    async with await psycopg.AsyncConnection.connect(admin_url) as conn:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
    return str(row[0]) if row else "?"


def ratios(results: list[Result]) -> dict[str, float]:
    """Raw INSERT rate / adapter append rate (1.0 = as fast as the raw loop)."""
    by_case = {(r.backend, r.case): r.per_second for r in results}
    out: dict[str, float] = {}
    pairs = {
        "1 sender": ("append, 1 sender", "raw INSERT, 1 connection"),
        f"{CONCURRENCY} senders": (f"append, {CONCURRENCY} senders", "raw INSERT, 16 connections"),
    }
    for label, (adapter_case, raw_case) in pairs.items():
        adapter = by_case.get(("postgres", adapter_case))
        raw = by_case.get(("postgres", raw_case))
        if adapter and raw:
            out[label] = round(raw / adapter, 2)
    return out


def markdown(results: list[Result], raw_ratios: dict[str, float]) -> str:
    lines = [
        "| backend | case | operations | seconds | per second |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.case} | {r.operations} | {r.seconds:.2f} | {r.per_second:,.0f} |"
        )
    for label, ratio in raw_ratios.items():
        lines.append(f"\nPostgreSQL raw INSERT / adapter append, {label}: {ratio:.2f}x")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[Result] = []
    notes: list[str] = []
    info = machine()
    if "sqlite" in args.backends:
        try:
            from omninudge_adapters.sqlite import open_sqlite_storage
        except ImportError:
            notes.append("sqlite: adapter not importable, skipped")
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "bench.db"
                results += await bench_adapter(
                    "sqlite", lambda: open_sqlite_storage(path), args.messages, args.case_budget_s
                )
    if "postgres" in args.backends:
        try:
            info["postgresql"] = await server_version(args.pg)
        except psycopg.Error as exc:
            notes.append(f"postgres: {args.pg} does not answer ({exc}), skipped")
        else:
            async with throwaway_database(args.pg) as dsn:
                results += await bench_adapter(
                    "postgres",
                    lambda: open_postgres_storage(dsn, min_size=CONCURRENCY, max_size=CONCURRENCY),
                    args.messages,
                    args.case_budget_s,
                )
                results += await bench_raw_insert(dsn, args.messages, args.case_budget_s)
    raw_ratios = ratios(results)
    print(markdown(results, raw_ratios))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return {
        "benchmark": "storage",
        "command": " ".join(["python", "benchmarks/bench_storage.py", *sys.argv[1:]]),
        "machine": info,
        "messages_per_case": args.messages,
        "results": [{**attrs.asdict(r), "per_second": round(r.per_second, 1)} for r in results],
        "raw_insert_over_adapter": raw_ratios,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Storage benchmark: appends/s and history pages/s, SQLite and PostgreSQL.",
    )
    parser.add_argument("--messages", type=int, default=2000, help="operations per case")
    parser.add_argument(
        "--case-budget-s", type=float, default=8.0, help="stop a case after this many seconds"
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "OMNINUDGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin URL of a PostgreSQL server (a throwaway database is made there)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=["sqlite", "postgres"],
        default=["sqlite", "postgres"],
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON to this path")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
