"""The adapter boundary: redis-py exceptions become ``omninudge_core.errors.Unavailable``.

Nothing from redis-py escapes the adapter; every mapped error keeps its cause
(``raise ... from exc``) for logs. An unreachable server (refused, reset, timed out)
and a server that refuses the command (OOM under ``maxmemory``, loading, read-only
replica) are the same thing to a caller: the shared state is not available now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from redis import exceptions as redis_errors

from omninudge_core.errors import Unavailable

__all__ = ["UNREACHABLE", "map_errors"]

UNREACHABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    asyncio.TimeoutError,
    OSError,
)
"""What an unreachable or too slow Redis raises."""


@contextmanager
def map_errors(action: str) -> Iterator[None]:
    """Run a block, translating driver exceptions.

    Raises Unavailable for a connection error, a timeout, an OSError, or any other
    redis-py error (the server refused the command).
    """
    try:
        yield
    except UNREACHABLE as exc:
        raise Unavailable(f"{action}: redis is unreachable ({type(exc).__name__})") from exc
    except redis_errors.RedisError as exc:
        raise Unavailable(f"{action}: redis refused the command ({exc})") from exc
