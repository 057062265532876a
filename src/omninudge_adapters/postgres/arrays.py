"""Array parameters of the hot statements: ``TextArray``, ``TimestampArray``, ``JsonbArray``.

psycopg adapts a plain Python list element by element in Python (it finds the element
type, then builds a dumper, on every call), which made array parameters the largest
client cost of the hot statements. These tuples state their element type, and their
dumpers write the array's text input form in one pass (PostgreSQL docs, "Array Value
Input": each element in double quotes with a backslash before ``"`` and ``\\``; NULL
unquoted). ``register_array_dumpers`` installs them on a connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from psycopg import postgres
from psycopg.abc import AdaptContext
from psycopg.adapt import Dumper

__all__ = ["JsonbArray", "TextArray", "TimestampArray", "register_array_dumpers"]


class TextArray(tuple[str | None, ...]):
    """A ``text[]`` parameter."""

    __slots__ = ()


class TimestampArray(tuple[datetime, ...]):
    """A ``timestamptz[]`` parameter (time-zone-aware datetimes)."""

    __slots__ = ()


class JsonbArray(tuple[Mapping[str, object] | None, ...]):
    """A ``jsonb[]`` parameter."""

    __slots__ = ()


def _literal(elements: Iterable[str | None]) -> bytes:
    quoted = (
        "NULL" if e is None else '"' + e.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for e in elements
    )
    return ("{" + ",".join(quoted) + "}").encode()


class _TextArrayDumper(Dumper):
    oid = postgres.types["text"].array_oid

    def dump(self, obj: Any) -> bytes:
        return _literal(obj)


class _TimestampArrayDumper(Dumper):
    oid = postgres.types["timestamptz"].array_oid

    def dump(self, obj: Any) -> bytes:
        # ISO 8601 with its UTC offset: read back to the microsecond.
        return _literal(moment.isoformat() for moment in obj)


class _JsonbArrayDumper(Dumper):
    oid = postgres.types["jsonb"].array_oid

    def dump(self, obj: Any) -> bytes:
        return _literal(None if value is None else json.dumps(_plain(value)) for value in obj)


def _plain(value: Mapping[str, object]) -> dict[str, object]:
    return value if isinstance(value, dict) else dict(value)


def register_array_dumpers(context: AdaptContext) -> None:
    """Make ``context`` (a connection) dump the array tuples of this module."""
    adapters = context.adapters
    adapters.register_dumper(TextArray, _TextArrayDumper)
    adapters.register_dumper(TimestampArray, _TimestampArrayDumper)
    adapters.register_dumper(JsonbArray, _JsonbArrayDumper)
