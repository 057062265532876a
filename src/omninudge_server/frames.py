"""Stream events -> server frames (the same for the WebSocket and long-poll).

``frame_for_event`` is the reference: the core codec builds (and validates) the frame.
The WebSocket's hot path uses ``encode_event`` and ``encode_sent``, which give the very
same JSON text without going through the cattrs tagged union for the frames that
carry almost all the traffic (``message``, ``sent``, ``receipt``):

- a message's body (``WireMessage``) is built once per message (by hand, in the
  codec's field order) and encoded once per viewer status; the ``sent`` frame and
  the ``message`` frames of both participants reuse it (an ``orjson.Fragment``);
- a ``receipt`` payload that is exactly what ``ReceiptFrame`` accepts is encoded
  directly; anything else takes the codec path, which refuses and logs it as before.

``tests/server/test_ws_frames.py`` checks the output against the codec's, byte for byte.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from omninudge_adapters.rows import envelope_to_mapping
from omninudge_core import codec, wire
from omninudge_core.errors import InvalidFrame
from omninudge_core.models import DeliveryStatus, EventKind, Message, StreamEvent
from omninudge_server.messaging import viewer_status

__all__ = ["encode_event", "encode_frame", "encode_sent", "frame_for_event"]

logger = logging.getLogger("omninudge.server")

# Message bodies kept for reuse (about 2 KiB each): a message's frames are usually
# all encoded within milliseconds of its commit; a later one rebuilds its body.
BODY_CACHE_SIZE = 1024

_RECEIPT_KEYS = frozenset({"message_id", "user_id", "status"})
_RECEIPT_STATUSES = frozenset(s.value for s in wire.ReceiptStatus)


def frame_for_event(event: StreamEvent) -> wire.ServerFrame | None:
    """The frame that carries ``event`` to its user, or None for a stored payload that
    no longer makes a valid frame (logged and skipped; its seq still counts)."""
    try:
        return codec.default_codec().frame_from_event(event, status=_status(event))
    except InvalidFrame:
        logger.error(
            "unreadable %s event %s/%d skipped", event.kind.value, event.user_id, event.seq
        )
        return None


def _status(event: StreamEvent) -> DeliveryStatus:
    if event.kind is EventKind.MESSAGE and event.message is not None:
        return viewer_status(event.message, event.user_id, None)
    return DeliveryStatus.DELIVERED


def encode_frame(frame: wire.ServerFrame) -> str:
    """The JSON text of any server frame (the codec's reference path)."""
    return orjson.dumps(codec.unstructure_server_frame(frame)).decode()


def encode_event(event: StreamEvent) -> str | None:
    """``encode_frame(frame_for_event(event))``, or None when that is None; faster."""
    if event.kind is EventKind.MESSAGE and event.message is not None:
        body = _message_body(event.message, viewer_status(event.message, event.user_id, None))
        return orjson.dumps({"seq": event.seq, "message": body, "type": "message"}).decode()
    if event.kind is EventKind.RECEIPT:
        payload = event.payload
        if type(payload) is dict and payload.keys() == _RECEIPT_KEYS:
            message_id, user_id, status = (
                payload["message_id"],
                payload["user_id"],
                payload["status"],
            )
            if (
                type(message_id) is str
                and type(user_id) is str
                and type(status) is str
                and status in _RECEIPT_STATUSES
                and 0 <= event.seq <= codec.MAX_SEQ
                # Non-ASCII text is checked for lone surrogates by the codec path.
                and message_id.isascii()
                and user_id.isascii()
            ):
                return orjson.dumps(
                    {
                        "seq": event.seq,
                        "message_id": message_id,
                        "user_id": user_id,
                        "status": status,
                        "type": "receipt",
                    }
                ).decode()
    frame = frame_for_event(event)
    return None if frame is None else encode_frame(frame)


def encode_sent(client_msg_id: str, message: Message, status: DeliveryStatus) -> str:
    """``encode_frame(SentFrame(client_msg_id, WireMessage.from_domain(message, status)))``."""
    body = _message_body(message, status)
    return orjson.dumps({"client_msg_id": client_msg_id, "message": body, "type": "sent"}).decode()


class _Body:
    """One message's wire body, as JSON, per viewer status."""

    __slots__ = ("encoded", "message")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.encoded: dict[DeliveryStatus, orjson.Fragment] = {}

    def for_status(self, status: DeliveryStatus) -> orjson.Fragment:
        encoded = self.encoded.get(status)
        if encoded is None:
            # Kept as str: the bytes orjson returns hold its whole 8 KiB output buffer.
            text = orjson.dumps(_unstructured(self.message, status)).decode()
            encoded = self.encoded[status] = orjson.Fragment(text)
        return encoded


def _unstructured(message: Message, status: DeliveryStatus) -> dict[str, Any]:
    """``codec.unstructure(WireMessage.from_domain(message, status=status))``, built
    by hand (a third of the time; the field order is the codec's)."""
    body: dict[str, Any] = {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "sender_id": message.sender_id,
        "client_msg_id": message.client_msg_id,
        "origin": message.origin.value,
        "sent_at": codec.format_instant(message.sent_at),
        "status": status.value,
    }
    envelope = message.envelope
    if envelope is not None:
        body["envelope"] = envelope_to_mapping(envelope)
    if message.text is not None:
        body["text"] = message.text
    return body


_bodies: dict[str, _Body] = {}


def _message_body(message: Message, status: DeliveryStatus) -> orjson.Fragment:
    entry = _bodies.get(message.id)
    # Equal ids with unequal content (two test servers in one process) must not mix.
    if entry is None or (entry.message is not message and entry.message != message):
        entry = _bodies[message.id] = _Body(message)
        if len(_bodies) > BODY_CACHE_SIZE:
            # dicts keep insertion order: drop the oldest quarter at once.
            for message_id in list(_bodies)[: BODY_CACHE_SIZE // 4]:
                _bodies.pop(message_id, None)
    return entry.for_status(status)
