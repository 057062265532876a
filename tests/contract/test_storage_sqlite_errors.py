"""SQLite adapter specifics: driver errors mapped to port errors, one writer at a time,
time round trips, configuration checks."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from omninudge_adapters.sqlite import open_sqlite_storage
from omninudge_core.errors import Unavailable
from omninudge_core.models import User
from tests.contract.conftest import new_id


def a_user(created_at: datetime | None = None) -> User:
    return User(
        id=new_id("u-"),
        username=new_id("n")[:20],
        created_at=created_at or datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_a_closed_storage_raises_unavailable(tmp_path: Path) -> None:
    async with open_sqlite_storage(tmp_path / "db.sqlite") as storage:
        pass
    with pytest.raises(Unavailable):
        await storage.ping()
    with pytest.raises(Unavailable):
        await storage.users.create(a_user())
    with pytest.raises(Unavailable):
        await storage.users.get("u-1")


async def test_opening_an_unusable_path_raises_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        async with open_sqlite_storage(tmp_path / "no-such-dir" / "db.sqlite"):
            pass


async def test_write_locked_by_another_process_raises_unavailable_and_reads_go_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.sqlite"
    async with open_sqlite_storage(path, busy_timeout_s=0.05) as storage:
        existing = await storage.users.create(a_user())
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            with pytest.raises(Unavailable) as caught:
                await storage.users.create(a_user())
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            # WAL: readers are not blocked by a writer.
            assert await storage.users.get(existing.id) == existing
            other.execute("ROLLBACK")
        finally:
            other.close()
        # The writer connection is usable again once the lock is released.
        assert await storage.users.create(user := a_user()) == user


async def test_times_round_trip_exactly_as_utc(tmp_path: Path) -> None:
    plus_two = timezone(timedelta(hours=2))
    moments = [
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 4, 5, 6, 7, 1, tzinfo=UTC),
        datetime(2026, 3, 4, 7, 6, 7, 654321, tzinfo=plus_two),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    async with open_sqlite_storage(tmp_path / "t.sqlite") as storage:
        for moment in moments:
            user = await storage.users.create(a_user(moment))
            stored = await storage.users.get(user.id)
            assert stored.created_at == moment
            assert stored.created_at.utcoffset() == timedelta(0)


async def test_naive_times_are_refused(tmp_path: Path) -> None:
    async with open_sqlite_storage(tmp_path / "naive.sqlite") as storage:
        with pytest.raises(ValueError, match="naive"):
            await storage.users.create(a_user(datetime(2026, 1, 1)))


async def test_unknown_synchronous_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        async with open_sqlite_storage(tmp_path / "s.sqlite", synchronous="OFF"):  # type: ignore[arg-type]
            pass


async def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "reopen.sqlite"
    async with open_sqlite_storage(path) as storage:
        user = await storage.users.create(a_user())
    async with open_sqlite_storage(path, synchronous="NORMAL") as storage:
        assert await storage.users.get(user.id) == user
