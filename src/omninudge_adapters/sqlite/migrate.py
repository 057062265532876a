"""Schema migrations for the SQLite adapter: versioned ``migrations/NNNN_name.sql`` files.

Each version is applied in its own ``BEGIN IMMEDIATE`` transaction together with its
row in ``schema_migrations``, so a crash leaves the database at a whole version, and
two processes migrating at once serialize on SQLite's write lock (the second sees the
version recorded and skips it). Migrations only ever move forward.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path

import attrs

from omninudge_core.errors import Unavailable

__all__ = ["Migration", "applied_versions", "head_version", "migrate_sqlite", "migrations"]

_MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file split into complete statements (``sqlite3.complete_statement``
        knows about quotes, comments and trigger bodies; a naive split on ';' does not)."""
        statements: list[str] = []
        pending = ""
        for line in self.sql.splitlines(keepends=True):
            pending += line
            if sqlite3.complete_statement(pending):
                statements.append(pending.strip())
                pending = ""
        if pending.strip() and not _only_comments(pending):
            raise ValueError(f"migration {self.version} ends with an incomplete statement")
        return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped in the package, in version order (read once, lazily)."""
    found = []
    for path in sorted(_MIGRATIONS_DIR.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"unexpected migration file name {path.name}")
        found.append(
            Migration(version=int(match[1]), name=match[2], sql=path.read_text(encoding="utf-8"))
        )
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migration versions must be 1..n without gaps, got {versions}")
    return tuple(found)


def head_version() -> int:
    """The newest schema version this code knows."""
    return migrations()[-1].version


def _connect(path: str | PathLike[str]) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves; timeout waits out another writer.
    connection = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    # WAL is a property of the database file: set once, it stays for every connection.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def _applied(connection: sqlite3.Connection) -> list[int]:
    rows = connection.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [int(row[0]) for row in rows]


def _migrate(path: str | PathLike[str], target: int | None) -> list[int]:
    connection = _connect(path)
    try:
        connection.execute(_CREATE_LEDGER)
        newly_applied: list[int] = []
        for migration in migrations():
            if target is not None and migration.version > target:
                break
            connection.execute("BEGIN IMMEDIATE")
            try:
                if migration.version in _applied(connection):
                    connection.execute("ROLLBACK")
                    continue
                for statement in migration.statements():
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, datetime.now(UTC).isoformat()),
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            newly_applied.append(migration.version)
        return newly_applied
    finally:
        connection.close()


async def migrate_sqlite(path: str | PathLike[str], *, target: int | None = None) -> list[int]:
    """Bring the database at ``path`` (created if missing) up to ``target`` (default:
    the newest version); returns the versions applied now, ``[]`` when up to date.

    Raises Unavailable when the file cannot be opened or written.
    """
    try:
        return await asyncio.to_thread(_migrate, path, target)
    except sqlite3.Error as exc:
        raise Unavailable(f"sqlite migration failed: {exc}") from exc


async def applied_versions(path: str | PathLike[str]) -> list[int]:
    """The versions recorded in the database (``[]`` for a new one). Raises Unavailable."""

    def read() -> list[int]:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        try:
            connection.execute(_CREATE_LEDGER)
            return _applied(connection)
        finally:
            connection.close()

    try:
        return await asyncio.to_thread(read)
    except sqlite3.Error as exc:
        raise Unavailable(f"sqlite is unavailable: {exc}") from exc
