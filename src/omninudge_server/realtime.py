"""The connection hub: which live connections (WebSocket or long-poll) a user has in
this process, fed by the FanOut port.

Notices travel through FanOut as small JSON payloads, per user:

- ``{"k": "events", "up_to": seq}``: the user's durable stream grew to ``seq``
  (the connection loads and pushes the events itself; a lost notice is recovered
  by resume, so fan-out stays best effort - DESIGN.md durability rule);
- ``{"k": "frame", "frame": {...}}``: an ephemeral frame (typing, presence) to
  forward as is; it carries no ``seq`` and is never stored.

One FanOut subscription per user with at least one connection here.

The hub also keeps the last few stream events this process appended for each user
with a connection here (``remember``), so that a connection pushes what the append
already returned instead of reading it back (``recent``). Events are immutable and a
range is served from memory only when every seq of it is there; anything else
(another process appended, the window moved on) is read from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from omninudge_core.models import StreamEvent
from omninudge_core.ports import FanOut, Subscription

__all__ = ["RECENT_EVENTS", "Hub", "Listener"]

RECENT_EVENTS = 128  # per user with a connection here; about two ack windows

logger = logging.getLogger("omninudge.realtime")


class Listener(Protocol):
    def on_notice(self, notice: Mapping[str, Any]) -> None:
        """Called in the event loop for every notice of the user; must not block."""
        ...


class Hub:
    def __init__(self, fanout: FanOut, *, in_process: bool = False) -> None:
        """``in_process``: ``fanout`` reaches this process's subscribers only (the
        embedded default's ``MemoryFanOut``), so a notice can go straight to the
        listeners here, without being encoded, published and decoded again."""
        self._fanout = fanout
        self._in_process = in_process
        self._listeners: dict[str, set[Listener]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._lock = asyncio.Lock()
        self._recent: dict[str, dict[int, StreamEvent]] = {}

    def connection_count(self, user_id: str) -> int:
        return len(self._listeners.get(user_id, ()))

    def listener_count(self) -> int:
        """Connections (WebSocket and long-poll) of every user in this process."""
        return sum(len(listeners) for listeners in self._listeners.values())

    def is_connected_here(self, user_id: str) -> bool:
        return bool(self._listeners.get(user_id))

    async def attach(self, user_id: str, listener: Listener, *, limit: int | None = None) -> bool:
        """Register ``listener``; False (and nothing registered) when the user already
        has ``limit`` connections here (checked under the lock: no race lets more in)."""
        async with self._lock:
            listeners = self._listeners.setdefault(user_id, set())
            if limit is not None and len(listeners) >= limit:
                if not listeners:
                    del self._listeners[user_id]
                return False
            listeners.add(listener)
            if user_id not in self._subscriptions:

                def deliver(payload: bytes, user_id: str = user_id) -> None:
                    self._dispatch(user_id, payload)

                self._subscriptions[user_id] = await self._fanout.subscribe(user_id, deliver)
            return True

    async def detach(self, user_id: str, listener: Listener) -> None:
        async with self._lock:
            listeners = self._listeners.get(user_id)
            if listeners is None:
                return
            listeners.discard(listener)
            if not listeners:
                del self._listeners[user_id]
                self._recent.pop(user_id, None)
                subscription = self._subscriptions.pop(user_id, None)
                if subscription is not None:
                    await subscription.close()

    def remember(self, events: Iterable[StreamEvent]) -> None:
        """Keep freshly appended events of users connected here (see module doc)."""
        for event in events:
            if event.user_id not in self._listeners:
                continue
            recent = self._recent.setdefault(event.user_id, {})
            recent[event.seq] = event
            if len(recent) > RECENT_EVENTS:
                # dicts keep insertion order: drop the oldest quarter at once.
                for seq in list(recent)[: RECENT_EVENTS // 4]:
                    del recent[seq]

    def recent(self, user_id: str, after: int, up_to: int) -> list[StreamEvent] | None:
        """Events ``after`` < seq <= ``up_to`` from memory, or None unless all are there."""
        recent = self._recent.get(user_id)
        if recent is None or up_to - after > len(recent):
            return None
        out: list[StreamEvent] = []
        for seq in range(after + 1, up_to + 1):
            event = recent.get(seq)
            if event is None:
                return None
            out.append(event)
        return out

    def _dispatch(self, user_id: str, payload: bytes) -> None:
        try:
            notice = orjson.loads(payload)
        except orjson.JSONDecodeError:
            logger.warning("dropping an unreadable fan-out notice for %s", user_id)
            return
        if isinstance(notice, dict):
            self._to_listeners(user_id, notice)

    def _to_listeners(self, user_id: str, notice: Mapping[str, Any]) -> None:
        for listener in list(self._listeners.get(user_id, ())):
            try:
                listener.on_notice(notice)
            except Exception:  # one broken connection must not starve the others
                logger.exception("listener failed on a notice")

    async def announce(self, events: Sequence[StreamEvent]) -> None:
        """Remember freshly appended ``events`` and send one notice per user, naming
        that user's newest seq among them (best effort)."""
        self.remember(events)  # the connections push these without reading them back
        heads: dict[str, int] = {}
        for event in events:
            heads[event.user_id] = max(heads.get(event.user_id, 0), event.seq)
        for user_id, seq in heads.items():
            await self.notify_events(user_id, seq)

    async def notify_events(self, user_id: str, up_to: int) -> None:
        """Announce that ``user_id``'s stream reached ``up_to`` (best effort)."""
        await self._publish(user_id, {"k": "events", "up_to": up_to})

    async def send_ephemeral(self, user_id: str, frame: Mapping[str, Any]) -> None:
        """Forward an ephemeral frame (typing, presence) to the user's connections."""
        await self._publish(user_id, {"k": "frame", "frame": dict(frame)})

    async def _publish(self, user_id: str, notice: Mapping[str, Any]) -> None:
        if self._in_process:
            self._to_listeners(user_id, notice)
            return
        try:
            await self._fanout.publish(user_id, orjson.dumps(notice))
        except Exception:
            # Fan-out is best effort: the durable stream and resume close the gap.
            logger.warning("fan-out publish failed for %s", user_id, exc_info=True)

    def going_away(self) -> None:
        """Tell every local connection that the server is shutting down (they finish the
        frame in hand, then close with 1001)."""
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                try:
                    listener.on_notice({"k": "shutdown"})
                except Exception:
                    logger.exception("listener failed on shutdown")

    async def close(self) -> None:
        async with self._lock:
            for subscription in self._subscriptions.values():
                with contextlib.suppress(Exception):
                    await subscription.close()
            self._subscriptions.clear()
            self._listeners.clear()
            self._recent.clear()
