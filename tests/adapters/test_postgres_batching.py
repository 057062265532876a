"""PostgreSQL statement batching (``postgres.batching``): concurrent lookups share one
statement and each caller gets its own rows; a write batch is one transaction that a
rejected statement rolls back whole before each write is retried alone; the array
parameters round-trip every character."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from omninudge_core.errors import NotFound
from omninudge_core.models import Block, EventKind
from omninudge_core.ports import NewEvent
from tests.contract.conftest import T0, Factory, new_id

CONCURRENT = 20


@pytest.fixture
async def storage(postgres_dsn: str) -> AsyncIterator[Any]:
    from omninudge_adapters.postgres import open_postgres_storage

    async with open_postgres_storage(postgres_dsn) as opened:
        yield opened


async def test_concurrent_lookups_share_statements_and_get_their_own_rows(storage: Any) -> None:
    make = Factory(storage)
    users = [await make.user() for _ in range(CONCURRENT)]
    devices = {user.id: await make.device(user) for user in users}
    before = storage._db.read_batches
    found, owned = await asyncio.gather(
        asyncio.gather(*(storage.users.get(user.id) for user in users)),
        asyncio.gather(*(storage.devices.for_users([user.id]) for user in users)),
    )
    assert [user.id for user in found] == [user.id for user in users]
    for user, by_user in zip(users, owned, strict=True):
        assert [d.device_id for d in by_user[user.id]] == [devices[user.id].device_id]
    # 40 reads, two lookup queries: a batch or two, not 40 round trips.
    assert 1 <= storage._db.read_batches - before <= 2


async def test_a_missing_key_in_a_merged_lookup_is_not_found_for_its_caller_only(
    storage: Any,
) -> None:
    make = Factory(storage)
    user = await make.user()
    results = await asyncio.gather(
        storage.users.get(user.id), storage.users.get(new_id("u-ghost-")), return_exceptions=True
    )
    assert not isinstance(results[0], BaseException)
    assert results[0].id == user.id
    assert isinstance(results[1], NotFound)


async def test_merged_block_checks_answer_each_pair(storage: Any) -> None:
    make = Factory(storage)
    a, b, c, d = [await make.user() for _ in range(4)]
    await storage.blocks.put(Block(blocker_id=a.id, blocked_id=b.id, created_at=T0))
    await storage.blocks.put(Block(blocker_id=d.id, blocked_id=c.id, created_at=T0))
    answers = await asyncio.gather(
        storage.blocks.between(a.id, b.id),
        storage.blocks.between(b.id, a.id),
        storage.blocks.between(c.id, d.id),
        storage.blocks.between(a.id, d.id),  # both block someone, not each other
        storage.blocks.between(b.id, c.id),
    )
    assert answers == [True, True, True, False, False]


async def test_a_rejected_write_batch_commits_nothing_before_the_retries(storage: Any) -> None:
    """Ten good event appends and one for an unknown message share a batch: the bad one
    fails alone, and each good one is in the stream exactly once (a partly committed
    batch, then retried, would leave seq past 10)."""
    make = Factory(storage)
    user = await make.user()
    good = [
        storage.events.append([NewEvent(user_id=user.id, kind=EventKind.RECEIPT, payload={"i": i})])
        for i in range(10)
    ]
    bad = storage.events.append(
        [NewEvent(user_id=user.id, kind=EventKind.MESSAGE, message_id=new_id("m-ghost-"))]
    )
    before = storage.messages.batches_written
    results = await asyncio.gather(*good[:5], bad, *good[5:], return_exceptions=True)
    assert isinstance(results[5], NotFound)
    assert storage.messages.batches_written == before  # the failed batch did not commit
    assert await storage.events.last_seq(user.id) == 10
    events = await storage.events.read(user.id, after=0, limit=100)
    assert [e.seq for e in events] == list(range(1, 11))
    assert sorted(e.payload["i"] for e in events if e.payload) == list(range(10))


async def test_without_group_commit_writes_go_alone(postgres_dsn: str) -> None:
    from omninudge_adapters.postgres import open_postgres_storage

    async with open_postgres_storage(postgres_dsn, group_commit=False) as storage:
        make = Factory(storage)
        user = await make.user()
        appended = await asyncio.gather(
            *(
                storage.events.append([NewEvent(user_id=user.id, kind=EventKind.RECEIPT)])
                for _ in range(5)
            )
        )
        assert sorted(events[0].seq for events in appended) == [1, 2, 3, 4, 5]
        assert storage.messages.batches_written == 0


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ['say "hi"', "back\\slash", "a,b", "{braces}", "NULL", None, "ünïcødé ✓", " x "],
    ],
)
async def test_text_arrays_round_trip(storage: Any, values: list[str | None]) -> None:
    from omninudge_adapters.postgres.arrays import TextArray

    async with storage._db.connection("test") as conn:
        cur = await conn.execute("SELECT %s::text[]", (TextArray(values),))
        assert (await cur.fetchone())[0] == values


async def test_timestamp_and_jsonb_arrays_round_trip(storage: Any) -> None:
    from omninudge_adapters.postgres.arrays import JsonbArray, TimestampArray

    moments = [T0, T0 + timedelta(microseconds=1), datetime(1999, 12, 31, 23, 59, tzinfo=UTC)]
    documents = [{"quote": 'a "b" \\ c', "n": [1, 2.5, None], "ok": True}, None, {}]
    async with storage._db.connection("test") as conn:
        cur = await conn.execute(
            "SELECT %s::timestamptz[], %s::jsonb[]",
            (TimestampArray(moments), JsonbArray(documents)),
        )
        row = await cur.fetchone()
    assert row[0] == moments
    assert row[1] == documents
