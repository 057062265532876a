"""One WebSocket connection driven by the core session machine (see ``ws`` for the
rules). Everything that can change the session goes through ONE queue and ONE loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from datetime import timedelta
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
from omninudge_server.frames import frame_for_event
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services

__all__ = ["WsConnection", "dumps"]

logger = logging.getLogger("omninudge.ws")

QUEUE_SIZE = 256  # client frames waiting for the loop; the reader blocks beyond it
PUSH_PAGE = 100


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


class _SlowConsumer(Exception):
    """The socket stayed unwritable for ``ws_send_timeout_s``: the peer stopped reading."""


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
        # Events pushed and not yet acked, for the delivery machine (seq -> event).
        self.unacked: dict[int, StreamEvent] = {}
        # Notices that found the queue full: the loop folds them in on its next turn.
        self.overflow_up_to = 0
        self.participants: dict[str, tuple[str, str]] = {}
        # PLATFORM conversations this user sent to (participants and kind never change).
        self.conversations: dict[str, Conversation] = {}
        self._frames_in = metrics.ws_frames.labels(direction="in")
        self._frames_out = metrics.ws_frames.labels(direction="out")
        self._current: wire.ClientFrame = wire.PingFrame()  # the frame being processed
        self.going_away = False  # the server is shutting down (Hub.going_away)
        self._acks: asyncio.Task[None] | None = None  # the latest ack batch being recorded

    # --- the hub's listener interface ------------------------------------------------------

    def on_notice(self, notice: Mapping[str, Any]) -> None:
        if notice.get("k") == "shutdown":
            self.going_away = True  # seen by _next_item even when the queue is full
        try:
            self.queue.put_nowait(_Notice(notice))
        except asyncio.QueueFull:
            if notice.get("k") == "events" and isinstance(notice.get("up_to"), int):
                self.overflow_up_to = max(self.overflow_up_to, notice["up_to"])
            # An ephemeral frame (typing, presence) may be dropped under pressure.

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
        if self.going_away:
            return _Notice({"k": "shutdown"})
        if self.overflow_up_to:
            up_to, self.overflow_up_to = self.overflow_up_to, 0
            return _Notice({"k": "events", "up_to": up_to})
        now = self.services.clock()
        if now < self.deadline and not self.queue.empty():
            # Busy connection: skip wait_for's task and timer (hot path). A due deadline
            # still goes first (the Tick below), as it did through wait_for.
            return self.queue.get_nowait()
        timeout = max(0.0, (self.deadline - now).total_seconds())
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None  # the timer fired

    async def _read(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    await self.queue.put(_Gone(int(message.get("code") or 1000)))
                    return
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                self._frames_in.inc()
                await self.queue.put(_Frame(data))
        except (WebSocketDisconnect, RuntimeError, OSError):
            await self.queue.put(_Gone(1006))

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
                await self._send_json(frame)

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
            await self._send_json(ws_error_frame(exc))

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
            await self._send_json(ws_error_frame(exc, ref))

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
        await self._send_frame(
            wire.SentFrame(
                client_msg_id=frame.client_msg_id,
                message=wire.WireMessage.from_domain(outcome.message, status=status),
            )
        )

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
                    # Recorded off the loop, one batch after another: the loop goes on
                    # pushing while the delivery rows and receipts wait for the writer.
                    self._acks = asyncio.create_task(self._record_acks(self._acks, user_id, acked))
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

    async def _record_acks(
        self, previous: asyncio.Task[None] | None, user_id: str, acked: list[StreamEvent]
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous  # batches are recorded in the order they were acked
        try:
            await messaging.record_device_ack(
                self.services,
                self.hub,
                self.metrics,
                user_id=user_id,
                device_id=self.device_id,
                events=acked,
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
                if event.kind is EventKind.MESSAGE:
                    self.unacked[event.seq] = event
                frame = frame_for_event(event)
                if frame is not None:
                    await self._send_frame(frame)
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
                if event.kind is EventKind.MESSAGE:
                    self.unacked[event.seq] = event
                frame = frame_for_event(event)
                if frame is not None:
                    await self._send_frame(frame)

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
        await self._send_json(codec.unstructure_server_frame(frame))

    async def _send_error_code(self, code: str, message: str) -> None:
        await self._send_frame(wire.ErrorFrame(code=code, message=message))

    async def _send_json(self, obj: Mapping[str, Any]) -> None:
        if self.websocket.application_state is not WebSocketState.CONNECTED:
            return
        try:
            # uvicorn's send waits while the transport is paused (the peer's buffer is full).
            async with asyncio.timeout(self.services.settings.ws_send_timeout_s):
                await self.websocket.send_text(dumps(obj))
        except TimeoutError:
            raise _SlowConsumer from None
        self._frames_out.inc()

    async def _close(self, code: int, reason: str) -> None:
        if not isinstance(self.state, session.Closed):
            self.state = session.Closed(code, reason)
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code, reason[:120])

    async def _teardown(self) -> None:
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
    Anything orjson refuses (bad JSON, an integer beyond 64 bits) takes the codec's own
    path, so the error a client sees is the same."""
    if len(data) <= codec.MAX_FRAME_BYTES:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            return codec.structure_client_frame(parsed)
    return codec.decode_client_frame(data)
