"""The slideshow driver: the shell around ``omninudge_core.slideshow``.

Theory of operation
-------------------
Commands arrive as WebSocket frames (``slideshow_start``, ``slideshow_nav``,
``slideshow_stop``). For each, under a per-conversation lock (so this process orders
the commands of one conversation), the driver:

1. loads the current state: the durable stream is the only store. Every accepted
   change is a SLIDESHOW event in BOTH participants' streams, so the latest state of
   a conversation is the highest-version state found in either stream. The driver
   reads a stream forward from where it last stopped (``_scanned``), so after a
   restart, or when another process has moved the show on, it catches up before
   deciding; in steady state that is one short read per command;
2. builds the core input (media owners from the MediaStore, ``blocked`` from
   ``BlockStore.between``), feeds ``slideshow.handle`` with ``now``;
3. performs the effects: ``BroadcastSlideshow`` -> share the media with the
   conversation (``MediaStore.share``, so the other participant may fetch it), append
   a ``slideshow`` event to both streams in one call, announce the new stream heads
   through fan-out (both clients get it with a ``seq``; a reconnecting client gets it
   by replay); ``WakeAt`` -> (re)arm the conversation's autoplay timer.

A refused command changes nothing. ``StaleCommand`` is answered with an ``error``
frame (``stale_command``) that carries the current state and version, so the client
re-syncs at once.

Autoplay is driven here: one timer task per conversation whose state has a
``next_deadline``. A timer feeds ``AutoplayTick`` (the core ignores an early or stale
tick). Timers are rearmed lazily after a restart: when a participant connects, their
stream is read and every active autoplay show found gets its timer back (an overdue
tick fires at once).

Across processes the lock is per process: two instances taking commands for the same
conversation at the same instant could both accept one. Clients keep the highest
version they saw, and the next command re-reads the streams; a shared lock (Redis) is
the next step if that ever matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from omninudge_core import codec, slideshow, wire
from omninudge_core.decision import Decision
from omninudge_core.errors import InvalidFrame, NotFound, StaleCommand
from omninudge_core.models import Conversation, EventKind, StreamEvent
from omninudge_core.ports import NewEvent
from omninudge_core.slideshow import Slideshow
from omninudge_server.messaging import load_conversation
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services

__all__ = ["SlideshowCommand", "SlideshowDriver", "StaleSlideshowCommand"]

logger = logging.getLogger("omninudge.slideshow")

READ_PAGE = 200

SlideshowCommand = wire.SlideshowStartFrame | wire.SlideshowNavFrame | wire.SlideshowStopFrame


class StaleSlideshowCommand(StaleCommand):
    """``StaleCommand`` whose ``error`` frame carries the current state (API.md)."""

    def __init__(self, message: str, *, state: Slideshow) -> None:
        super().__init__(message, current=state, current_version=state.version)
        self.state = state

    def details(self) -> dict[str, Any]:
        return {
            "conversation_id": self.state.conversation_id,
            "state": state_json(self.state),
        }


def state_json(state: Slideshow) -> dict[str, Any]:
    """The state as clients see it (the codec's plain JSON form)."""
    out: dict[str, Any] = codec.unstructure(state)
    return out


class SlideshowDriver:
    """One per process (created in the app's lifespan, closed on shutdown)."""

    def __init__(self, services: Services, hub: Hub) -> None:
        self._services = services
        self._hub = hub
        self._states: dict[str, Slideshow] = {}
        self._scanned: dict[str, int] = {}  # user id -> last seq read from their stream
        self._locks: dict[str, asyncio.Lock] = {}
        self._scan_locks: dict[str, asyncio.Lock] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- commands -----------------------------------------------------------------------

    async def command(self, user_id: str, frame: SlideshowCommand) -> Slideshow:
        """Apply one client command; returns the new state.

        Raises NotFound (not a participant), Forbidden, Blocked, StaleSlideshowCommand,
        IllegalTransition, InvalidFrame, Unavailable.
        """
        conversation = await load_conversation(self._services, frame.conversation_id, user_id)
        async with self._lock(conversation.id):
            state = await self._current(conversation)
            event = await self._input(conversation, user_id, frame)
            try:
                decision = slideshow.handle(state, event, self._services.clock())
            except StaleCommand as exc:
                raise StaleSlideshowCommand(exc.message, state=state) from exc
            if isinstance(event, slideshow.StartSlideshow):
                for media_id in event.media_ids:
                    await self._services.storage.media.share(media_id, conversation.id)
            await self._perform(decision)
            return decision.state

    async def end_for_block(self, blocker_id: str, blocked_id: str) -> None:
        """Stop the pair's running show when one blocks the other (a block forbids
        driving it, so nobody could move it any more)."""
        conversation = await self._services.storage.conversations.for_pair(blocker_id, blocked_id)
        if conversation is None:
            return
        async with self._lock(conversation.id):
            state = await self._current(conversation)
            if state.phase is not slideshow.Phase.ACTIVE:
                return
            stop = slideshow.StopSlideshow(by=blocker_id, blocked=True)
            await self._perform(slideshow.handle(state, stop, self._services.clock()))

    async def _input(
        self, conversation: Conversation, user_id: str, frame: SlideshowCommand
    ) -> slideshow.SlideshowInput:
        storage = self._services.storage
        a, b = conversation.participants
        blocked = await storage.blocks.between(a, b)
        match frame:
            case wire.SlideshowStartFrame():
                owners: dict[str, str] = {}
                for media_id in dict.fromkeys(frame.media_ids):
                    with contextlib.suppress(NotFound):  # unknown media: the core refuses
                        owners[media_id] = (await storage.media.get(media_id)).owner_id
                return slideshow.StartSlideshow(
                    by=user_id,
                    media_ids=tuple(frame.media_ids),
                    media_owners=owners,
                    autoplay_s=frame.autoplay_s,
                    blocked=blocked,
                )
            case wire.SlideshowNavFrame():
                return slideshow.Navigate(
                    by=user_id,
                    action=slideshow.NavAction(frame.action.value),
                    base_version=frame.base_version,
                    index=frame.index,
                    media_id=frame.media_id,
                    blocked=blocked,
                )
            case wire.SlideshowStopFrame():
                return slideshow.StopSlideshow(by=user_id, blocked=blocked)

    # --- state from the streams -----------------------------------------------------------

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        return self._locks.setdefault(conversation_id, asyncio.Lock())

    async def _current(self, conversation: Conversation) -> Slideshow:
        # Every change is in both streams: reading one participant's is enough.
        await self._catch_up(conversation.participants[0])
        known = self._states.get(conversation.id)
        if known is None:
            return Slideshow.idle(conversation.id, conversation.participants)
        return known

    async def _catch_up(self, user_id: str) -> None:
        async with self._scan_locks.setdefault(user_id, asyncio.Lock()):
            after = self._scanned.get(user_id, 0)
            while True:
                events = await self._services.storage.events.read(
                    user_id, after=after, limit=READ_PAGE
                )
                for event in events:
                    if event.kind is EventKind.SLIDESHOW:
                        self._learn(event)
                    after = event.seq
                self._scanned[user_id] = after
                if len(events) < READ_PAGE:
                    return

    def _learn(self, event: StreamEvent) -> None:
        payload: Mapping[str, object] = event.payload or {}
        try:
            state = codec.default_codec().structure(payload.get("state"), Slideshow)
        except InvalidFrame:
            logger.error("unreadable slideshow event %s/%d skipped", event.user_id, event.seq)
            return
        known = self._states.get(state.conversation_id)
        if known is None or state.version > known.version:
            self._states[state.conversation_id] = state

    # --- effects ---------------------------------------------------------------------------

    async def _perform(self, decision: Decision[Slideshow, slideshow.SlideshowEffect]) -> None:
        state = decision.state
        for effect in decision.effects:
            match effect:
                case slideshow.BroadcastSlideshow(conversation_id=conversation_id, state=new):
                    await self._broadcast(conversation_id, new)
                case slideshow.WakeAt(deadline=deadline):
                    self._arm(state.conversation_id, deadline)
        if slideshow.next_deadline(state) is None:
            self._disarm(state.conversation_id)

    async def _broadcast(self, conversation_id: str, state: Slideshow) -> None:
        payload = codec.default_codec().event_payload(
            wire.SlideshowFrame(conversation_id=conversation_id, state=state_json(state))
        )
        events = await self._services.storage.events.append(
            [
                NewEvent(user_id=user_id, kind=EventKind.SLIDESHOW, payload=payload)
                for user_id in state.participants
            ]
        )
        # Only a committed state becomes the known one.
        self._states[conversation_id] = state
        await self._hub.announce(events)

    # --- autoplay ------------------------------------------------------------------------

    def _arm(self, conversation_id: str, deadline: datetime) -> None:
        self._disarm(conversation_id)
        task = asyncio.create_task(self._tick_at(conversation_id, deadline))
        self._timers[conversation_id] = task

    def _disarm(self, conversation_id: str) -> None:
        task = self._timers.pop(conversation_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _tick_at(self, conversation_id: str, deadline: datetime) -> None:
        try:
            delay = (deadline - self._services.clock()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.tick(conversation_id)
        except Exception:
            # The next command or reconnect rearms the timer; nobody else to tell.
            logger.exception("autoplay tick failed for %s", conversation_id)
        finally:
            if self._timers.get(conversation_id) is asyncio.current_task():
                del self._timers[conversation_id]

    async def tick(self, conversation_id: str) -> None:
        """Feed ``AutoplayTick`` now (the core ignores it when it is not due)."""
        async with self._lock(conversation_id):
            known = self._states.get(conversation_id)
            if known is None:
                return
            await self._catch_up(known.participants[0])
            state = self._states[conversation_id]
            now = self._services.clock()
            decision = slideshow.handle(state, slideshow.AutoplayTick(), now)
            if decision.effects:
                await self._perform(decision)
                return
            deadline = slideshow.next_deadline(state)
            if deadline is not None:  # early wake-up, or moved on by another process
                self._arm(conversation_id, deadline)

    def user_connected(self, user_id: str) -> None:
        """Rearm the autoplay timers of the user's shows (after a restart), in the
        background: the connection does not wait for it."""
        task = asyncio.create_task(self._resume_timers(user_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resume_timers(self, user_id: str) -> None:
        try:
            await self._catch_up(user_id)
        except Exception:
            logger.warning("could not read %s's stream to resume slideshows", user_id)
            return
        for conversation_id, state in list(self._states.items()):
            deadline = slideshow.next_deadline(state)
            if (
                deadline is not None
                and user_id in state.participants
                and conversation_id not in self._timers
            ):
                self._arm(conversation_id, deadline)

    async def close(self) -> None:
        tasks = [*self._timers.values(), *self._background]
        self._timers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
