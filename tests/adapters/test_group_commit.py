"""Group commit in the SQLite and PostgreSQL message stores: concurrent appends share
one transaction, a bad append fails alone, and every caller returns after the commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omninudge_core.errors import NotFound
from omninudge_core.models import Conversation
from tests.contract.conftest import Factory, new_id

CONCURRENT = 40


@contextlib.asynccontextmanager
async def _open(backend: str, group_commit: bool, request: pytest.FixtureRequest, tmp: Path) -> Any:
    if backend == "sqlite":
        from omninudge_adapters.sqlite import open_sqlite_storage

        async with open_sqlite_storage(tmp / "g.db", group_commit=group_commit) as storage:
            yield storage
    else:
        from omninudge_adapters.postgres import open_postgres_storage

        dsn = request.getfixturevalue("postgres_dsn")
        async with open_postgres_storage(dsn, group_commit=group_commit) as storage:
            yield storage


def _commits(storage: Any, backend: str) -> int:
    if backend == "sqlite":
        return int(storage._db.groups_committed)
    return int(storage.messages.batches_written)


@pytest.fixture(params=["sqlite", "postgres"])
async def grouped(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    async with _open(request.param, True, request, tmp_path) as storage:
        yield request.param, storage


async def _pairs(make: Factory, count: int) -> list[Conversation]:
    return [await make.conversation() for _ in range(count)]


async def test_concurrent_appends_share_fewer_transactions_than_messages(
    grouped: tuple[str, Any],
) -> None:
    backend, storage = grouped
    make = Factory(storage)
    conversations = await _pairs(make, CONCURRENT)
    before = _commits(storage, backend)
    appended = await asyncio.gather(*(make.send(c, c.participants[0]) for c in conversations))
    assert all(a.created for a in appended)
    assert 0 < _commits(storage, backend) - before < CONCURRENT
    # Every acknowledged append is readable (committed) once append returned.
    for conversation, result in zip(conversations, appended, strict=True):
        assert (await storage.messages.get(result.message.id)).id == result.message.id
        sender = conversation.participants[0]
        assert await storage.events.last_seq(sender) == 1


async def test_a_bad_append_in_a_group_fails_alone(grouped: tuple[str, Any]) -> None:
    _, storage = grouped
    make = Factory(storage)
    conversations = await _pairs(make, 10)
    ghost = Conversation(
        id=new_id("c-missing-"),
        participants=conversations[0].participants,
        kind=conversations[0].kind,
        created_at=conversations[0].created_at,
    )
    results = await asyncio.gather(
        *(make.send(c, c.participants[0]) for c in conversations[:5]),
        make.send(ghost, ghost.participants[0]),
        *(make.send(c, c.participants[0]) for c in conversations[5:]),
        return_exceptions=True,
    )
    assert isinstance(results[5], NotFound)
    good = [r for i, r in enumerate(results) if i != 5]
    assert all(not isinstance(r, BaseException) and r.created for r in good)
    for result in good:
        assert not isinstance(result, BaseException)
        assert (await storage.messages.get(result.message.id)).id == result.message.id


async def test_a_replay_inside_one_group_returns_the_original(grouped: tuple[str, Any]) -> None:
    _, storage = grouped
    make = Factory(storage)
    conversation = await make.conversation()
    sender = conversation.participants[0]
    first, second = await asyncio.gather(
        make.send(conversation, sender, client_msg_id="same-id"),
        make.send(conversation, sender, client_msg_id="same-id"),
    )
    assert sorted([first.created, second.created]) == [False, True]
    assert first.message.id == second.message.id
    assert await storage.events.last_seq(sender) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_without_group_commit_each_append_commits_alone(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with _open(backend, False, request, tmp_path) as storage:
        make = Factory(storage)
        conversations = await _pairs(make, 10)
        before = _commits(storage, backend)
        appended = await asyncio.gather(*(make.send(c, c.participants[0]) for c in conversations))
        assert all(a.created for a in appended)
        assert _commits(storage, backend) == before  # the grouped path was never taken
