"""PostgreSQL durability: a message acknowledged to its sender (``append`` returned) is
in the database afterwards, whether the writing process is SIGKILLed mid-stream or
the PostgreSQL server itself crashes (immediate stop: no shutdown checkpoint, WAL
replay on restart). Also: concurrent writers over overlapping conversations never
deadlock and leave every stream gap-free."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from omninudge_adapters.postgres import migrate_postgres, open_postgres_storage
from omninudge_core.models import Conversation, ConversationKind, Message, Origin, User
from omninudge_core.ports import Storage
from tests.contract.durability import append_until_killed, check_survivors
from tests.services import PostgresCluster, create_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]

# The writer-SIGKILL drill is the shared one (tests/contract/durability.py). The server
# crash drill needs a child that outlives the server going away, so it has its own:
# it appends forever, printing each id only after ``append`` returned (= after the
# commit), and keeps going through errors while PostgreSQL is down.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from datetime import UTC, datetime, timedelta
    from omninudge_adapters.postgres import open_postgres_storage
    from omninudge_core.models import Message, Origin

    async def main(dsn, conversation_id, sender_id, recipient_id):
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        async with open_postgres_storage(dsn, max_size=2, connect_timeout_s=2) as storage:
            for index in range(1_000_000):
                message = Message(
                    id=f"m-{uuid.uuid4().hex}", conversation_id=conversation_id,
                    sender_id=sender_id, client_msg_id=uuid.uuid4().hex,
                    origin=Origin.REDDIT, sent_at=t0 + timedelta(milliseconds=index),
                    text=f"message {index}",
                )
                try:
                    await storage.messages.append(message, [], [sender_id, recipient_id])
                except Exception as exc:  # the server is going away: stop acknowledging
                    print("error", type(exc).__name__, flush=True)
                    await asyncio.sleep(0.05)
                    continue
                print(message.id, flush=True)

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def make_pair(storage: Storage) -> tuple[User, User, Conversation]:
    users = []
    for _ in range(2):
        suffix = uuid.uuid4().hex[:12]
        users.append(
            await storage.users.create(
                User(id=f"u-{suffix}", username=f"d_{suffix}", created_at=T0)
            )
        )
    conversation, _ = await storage.conversations.get_or_create(
        Conversation(
            id=f"c-{uuid.uuid4().hex}",
            participants=(users[0].id, users[1].id),
            kind=ConversationKind.PLATFORM,
            created_at=T0,
        )
    )
    return users[0], users[1], conversation


def start_child(
    dsn: str, sender: User, recipient: User, conversation: Conversation
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, dsn, conversation.id, sender.id, recipient.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def read_acknowledged(child: subprocess.Popen[str], count: int, timeout_s: float = 30) -> list[str]:
    """Read printed ids until ``count`` of them (blocking; the child prints steadily)."""
    assert child.stdout is not None
    ids: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(ids) < count:
        assert time.monotonic() < deadline, f"only {len(ids)} acknowledged in {timeout_s} s"
        line = child.stdout.readline()
        assert line, "the child exited early"
        if line.startswith("m-"):
            ids.append(line.strip())
    return ids


def kill(child: subprocess.Popen[str]) -> list[str]:
    """SIGKILL the child; return the ids it printed that were not read yet."""
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=10)
    return [line.strip() for line in rest.splitlines() if line.startswith("m-")]


async def assert_all_present(storage: Storage, recipient: User, ids: list[str]) -> None:
    for message_id in ids:
        assert (await storage.messages.get(message_id)).id == message_id
    last = await storage.events.last_seq(recipient.id)
    events = await storage.events.read(recipient.id, after=0, limit=last + 1)
    assert [event.seq for event in events] == list(range(1, last + 1))
    streamed = {event.message.id for event in events if event.message is not None}
    assert set(ids) <= streamed


async def test_acknowledged_messages_survive_sigkill_of_the_writer(postgres_dsn: str) -> None:
    run = await append_until_killed("postgres", postgres_dsn, kill_after=150)
    async with open_postgres_storage(postgres_dsn) as storage:
        await check_survivors(storage, run)


async def test_acknowledged_messages_survive_a_postgres_crash(
    postgres_cluster_factory: Callable[[], PostgresCluster],
) -> None:
    cluster = postgres_cluster_factory()
    dsn = create_database(cluster.admin_url)
    await migrate_postgres(dsn)
    async with open_postgres_storage(dsn) as storage:
        sender, recipient, conversation = await make_pair(storage)
    child = start_child(dsn, sender, recipient, conversation)
    try:
        acknowledged = await asyncio.to_thread(read_acknowledged, child, 150)
        # Crash the server under load: no shutdown checkpoint, recovery replays the WAL.
        await asyncio.to_thread(cluster.stop, "immediate")
    finally:
        acknowledged += kill(child)
    await asyncio.to_thread(cluster.start)
    async with open_postgres_storage(dsn) as storage:
        await assert_all_present(storage, recipient, acknowledged)


async def test_storage_reports_unavailable_then_recovers_after_a_restart(
    postgres_cluster_factory: Callable[[], PostgresCluster],
) -> None:
    from omninudge_core.errors import Unavailable

    cluster = postgres_cluster_factory()
    dsn = create_database(cluster.admin_url)
    async with open_postgres_storage(dsn, max_size=4, connect_timeout_s=2) as storage:
        sender, recipient, conversation = await make_pair(storage)
        await asyncio.to_thread(cluster.stop, "immediate")
        with pytest.raises(Unavailable):
            await storage.ping()
        await asyncio.to_thread(cluster.start)
        deadline = time.monotonic() + 15
        while True:  # stale pooled connections fail once each, then the pool reconnects
            try:
                await storage.ping()
                break
            except Unavailable:
                assert time.monotonic() < deadline, "the pool did not reconnect"
                await asyncio.sleep(0.1)
        message = Message(
            id=f"m-{uuid.uuid4().hex}",
            conversation_id=conversation.id,
            sender_id=sender.id,
            client_msg_id=uuid.uuid4().hex,
            origin=Origin.REDDIT,
            sent_at=T0,
            text="after the restart",
        )
        appended = await storage.messages.append(message, [], [recipient.id])
        assert appended.created
        assert await storage.messages.get(message.id) == message


async def test_concurrent_writers_on_overlapping_conversations_keep_streams_gap_free(
    postgres_dsn: str,
) -> None:
    """Three users, three conversations between them, 90 concurrent appends that each
    lock two streams: sorted lock order means no deadlock, and every stream stays
    gap-free with one event per message notified to it."""
    async with open_postgres_storage(postgres_dsn, max_size=10) as storage:
        a, b, _ = await make_pair(storage)
        c, _, _ = await make_pair(storage)
        conversations = []
        for left, right in ((a, b), (b, c), (c, a)):
            conversation, _ = await storage.conversations.get_or_create(
                Conversation(
                    id=f"c-{uuid.uuid4().hex}",
                    participants=(left.id, right.id),
                    kind=ConversationKind.PLATFORM,
                    created_at=T0,
                )
            )
            conversations.append((conversation, left, right))

        async def send(index: int) -> None:
            conversation, left, right = conversations[index % 3]
            sender, recipient = (left, right) if index % 2 else (right, left)
            message = Message(
                id=f"m-{uuid.uuid4().hex}",
                conversation_id=conversation.id,
                sender_id=sender.id,
                client_msg_id=uuid.uuid4().hex,
                origin=Origin.REDDIT,
                sent_at=T0 + timedelta(milliseconds=index),
                text=str(index),
            )
            # Notify in both orders so the caller's order never decides the lock order.
            notify = [sender.id, recipient.id] if index % 4 < 2 else [recipient.id, sender.id]
            await storage.messages.append(message, [], notify)

        await asyncio.wait_for(asyncio.gather(*(send(i) for i in range(90))), timeout=60)
        for user in (a, b, c):
            events = await storage.events.read(user.id, after=0, limit=1000)
            assert [event.seq for event in events] == list(range(1, 61))
