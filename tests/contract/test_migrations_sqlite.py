"""SQLite schema migrations: empty -> head, every earlier version -> head, idempotent."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from omninudge_adapters.sqlite import (
    applied_versions,
    head_version,
    migrate_sqlite,
    open_sqlite_storage,
)
from omninudge_adapters.sqlite.rows import to_micros
from omninudge_core.errors import Unavailable
from tests.contract.conftest import T0

HEAD = head_version()


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    """Every table and index with its SQL (ALTERs rewrite the CREATE text, so a
    database migrated step by step must read exactly like one migrated at once)."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
        ).fetchall()
    connection.close()
    return [(str(t), str(n), str(s)) for t, n, s in rows]


async def reference_schema(tmp_path: Path) -> list[tuple[str, str, str]]:
    path = tmp_path / "reference.db"
    await migrate_sqlite(path)
    return schema_of(path)


def test_there_are_several_versions_to_upgrade_through() -> None:
    assert HEAD >= 2


async def test_empty_database_migrates_to_head(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    assert await migrate_sqlite(path) == list(range(1, HEAD + 1))
    assert await applied_versions(path) == list(range(1, HEAD + 1))
    names = {name for kind, name, _ in schema_of(path) if kind == "table"}
    assert {
        "users",
        "devices",
        "blocks",
        "conversations",
        "messages",
        "deliveries",
        "read_marks",
        "user_streams",
        "events",
        "media",
        "media_shares",
        "invitations",
        "migrations",
        "reddit_tokens",
        "schema_migrations",
    } <= names


async def test_migrating_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    await migrate_sqlite(path)
    before = schema_of(path)
    assert await migrate_sqlite(path) == []
    assert schema_of(path) == before


async def test_concurrent_migrations_apply_each_version_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    results = await asyncio.gather(*(migrate_sqlite(path) for _ in range(3)))
    assert sorted(v for applied in results for v in applied) == list(range(1, HEAD + 1))
    assert await applied_versions(path) == list(range(1, HEAD + 1))


def _seed_version_one_data(path: Path) -> None:
    """Rows written by a version-1 server: two users, two conversations, a message."""
    with sqlite3.connect(path) as connection:
        for user_id in ("u-a", "u-b", "u-c"):
            connection.execute(
                "INSERT INTO users (id, username, username_lower, reddit_id, on_platform,"
                " settings, created_at) VALUES (?, ?, ?, NULL, 1, ?, ?)",
                (
                    user_id,
                    user_id.upper(),
                    user_id,
                    '{"presence_visible":true,"read_receipts":true}',
                    to_micros(T0),
                ),
            )
        # c-old was created first but has the newest message; c-new has none.
        connection.execute(
            "INSERT INTO conversations (id, user_a, user_b, kind, upgrade_state, created_at,"
            " last_message_at) VALUES ('c-old', 'u-a', 'u-b', 'platform', 'none', ?, ?)",
            (to_micros(T0), to_micros(T0 + timedelta(hours=2))),
        )
        connection.execute(
            "INSERT INTO conversations (id, user_a, user_b, kind, upgrade_state, created_at,"
            " last_message_at) VALUES ('c-new', 'u-a', 'u-c', 'platform', 'none', ?, NULL)",
            (to_micros(T0 + timedelta(hours=1)),),
        )
        connection.execute(
            "INSERT INTO messages (id, conversation_id, sender_id, client_msg_id, origin,"
            " sent_at, envelope, text, reddit_fullname)"
            " VALUES ('m-1', 'c-old', 'u-b', 'cm-1', 'reddit', ?, NULL, 'hi', 't4_1')",
            (to_micros(T0 + timedelta(hours=2)),),
        )
    connection.close()


@pytest.mark.parametrize("version", range(1, HEAD))
async def test_database_at_every_earlier_version_migrates_to_head(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / f"at_{version}.db"
    assert await migrate_sqlite(path, target=version) == list(range(1, version + 1))
    _seed_version_one_data(path)
    assert await migrate_sqlite(path) == list(range(version + 1, HEAD + 1))
    assert schema_of(path) == await reference_schema(tmp_path)
    async with open_sqlite_storage(path) as storage:
        assert (await storage.users.get("u-a")).username == "U-A"
        assert (await storage.messages.get("m-1")).text == "hi"
        page = await storage.conversations.list_for_user("u-a", before=None, limit=10)
        assert [view.conversation.id for view in page.items] == ["c-old", "c-new"]
        assert [view.unread for view in page.items] == [1, 0]


async def test_unwritable_path_raises_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        await migrate_sqlite(tmp_path / "missing-dir" / "x.db")
