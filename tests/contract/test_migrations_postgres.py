"""PostgreSQL schema migrations: empty -> head, every earlier version -> head, idempotent,
safe when several processes migrate at once, and kind to the data already there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest

from omninudge_adapters.postgres import (
    available_migrations,
    migrate_postgres,
    open_postgres_storage,
)
from omninudge_core.errors import Unavailable

HEAD = available_migrations()[-1].version
EARLIER_VERSIONS = list(range(1, HEAD))

# The tables and indexes the adapter relies on (docs/storage.md lists them).
EXPECTED_TABLES = {
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
}
EXPECTED_INDEXES = {
    "users_reddit_id_key",
    "users_username_lower_key",
    "users_username_idx",
    "messages_conversation_history_idx",
    "messages_sent_at_idx",
    "messages_sender_client_msg_id_key",
    "messages_conversation_reddit_fullname_key",
    "deliveries_recipient_status_idx",
    "conversations_pair_key",
    "conversations_user_b_idx",
    "conversations_last_message_at_idx",
}

Schema = dict[str, list[tuple[object, ...]]]

SCHEMA_QUERIES = {
    "columns": (
        "SELECT table_name, column_name, data_type, is_nullable, collation_name,"
        " column_default FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name <> 'schema_migrations' ORDER BY 1, 2"
    ),
    "indexes": (
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        " ORDER BY 1, 2"
    ),
    "constraints": (
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
    ),
}


def schema_of(url: str) -> Schema:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in SCHEMA_QUERIES.items()}


def applied_versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def head_schema(
    postgres_database_factory: Callable[[], str],
) -> dict[str, list[tuple[object, ...]]]:
    """The schema of a database migrated from empty straight to head."""
    url = postgres_database_factory()
    asyncio.run(migrate_postgres(url))
    return schema_of(url)


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) >= 2


async def test_empty_database_migrates_to_head(
    postgres_database_factory: Callable[[], str],
) -> None:
    url = postgres_database_factory()
    assert await migrate_postgres(url) == list(range(1, HEAD + 1))
    schema = schema_of(url)
    tables = {row[0] for row in schema["columns"]} | {"schema_migrations"}
    assert tables == EXPECTED_TABLES
    assert {row[1] for row in schema["indexes"]} >= EXPECTED_INDEXES
    assert applied_versions(url) == list(range(1, HEAD + 1))


async def test_migrating_twice_is_a_no_op(
    postgres_database_factory: Callable[[], str],
    head_schema: Schema,
) -> None:
    url = postgres_database_factory()
    await migrate_postgres(url)
    assert await migrate_postgres(url) == []
    assert schema_of(url) == head_schema
    assert applied_versions(url) == list(range(1, HEAD + 1))


@pytest.mark.parametrize("start", EARLIER_VERSIONS)
async def test_database_at_every_earlier_version_migrates_to_the_head_schema(
    start: int,
    postgres_database_factory: Callable[[], str],
    head_schema: Schema,
) -> None:
    url = postgres_database_factory()
    assert await migrate_postgres(url, target=start) == list(range(1, start + 1))
    assert applied_versions(url) == list(range(1, start + 1))
    assert await migrate_postgres(url) == list(range(start + 1, HEAD + 1))
    assert schema_of(url) == head_schema


async def test_rows_written_at_version_one_survive_the_upgrade(
    postgres_database_factory: Callable[[], str],
) -> None:
    url = postgres_database_factory()
    await migrate_postgres(url, target=1)
    user_id = f"u-{uuid.uuid4().hex}"
    created_at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO users (id, username, created_at) VALUES (%s, %s, %s)",
            (user_id, "Old_Timer", created_at),
        )
    async with open_postgres_storage(url) as storage:
        user = await storage.users.get(user_id)
        assert (user.username, user.created_at, user.on_platform) == ("Old_Timer", created_at, True)
        assert await storage.users.by_username("old_timer") == user
    assert applied_versions(url) == list(range(1, HEAD + 1))


async def test_concurrent_migrators_apply_each_version_exactly_once(
    postgres_database_factory: Callable[[], str],
    head_schema: Schema,
) -> None:
    """Several server processes starting at once: the advisory lock serialises them."""
    url = postgres_database_factory()
    results = await asyncio.gather(*(migrate_postgres(url) for _ in range(4)))
    applied = sorted(version for result in results for version in result)
    assert applied == list(range(1, HEAD + 1))
    assert schema_of(url) == head_schema


async def test_open_storage_migrates_an_empty_database(
    postgres_database_factory: Callable[[], str],
) -> None:
    url = postgres_database_factory()
    async with open_postgres_storage(url) as storage:
        await storage.ping()
    assert applied_versions(url) == list(range(1, HEAD + 1))


async def test_unreachable_database_raises_unavailable() -> None:
    url = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(Unavailable):
        await migrate_postgres(url)
    with pytest.raises(Unavailable):
        async with open_postgres_storage(url, migrate=False, connect_timeout_s=1):
            pass
