"""Crash durability drill, shared by every relational backend.

A child process opens the storage, makes a conversation, and appends messages from a
few concurrent senders, printing each message id only after ``append`` returned (the
moment the server would acknowledge it to the sender). The parent SIGKILLs the child
mid-stream, then the test reopens the database and checks that every printed id is
there: an acknowledged message is never lost.

Use:
    run = await append_until_killed("sqlite", str(path))
    async with open_sqlite_storage(path) as storage:
        await check_survivors(storage, run)

Run as a script, this module is the child: ``python durability.py BACKEND TARGET``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs

from omninudge_core.errors import NotFound
from omninudge_core.models import (
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    Message,
    Origin,
    User,
)
from omninudge_core.ports import Storage

__all__ = ["DurabilityRun", "append_until_killed", "check_survivors", "open_backend"]

_SENDERS = 4
_REPO_ROOT = Path(__file__).resolve().parents[2]


@attrs.frozen
class DurabilityRun:
    conversation_id: str
    recipient_id: str
    acknowledged: tuple[str, ...]


@asynccontextmanager
async def open_backend(backend: str, target: str) -> AsyncIterator[Storage]:
    """Open ``target`` (a file path for sqlite, a DSN for postgres) as a Storage.
    ``sqlite-normal`` is SQLite with ``synchronous=NORMAL``."""
    if backend in ("sqlite", "sqlite-normal"):
        from omninudge_adapters.sqlite import open_sqlite_storage

        synchronous = "NORMAL" if backend == "sqlite-normal" else "FULL"
        async with open_sqlite_storage(target, synchronous=synchronous) as storage:
            yield storage
    elif backend == "postgres":
        from omninudge_adapters.postgres import open_postgres_storage

        async with open_postgres_storage(target) as storage:
            yield storage
    else:
        raise ValueError(f"unknown backend {backend!r}")


async def append_until_killed(
    backend: str, target: str, *, kill_after: int = 40, timeout_s: float = 60.0
) -> DurabilityRun:
    """Start the child, SIGKILL it once it has acknowledged ``kill_after`` messages,
    and return every id it printed (including lines already in the pipe)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(_REPO_ROOT / "src"), str(_REPO_ROOT), env.get("PYTHONPATH", "")]
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        backend,
        target,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    header: list[str] = []
    acknowledged: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(acknowledged) < kill_after:
                line = (await child.stdout.readline()).decode()
                if not line:
                    stderr = await child.stderr.read() if child.stderr else b""
                    raise AssertionError(f"child exited early: {stderr.decode()[-2000:]}")
                kind, _, value = line.strip().partition(" ")
                (header if kind == "conversation" else acknowledged).append(value)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
    # Lines the child flushed before it died are acknowledgements too.
    rest = await child.stdout.read()
    await child.wait()
    assert child.returncode == -signal.SIGKILL
    for line in rest.decode().splitlines():
        kind, _, value = line.strip().partition(" ")
        if kind == "sent":
            acknowledged.append(value)
    conversation_id, recipient_id = header[0].split(",")
    return DurabilityRun(conversation_id, recipient_id, tuple(acknowledged))


async def check_survivors(storage: Storage, run: DurabilityRun) -> None:
    """Every acknowledged message is stored; the recipient's stream has no gap."""
    assert len(run.acknowledged) >= 1
    missing = []
    for message_id in run.acknowledged:
        try:
            await storage.messages.get(message_id)
        except NotFound:  # collected to report every loss at once
            missing.append(message_id)
    assert missing == [], f"{len(missing)} acknowledged messages lost"
    last_seq = await storage.events.last_seq(run.recipient_id)
    events = await storage.events.read(run.recipient_id, after=0, limit=100_000)
    assert [e.seq for e in events] == list(range(1, last_seq + 1))
    assert last_seq >= len(run.acknowledged)


# --- the child ------------------------------------------------------------------------


async def _child(backend: str, target: str) -> None:
    now = datetime.now(UTC)
    async with open_backend(backend, target) as storage:
        tag = uuid.uuid4().hex[:12]
        sender = await storage.users.create(
            User(id=f"u-{tag}-a", username=f"dur_a_{tag}", created_at=now)
        )
        recipient = await storage.users.create(
            User(id=f"u-{tag}-b", username=f"dur_b_{tag}", created_at=now)
        )
        conversation, _ = await storage.conversations.get_or_create(
            Conversation(
                id=f"c-{tag}",
                participants=(sender.id, recipient.id),
                kind=ConversationKind.PLATFORM,
                created_at=now,
            )
        )
        print(f"conversation {conversation.id},{recipient.id}", flush=True)

        async def send_forever(lane: int) -> None:
            index = 0
            while True:
                index += 1
                message = Message(
                    id=f"m-{tag}-{lane}-{index}",
                    conversation_id=conversation.id,
                    sender_id=sender.id,
                    client_msg_id=f"{lane}-{index}",
                    origin=Origin.REDDIT,
                    sent_at=now + timedelta(microseconds=index * _SENDERS + lane),
                    text=f"message {index} of lane {lane}",
                )
                delivery = DeliveryRecord(
                    message.id, recipient.id, "reddit", DeliveryStatus.ACCEPTED, message.sent_at
                )
                await storage.messages.append(message, [delivery], [sender.id, recipient.id])
                # Printed only after append returned: this is the acknowledgement.
                print(f"sent {message.id}", flush=True)

        await asyncio.gather(*(send_forever(lane) for lane in range(_SENDERS)))


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], sys.argv[2]))
