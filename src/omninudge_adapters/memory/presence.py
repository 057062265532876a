"""In-process presence for the single-process embedded mode.

A user is online while at least one of their connections has a live heartbeat. Each
connection expires ``ttl_s`` after its last heartbeat; when the last connection goes
(disconnect, or expiry), ``last_seen`` is recorded: the disconnect time, or for an
expired connection the time of its last heartbeat (the last moment we heard from it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from omninudge_core.ports import PresenceInfo

__all__ = ["MemoryPresence"]


def _instant(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class MemoryPresence:
    """Implements ``omninudge_core.ports.Presence`` in process memory."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # user -> connection -> (last heartbeat, expires at)
        self._connections: dict[str, dict[str, tuple[float, float]]] = {}
        self._last_seen: dict[str, float] = {}

    async def heartbeat(self, user_id: str, connection_id: str, ttl_s: float) -> None:
        now = self._clock()
        with self._lock:
            self._connections.setdefault(user_id, {})[connection_id] = (now, now + ttl_s)

    async def disconnected(self, user_id: str, connection_id: str) -> None:
        now = self._clock()
        with self._lock:
            self._expire(user_id, now)
            connections = self._connections.get(user_id)
            if connections is None or connection_id not in connections:
                return
            del connections[connection_id]
            if not connections:
                del self._connections[user_id]
                self._last_seen[user_id] = now

    async def status(self, user_ids: Sequence[str]) -> dict[str, PresenceInfo]:
        now = self._clock()
        out: dict[str, PresenceInfo] = {}
        with self._lock:
            for user_id in user_ids:
                self._expire(user_id, now)
                if user_id in self._connections:
                    out[user_id] = PresenceInfo(online=True)
                else:
                    seen = self._last_seen.get(user_id)
                    out[user_id] = PresenceInfo(
                        online=False, last_seen=_instant(seen) if seen is not None else None
                    )
        return out

    def _expire(self, user_id: str, now: float) -> None:
        """Drop the user's expired connections; record last_seen if none is left."""
        connections = self._connections.get(user_id)
        if not connections:
            return
        expired = {cid: beat for cid, (beat, until) in connections.items() if until <= now}
        for cid in expired:
            del connections[cid]
        if not connections:
            del self._connections[user_id]
            self._last_seen[user_id] = max(expired.values())
