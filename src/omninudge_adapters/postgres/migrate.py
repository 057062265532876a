"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order.

Each version runs in its own transaction together with its row in
``schema_migrations``, so a crash leaves the database at a whole version. A
session-level advisory lock serialises concurrent migrators (several server
processes starting at once): the second one waits, then finds nothing to do.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import attrs
import psycopg

from omninudge_adapters.postgres.errors import map_errors

__all__ = ["MIGRATION_LOCK_KEY", "Migration", "available_migrations", "migrate_postgres"]

# An arbitrary constant shared by every OmniNudge process ("omninudg" in ASCII).
MIGRATION_LOCK_KEY = 0x6F6D6E696E756467

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("omninudge_adapters.postgres") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"postgres migrations must be numbered 1..n, found {versions}")
    return found


async def migrate_postgres(dsn: str, *, target: int | None = None) -> list[int]:
    """Bring the database at ``dsn`` to ``target`` (default: the newest version).

    Returns the versions applied now (empty when already up to date). Safe to run
    from several processes at once. Raises Unavailable when the database does not
    answer, PortError when a migration fails (that version is rolled back).
    """
    migrations = available_migrations()
    head = migrations[-1].version if target is None else target
    applied_now: list[int] = []
    with map_errors("migrate"):
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY,"
                    " name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT statement_timestamp())"
                )
                cur = await conn.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in await cur.fetchall()}
                for migration in migrations:
                    if migration.version in done or migration.version > head:
                        continue
                    async with conn.transaction():
                        await conn.execute(migration.sql.encode("utf-8"))
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (migration.version, migration.name),
                        )
                    applied_now.append(migration.version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


async def schema_version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The highest applied version (0 for an empty database)."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
