"""One WebSocket connection driven by the core session machine (see ``ws`` for the
rules). Everything that can change the session goes through ONE queue and ONE loop.

Per-frame costs are kept off the hot path: the loop sleeps on one future (woken by
whoever queues an item) with one timer per session deadline, instead of a
``wait_for`` task and timer per item; a send is watched by one timer per connection
(``_SendWatchdog``) instead of an ``asyncio.timeout`` per frame; stream
announcements that arrive while one is queued fold into it (one ``EventsAvailable``,
one push for all); acks are recorded by one task at a time, which takes every ack
that came meanwhile as one batch; ``message``, ``sent`` and ``receipt`` frames are
encoded by ``frames.encode_event``/``encode_sent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from omninudge_core import codec, session, wire
from omninudge_core.errors import (
    AuthenticationFailed,
    OmniNudgeError,
    ProtocolError,
)
from omninudge_core.models import Conversation, ConversationKind, EventKind, Origin, StreamEvent
from omninudge_server import messaging, presence
from omninudge_server.auth import Principal
from omninudge_server.errors import (
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_MANY_CONNECTIONS,
    ws_error_frame,
)
from omninudge_server.frames import encode_event, encode_frame, encode_sent
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services

__all__ = ["WsConnection", "dumps"]

logger = logging.getLogger("omninudge.ws")

QUEUE_SIZE = 256  # client frames waiting for the loop; the reader blocks beyond it
PUSH_PAGE = 100
ACK_BATCH = 512  # acked messages recorded in one call, at most


class _Frame:
    __slots__ = ("data",)

    def __init__(self, data: str | bytes) -> None:
        self.data = data


class _Notice:
    __slots__ = ("notice",)

    def __init__(self, notice: Mapping[str, Any]) -> None:
        self.notice = notice


class _Gone:
    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


_Item = _Frame | _Notice | _Gone

# Stands in the queue for every stream announcement not yet fed (``announced_up_to``).
_ANNOUNCED = _Notice({"k": "events"})


class _SlowConsumer(Exception):
    """The socket stayed unwritable for ``ws_send_timeout_s``: the peer stopped reading."""


class _SendWatchdog:
    """Cancels the connection's task when one send has waited ``limit`` seconds.

    One timer per connection, armed by the first send after it last fired, rather
    than one per frame: a send normally completes at once (uvicorn only waits while
    the transport is paused), so when the timer fires it usually finds no send in
    progress and simply lapses. ``expired`` tells the sender that the cancellation
    was ours, as ``asyncio.timeout`` does with ``uncancel``.
    """

    __slots__ = ("_baseline", "_handle", "_limit", "_loop", "_task", "expired", "since")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self._loop = loop
        self._limit = limit
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._baseline = 0
        self.since: float | None = None  # loop time at which the pending send began
        self.expired = False

    def begin(self) -> None:
        self.since = self._loop.time()
        if self._handle is None:
            # The task to cancel: the one sending (only the connection's loop sends).
            self._task = asyncio.current_task()
            self._handle = self._loop.call_at(self.since + self._limit, self._check)

    def end(self) -> None:
        self.since = None

    def owns_cancellation(self) -> bool:
        """After a CancelledError in a send: True (and the cancel undone) when it
        was this watchdog's and nobody else cancelled the task too."""
        if not self.expired or self._task is None:
            return False
        self.expired = False
        return self._task.uncancel() <= self._baseline

    def _check(self) -> None:
        self._handle = None
        if self.since is None or self._task is None:
            return  # no send in progress: the next one re-arms
        due = self.since + self._limit
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self.expired = True
        self._baseline = self._task.cancelling()
        self._task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class WsConnection:
    """One client connection: the session state, its socket, its queue."""

    def __init__(
        self, websocket: WebSocket, services: Services, hub: Hub, metrics: Metrics
    ) -> None:
        self.websocket = websocket
        self.services = services
        self.hub = hub
        self.metrics = metrics
        self.connection_id = secrets.token_hex(8)
        settings = services.settings
        self.limits = session.SessionLimits(
            auth_timeout=timedelta(seconds=settings.ws_auth_timeout_s),
            ping_interval=timedelta(seconds=settings.ws_ping_interval_s),
            max_in_flight=settings.ws_max_in_flight,
            frames_per_second=settings.ws_frames_per_second,
            frame_burst=settings.ws_frame_burst,
        )
        self.state: session.SessionState = session.New(self.limits)
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.deadline = services.clock()
        self.principal: Principal | None = None
        self.device_id: str | None = None
        self.attached = False
        # Messages from others pushed and not yet acked, for the delivery machine
        # (seq -> event); an ack of the user's own messages records nothing.
        self.unacked: dict[int, StreamEvent] = {}
        # Acked, not yet recorded: the recorder task takes them in order, in batches.
        self._acked: list[StreamEvent] = []
        # The highest stream seq announced and not yet fed to the session. Announcements
        # fold into one: at most one marker (_ANNOUNCED) waits for them in the queue, and
        # when the queue was full the loop takes them on its next turn.
        self.announced_up_to = 0
        self._announcement_queued = False
        self.participants: dict[str, tuple[str, str]] = {}
        # PLATFORM conversations this user sent to (participants and kind never change).
        self.conversations: dict[str, Conversation] = {}
        self._frames_in = metrics.ws_frames.labels(direction="in")
        self._frames_out = metrics.ws_frames.labels(direction="out")
        self._current: wire.ClientFrame = wire.PingFrame()  # the frame being processed
        self.going_away = False  # the server is shutting down (Hub.going_away)
        self._acks: asyncio.Task[None] | None = None  # records self._acked until empty
        self._waiter: asyncio.Future[None] | None = None  # the loop, waiting for an item
        self._timer: asyncio.TimerHandle | None = None  # wakes the loop at self.deadline
        self._timer_for: datetime | None = None  # the deadline _timer was armed for
        self._loop = asyncio.get_running_loop()  # built by the endpoint, in its loop
        self._watchdog = _SendWatchdog(self._loop, settings.ws_send_timeout_s)

    # --- the hub's listener interface ------------------------------------------------------

    def on_notice(self, notice: Mapping[str, Any]) -> None:
        kind = notice.get("k")
        if kind == "events":
            up_to = notice.get("up_to")
            if isinstance(up_to, int):
                self.announced_up_to = max(self.announced_up_to, up_to)
                if not self._announcement_queued:
                    with contextlib.suppress(asyncio.QueueFull):
                        self.queue.put_nowait(_ANNOUNCED)
                        self._announcement_queued = True
                self._wake()
            return
        if kind == "shutdown":
            self.going_away = True  # seen by _next_item even when the queue is full
        with contextlib.suppress(asyncio.QueueFull):
            # An ephemeral frame (typing, presence) may be dropped under pressure.
            self.queue.put_nowait(_Notice(notice))
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the loop --------------------------------------------------------------------------

    async def run(self, *, cookie_principal: Principal | None, resume_from: int | None) -> None:
        reader = asyncio.create_task(self._read())
        self.metrics.connections.inc()
        try:
            await self._feed(session.Connected())
            if cookie_principal is not None:
                await self._authenticated(cookie_principal, resume_from)
            while not isinstance(self.state, session.Closed):
                item = await self._next_item()
                await self._handle_item(item)
        except _SlowConsumer:
            # Bounded memory: we stop producing. The close frame follows the backlog
            # once the peer reads again (or the transport's ping timeout drops it).
            self.state = session.Closed(CLOSE_SLOW_CONSUMER, "slow consumer")
            with contextlib.suppress(Exception):
                await self.websocket.close(CLOSE_SLOW_CONSUMER, "slow consumer")
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            # The peer went away while we were writing (uvicorn's ClientDisconnected).
            if not isinstance(self.state, session.Closed):
                self.state = session.Closed(1006, f"socket error: {type(exc).__name__}")
        except Exception:
            logger.exception("connection %s failed", self.connection_id)
            await self._close(CLOSE_INTERNAL, "internal error")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.metrics.connections.dec()
            await self._teardown()

    async def _next_item(self) -> _Item | None:
        """The next item for the loop, or None when the session's deadline is due
        (a due deadline goes before queued items)."""
        while True:
            if self.going_away:
                return _Notice({"k": "shutdown"})
            if self.announced_up_to and not self._announcement_queued:
                return self._take_announced()  # the queue was full when they came
            now = self.services.clock()
            if now >= self.deadline:
                return None
            if not self.queue.empty():
                item = self.queue.get_nowait()
                if item is _ANNOUNCED:
                    self._announcement_queued = False
                    return self._take_announced()
                return item
            await self._sleep(now)

    def _take_announced(self) -> _Notice:
        up_to, self.announced_up_to = self.announced_up_to, 0
        return _Notice({"k": "events", "up_to": up_to})

    async def _sleep(self, now: datetime) -> None:
        """Wait until an item is queued (``_wake``) or the deadline's timer fires."""
        loop = self._loop
        if self._timer is None or self._timer_for != self.deadline:
            # One timer per deadline (they move every ping interval), not one per item.
            if self._timer is not None:
                self._timer.cancel()
            delay = (self.deadline - now).total_seconds()
            self._timer = loop.call_later(delay, self._on_timer)
            self._timer_for = self.deadline
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()

    async def _read(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    await self._put(_Gone(int(message.get("code") or 1000)))
                    return
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                self._frames_in.inc()
                await self._put(_Frame(data))
        except (WebSocketDisconnect, RuntimeError, OSError):
            await self._put(_Gone(1006))

    async def _put(self, item: _Item) -> None:
        await self.queue.put(item)  # waits while the queue is full (backpressure)
        self._wake()

    async def _handle_item(self, item: _Item | None) -> None:
        if item is None:
            await self._feed(session.Tick())
        elif isinstance(item, _Gone):
            await self._feed(session.Disconnected(item.code))
        elif isinstance(item, _Notice):
            await self._on_notice(item.notice)
        else:
            await self._on_frame(item.data)

    async def _on_notice(self, notice: Mapping[str, Any]) -> None:
        if notice.get("k") == "shutdown":
            # Graceful shutdown: the frame in hand was finished; 1001 = going away.
            await self._close(CLOSE_GOING_AWAY, "server shutting down")
        elif notice.get("k") == "events":
            up_to = notice.get("up_to")
            if isinstance(up_to, int):
                await self._feed(session.EventsAvailable(up_to))
        elif notice.get("k") == "frame" and isinstance(self.state, session.Open):
            frame = notice.get("frame")
            if isinstance(frame, dict):
                await self._send_text(dumps(frame))

    # --- client frames ---------------------------------------------------------------------

    async def _on_frame(self, data: str | bytes) -> None:
        try:
            frame = decode_client_frame(data)
        except ProtocolError as exc:
            await self._refuse_frame(exc)
            return
        state = self.state
        if (
            isinstance(frame, wire.AckFrame)
            and isinstance(state, session.Open)
            and state.acked_seq < frame.seq <= state.pushed_seq
        ):
            # An ack that moves the window is not charged to the flood budget: there can
            # be at most one per event we pushed, so it cannot flood, and a fast reader
            # acking every 50 messages must not be closed for keeping up. Acks that move
            # nothing (and every other frame) are charged as before.
            await self._feed(session.AckReceived(frame.seq))
            return
        self._current = frame
        await self._feed(session.FrameReceived(frame.TYPE))

    async def _refuse_frame(self, exc: ProtocolError) -> None:
        """An undecodable frame still counts against the flood budget."""
        decision = session.handle(
            self.state, session.FrameReceived("invalid"), self.services.clock()
        )
        self.state = decision.state
        answered = False
        for effect in decision.effects:
            if isinstance(effect, session.Close):
                await self._close(effect.code, effect.reason)
                return
            if isinstance(effect, session.SendError) and effect.code == "rate_limited":
                await self._send_error_code(effect.code, effect.message)
                answered = True
        if not answered:
            await self._send_text(dumps(ws_error_frame(exc)))

    async def _process(self, frame: wire.ClientFrame) -> None:
        """Act on a frame the session admitted (``ProcessFrame``)."""
        ref: str | None = None
        try:
            match frame:
                case wire.AuthFrame():
                    await self._on_auth(frame)
                case wire.AckFrame(seq=seq):
                    await self._feed(session.AckReceived(seq))
                case wire.SendFrame():
                    ref = frame.client_msg_id
                    await self._on_send(frame)
                case wire.TypingFrame(conversation_id=conversation_id):
                    ref = conversation_id
                    await self._participants(conversation_id)
                    await self._feed(session.TypingRequested(conversation_id))
                case wire.ReadFrame():
                    ref = frame.up_to
                    await self._on_read(frame)
                case wire.PingFrame():
                    await self._send_frame(wire.PongFrame())
                case (
                    wire.SlideshowStartFrame()
                    | wire.SlideshowNavFrame()
                    | wire.SlideshowStopFrame()
                ):
                    ref = frame.conversation_id
                    assert self.principal is not None
                    # The driver broadcasts the new state through both streams.
                    await self.websocket.app.state.slideshows.command(self.principal.user_id, frame)
                case _:
                    raise ProtocolError(
                        f"{frame.TYPE} is not available on this server yet", code="unsupported"
                    )
        except OmniNudgeError as exc:
            await self._send_text(dumps(ws_error_frame(exc, ref)))

    async def _on_auth(self, frame: wire.AuthFrame) -> None:
        try:
            principal = self.services.tokens.verify(frame.token)
            if await self.services.revocations.is_revoked(principal.jti):
                raise AuthenticationFailed("token revoked", code="token_revoked")
        except AuthenticationFailed as exc:
            await self._feed(session.AuthFailed(exc.message))
            return
        await self._authenticated(principal, frame.resume_from)

    async def _authenticated(self, principal: Principal, resume_from: int | None) -> None:
        user_id = principal.user_id
        if not self.attached:
            # Subscribe before reading the stream head so no notice falls in between.
            limit = self.services.settings.ws_max_connections_per_user
            if not await self.hub.attach(user_id, self, limit=limit):
                await self._close(CLOSE_TOO_MANY_CONNECTIONS, "too many connections")
                return
            self.attached = True
        self.principal = principal
        last_seq = await self.services.storage.events.last_seq(user_id)
        await self._feed(session.AuthSucceeded(user_id, last_seq, resume_from))
        if isinstance(self.state, session.Open):
            await presence.connected(self.services, self.hub, user_id, self.connection_id)
            self.websocket.app.state.slideshows.user_connected(user_id)

    async def _on_send(self, frame: wire.SendFrame) -> None:
        assert self.principal is not None
        outcome = await messaging.send_message(
            self.services,
            self.hub,
            self.metrics,
            sender_id=self.principal.user_id,
            conversation_id=frame.conversation_id,
            client_msg_id=frame.client_msg_id,
            envelope=frame.envelope,
            text=frame.text,
            conversation=self.conversations.get(frame.conversation_id),
        )
        if (
            outcome.created
            and outcome.message.origin is Origin.PLATFORM
            and frame.conversation_id not in self.conversations
            and len(self.conversations) < 1000
        ):
            # A PLATFORM send went through, so the sender takes part in it.
            conversation = await self.services.storage.conversations.get(frame.conversation_id)
            if conversation.kind is ConversationKind.PLATFORM:
                self.conversations[conversation.id] = conversation
        # A relay through Reddit has its outcome already (relayed_to_reddit / relay_failed).
        records = (
            await self.services.storage.messages.deliveries(outcome.message.id)
            if outcome.message.origin is Origin.REDDIT
            else None
        )
        status = messaging.viewer_status(outcome.message, self.principal.user_id, records)
        await self._send_text(encode_sent(frame.client_msg_id, outcome.message, status))

    async def _on_read(self, frame: wire.ReadFrame) -> None:
        assert self.principal is not None
        await messaging.mark_read(
            self.services,
            self.hub,
            self.metrics,
            user_id=self.principal.user_id,
            conversation_id=frame.conversation_id,
            up_to=frame.up_to,
        )

    async def _participants(self, conversation_id: str) -> tuple[str, str]:
        assert self.principal is not None
        pair = self.participants.get(conversation_id)
        if pair is None:
            conversation = await messaging.load_conversation(
                self.services, conversation_id, self.principal.user_id
            )
            pair = conversation.participants
            if len(self.participants) < 1000:
                self.participants[conversation_id] = pair
        return pair

    # --- the session machine ---------------------------------------------------------------

    async def _feed(self, event: session.SessionInput) -> None:
        decision = session.handle(self.state, event, self.services.clock())
        self.state = decision.state
        for effect in decision.effects:
            await self._perform(effect)

    async def _perform(self, effect: session.SessionEffect) -> None:
        match effect:
            case session.SendHello(user_id=user_id, resume_from=resume_from):
                await self._send_frame(wire.HelloFrame(user_id=user_id, resume_from=resume_from))
            case session.PushRange(after_seq=after, up_to_seq=up_to):
                await self._push(after, up_to)
            case session.RecordAck(user_id=user_id, after_seq=after, up_to_seq=up_to):
                acked = [
                    self.unacked.pop(s) for s in range(after + 1, up_to + 1) if s in self.unacked
                ]
                if acked:
                    # Recorded off the loop, in ack order: the loop goes on pushing while
                    # the delivery rows and receipts wait for the writer. One task at a
                    # time, which takes every ack that came meanwhile as one batch.
                    self._acked.extend(acked)
                    if self._acks is None or self._acks.done():
                        self._acks = asyncio.create_task(self._record_acks(user_id))
            case session.ProcessFrame():
                await self._process(self._current)
            case session.SendPing():
                # The transport pings (see module doc); meanwhile keep presence fresh and
                # end sessions whose token expired or was revoked (logout).
                await self._feed(session.PongReceived())
                if self.principal is not None:
                    if await self._credentials_dead(self.principal):
                        await self._feed(
                            session.CloseRequested(CLOSE_AUTH_FAILED, "token expired or revoked")
                        )
                        return
                    await presence.refresh(
                        self.services, self.principal.user_id, self.connection_id
                    )
            case session.ForwardTyping(conversation_id=conversation_id):
                await self._forward_typing(conversation_id)
            case session.SendError(code=code, message=message):
                await self._send_error_code(code, message)
            case session.Close(code=code, reason=reason):
                await self._close(code, reason)
            case session.WakeAt(deadline=deadline):
                self.deadline = deadline

    async def _record_acks(self, user_id: str) -> None:
        while self._acked:
            batch = self._acked[:ACK_BATCH]
            del self._acked[:ACK_BATCH]
            try:
                await messaging.record_device_ack(
                    self.services,
                    self.hub,
                    self.metrics,
                    user_id=user_id,
                    device_id=self.device_id,
                    events=batch,
                )
            except Exception:
                # The client's stream position is already saved by its ack; a receipt it
                # could not cause is logged, as a failed fan-out would be.
                logger.warning("recording an ack of %s failed", user_id, exc_info=True)

    async def _credentials_dead(self, principal: Principal) -> bool:
        if principal.expires_at <= self.services.clock():
            return True
        return await self.services.revocations.is_revoked(principal.jti)

    async def _push(self, after: int, up_to: int) -> None:
        assert self.principal is not None
        user_id = self.principal.user_id
        cursor = after
        in_hand = self.hub.recent(user_id, after, up_to)
        if in_hand is not None:
            # Just appended by this process: no need to read them back (realtime.Hub).
            for event in in_hand:
                if self._from_others(event):
                    self.unacked[event.seq] = event
                text = encode_event(event)
                if text is not None:
                    await self._send_text(text)
            return
        while cursor < up_to:
            events = await self.services.storage.events.read(
                user_id, after=cursor, limit=min(PUSH_PAGE, up_to - cursor)
            )
            if not events:
                break
            for event in events:
                if event.seq > up_to:
                    return
                cursor = event.seq
                if self._from_others(event):
                    self.unacked[event.seq] = event
                text = encode_event(event)
                if text is not None:
                    await self._send_text(text)

    def _from_others(self, event: StreamEvent) -> bool:
        message = event.message
        return (
            event.kind is EventKind.MESSAGE
            and message is not None
            and self.principal is not None
            and message.sender_id != self.principal.user_id
        )

    async def _forward_typing(self, conversation_id: str) -> None:
        assert self.principal is not None
        me = self.principal.user_id
        pair = await self._participants(conversation_id)
        other = pair[1] if pair[0] == me else pair[0]
        if await self.services.storage.blocks.between(me, other):
            return  # typing is not shown across a block (policies.blocking)
        frame = wire.TypingNoticeFrame(conversation_id=conversation_id, user_id=me)
        await self.hub.send_ephemeral(other, codec.unstructure_server_frame(frame))

    # --- output ----------------------------------------------------------------------------

    async def _send_frame(self, frame: wire.ServerFrame) -> None:
        await self._send_text(encode_frame(frame))

    async def _send_error_code(self, code: str, message: str) -> None:
        await self._send_frame(wire.ErrorFrame(code=code, message=message))

    async def _send_text(self, text: str) -> None:
        if self.websocket.application_state is not WebSocketState.CONNECTED:
            return
        watchdog = self._watchdog
        # uvicorn's send waits while the transport is paused (the peer's buffer is full).
        watchdog.begin()
        try:
            await self.websocket.send_text(text)
        except asyncio.CancelledError:
            if watchdog.owns_cancellation():
                raise _SlowConsumer from None
            raise
        finally:
            watchdog.end()
        self._frames_out.inc()

    async def _close(self, code: int, reason: str) -> None:
        if not isinstance(self.state, session.Closed):
            self.state = session.Closed(code, reason)
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code, reason[:120])

    async def _teardown(self) -> None:
        self._watchdog.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._acks is not None:
            with contextlib.suppress(Exception):
                await self._acks  # the last acks still count after a disconnect
        if self.principal is not None and self.attached:
            await self.hub.detach(self.principal.user_id, self)
            with contextlib.suppress(Exception):
                await presence.disconnected(
                    self.services, self.hub, self.principal.user_id, self.connection_id
                )
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(1000)


def dumps(obj: Mapping[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def decode_client_frame(data: str | bytes) -> wire.ClientFrame:
    """``codec.decode_client_frame`` with orjson's parser. Raises ProtocolError.
    Anything orjson refuses (bad JSON, NaN), and any frame that fails validation, takes
    the codec's own path, so the error a client sees is the same (orjson reads an
    integer beyond 64 bits as a float, which would otherwise change the message)."""
    if len(data) <= codec.MAX_FRAME_BYTES:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            if type(parsed) is dict and len(parsed) == 2 and parsed.get("type") == "ack":
                # The most frequent frame, checked as the codec would (exactly these
                # two keys, seq an int in range); anything else goes the codec's way.
                seq = parsed.get("seq")
                if type(seq) is int and 0 <= seq <= codec.MAX_SEQ:
                    return wire.AckFrame(seq)
            try:
                return codec.structure_client_frame(parsed)
            except ProtocolError:
                pass  # rare: explained below, by the same parser as everywhere else
    return codec.decode_client_frame(data)
