"""One WebSocket connection driven by the core session machine (see ``ws`` for the
rules). Everything that can change the session goes through ONE queue and ONE loop.

Per-frame costs are kept off the hot path: the loop sleeps on one future with one
timer per session deadline, and stream announcements fold into one (``ws_inbox``);
a send is watched by one timer per connection (``ws_socket``); acks are recorded by
one task at a time, in batches (``ws_acks``); client frames are decoded with orjson
(``ws_json``); ``message``, ``sent`` and ``receipt`` frames are encoded by
``frames.encode_event``/``encode_sent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from omninudge_core import codec, session, wire
from omninudge_core.errors import (
    AuthenticationFailed,
    OmniNudgeError,
    ProtocolError,
)
from omninudge_core.models import EventKind, Origin, StreamEvent
from omninudge_server import messaging, presence, receipts
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
from omninudge_server.ws_acks import AckRecorder
from omninudge_server.ws_inbox import Gone, Inbox, Item, Notice
from omninudge_server.ws_json import decode_client_frame, dumps
from omninudge_server.ws_socket import SlowConsumer, SocketIO

__all__ = ["WsConnection"]

logger = logging.getLogger("omninudge.ws")

PUSH_PAGE = 100


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
        self._loop = asyncio.get_running_loop()  # built by the endpoint, in its loop
        self.inbox = Inbox(self._loop, services.clock)
        self._socket = SocketIO(websocket, self._loop, settings.ws_send_timeout_s, metrics)
        self.principal: Principal | None = None
        self.device_id: str | None = None
        self.attached = False
        # Messages from others pushed and not yet acked, for the delivery machine
        # (seq -> event); an ack of the user's own messages records nothing.
        self.unacked: dict[int, StreamEvent] = {}
        self._acks = AckRecorder(services, hub, metrics)
        self._current: wire.ClientFrame = wire.PingFrame()  # the frame being processed

    # --- the hub's listener interface ------------------------------------------------------

    def on_notice(self, notice: Mapping[str, Any]) -> None:
        self.inbox.on_notice(notice)

    # --- the loop --------------------------------------------------------------------------

    async def run(self, *, cookie_principal: Principal | None, resume_from: int | None) -> None:
        reader = asyncio.create_task(self._socket.read_into(self.inbox))
        self.metrics.connections.inc()
        try:
            await self._feed(session.Connected())
            if cookie_principal is not None:
                await self._authenticated(cookie_principal, resume_from)
            while not isinstance(self.state, session.Closed):
                item = await self.inbox.next_item()
                await self._handle_item(item)
        except SlowConsumer:
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

    async def _handle_item(self, item: Item | None) -> None:
        if item is None:
            await self._feed(session.Tick())
        elif isinstance(item, Gone):
            await self._feed(session.Disconnected(item.code))
        elif isinstance(item, Notice):
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
                await self._socket.send_text(dumps(frame))

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
            await self._socket.send_text(dumps(ws_error_frame(exc)))

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
            await self._socket.send_text(dumps(ws_error_frame(exc, ref)))

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
        )
        # A relay through Reddit has its outcome already (relayed_to_reddit / relay_failed).
        records = (
            await self.services.storage.messages.deliveries(outcome.message.id)
            if outcome.message.origin is Origin.REDDIT
            else None
        )
        status = messaging.viewer_status(outcome.message, self.principal.user_id, records)
        await self._socket.send_text(encode_sent(frame.client_msg_id, outcome.message, status))

    async def _on_read(self, frame: wire.ReadFrame) -> None:
        assert self.principal is not None
        await receipts.mark_read(
            self.services,
            self.hub,
            self.metrics,
            user_id=self.principal.user_id,
            conversation_id=frame.conversation_id,
            up_to=frame.up_to,
        )

    async def _participants(self, conversation_id: str) -> tuple[str, str]:
        assert self.principal is not None
        conversation = await messaging.known_conversation(
            self.services, conversation_id, self.principal.user_id
        )
        return conversation.participants

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
                    # Recorded off the loop (ws_acks): the loop goes on pushing.
                    self._acks.record(user_id, self.device_id, acked)
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
                self.inbox.deadline = deadline

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
                    await self._socket.send_text(text)
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
                    await self._socket.send_text(text)

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
        await self._socket.send_text(encode_frame(frame))

    async def _send_error_code(self, code: str, message: str) -> None:
        await self._send_frame(wire.ErrorFrame(code=code, message=message))

    async def _close(self, code: int, reason: str) -> None:
        if not isinstance(self.state, session.Closed):
            self.state = session.Closed(code, reason)
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code, reason[:120])

    async def _teardown(self) -> None:
        self._socket.close_watchdog()
        self.inbox.close()
        await self._acks.finish()  # the last acks still count after a disconnect
        if self.principal is not None and self.attached:
            await self.hub.detach(self.principal.user_id, self)
            with contextlib.suppress(Exception):
                await presence.disconnected(
                    self.services, self.hub, self.principal.user_id, self.connection_id
                )
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(1000)
