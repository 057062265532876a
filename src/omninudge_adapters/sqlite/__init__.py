"""SQLite relational storage: the embedded default behind ``omninudge_core.ports.Storage``.

``open_sqlite_storage(path)`` migrates and opens a database file; ``migrate_sqlite(path)``
applies pending schema migrations (``omninudge migrate``). See docs/storage.md.
"""

from omninudge_adapters.sqlite.database import Synchronous
from omninudge_adapters.sqlite.migrate import applied_versions, head_version, migrate_sqlite
from omninudge_adapters.sqlite.storage import SqliteStorage, open_sqlite_storage

__all__ = [
    "SqliteStorage",
    "Synchronous",
    "applied_versions",
    "head_version",
    "migrate_sqlite",
    "open_sqlite_storage",
]
