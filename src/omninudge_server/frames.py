"""Stream events -> server frames (the same for the WebSocket and long-poll)."""

from __future__ import annotations

import logging

from omninudge_core import codec, wire
from omninudge_core.errors import InvalidFrame
from omninudge_core.models import DeliveryStatus, EventKind, StreamEvent
from omninudge_server.messaging import viewer_status

__all__ = ["frame_for_event"]

logger = logging.getLogger("omninudge.server")


def frame_for_event(event: StreamEvent) -> wire.ServerFrame | None:
    """The frame that carries ``event`` to its user, or None for a stored payload that
    no longer makes a valid frame (logged and skipped; its seq still counts)."""
    status = (
        viewer_status(event.message, event.user_id, None)
        if event.kind is EventKind.MESSAGE and event.message is not None
        else DeliveryStatus.DELIVERED
    )
    try:
        return codec.default_codec().frame_from_event(event, status=status)
    except InvalidFrame:
        logger.error(
            "unreadable %s event %s/%d skipped", event.kind.value, event.user_id, event.seq
        )
        return None
