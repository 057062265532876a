"""The adapter boundary: psycopg and pool exceptions become ``omninudge_core.errors``.

Nothing from psycopg escapes the adapter; every mapped error keeps its cause
(``raise ... from exc``) for logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from omninudge_core.errors import Conflict, NotFound, PortError, Unavailable

__all__ = ["map_errors"]


@contextmanager
def map_errors(action: str) -> Iterator[None]:
    """Run a block, translating driver exceptions.

    UniqueViolation / other integrity errors -> Conflict; ForeignKeyViolation ->
    NotFound (a referenced row is missing); connection, operational and pool errors ->
    Unavailable; any other psycopg error -> PortError.
    """
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        raise Conflict(f"{action}: {_constraint(exc)} already exists") from exc
    except pg_errors.ForeignKeyViolation as exc:
        raise NotFound(f"{action}: a referenced row does not exist ({_constraint(exc)})") from exc
    except psycopg.IntegrityError as exc:
        raise Conflict(f"{action}: refused by {_constraint(exc)}") from exc
    except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
        raise Unavailable(f"{action}: no database connection available") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise Unavailable(f"{action}: the database is unavailable") from exc
    except psycopg.Error as exc:
        raise PortError(f"{action}: database error {exc.sqlstate or type(exc).__name__}") from exc


def _constraint(exc: psycopg.Error) -> str:
    name = exc.diag.constraint_name
    return name if name else "a constraint"
