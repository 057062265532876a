"""PostgreSQL storage adapter (production): psycopg 3 async on a connection pool.

    async with open_postgres_storage("postgresql://user@host/db") as storage:
        await storage.users.get(user_id)

``migrate_postgres(dsn)`` applies the versioned schema migrations shipped in
``migrations/`` (``open_postgres_storage`` does it on open).
"""

from omninudge_adapters.postgres.migrate import available_migrations, migrate_postgres
from omninudge_adapters.postgres.storage import PostgresStorage, open_postgres_storage

__all__ = ["PostgresStorage", "available_migrations", "migrate_postgres", "open_postgres_storage"]
