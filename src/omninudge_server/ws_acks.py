"""Recording a WebSocket connection's acks off its loop (``receipts.record_device_ack``):
the loop goes on pushing while the delivery rows and receipts wait for the writer.
One task at a time, which takes every ack that came meanwhile as one batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from omninudge_core.models import StreamEvent
from omninudge_server import receipts
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.wiring import Services

__all__ = ["ACK_BATCH", "AckRecorder"]

logger = logging.getLogger("omninudge.ws")

ACK_BATCH = 512  # acked messages recorded in one call, at most


class AckRecorder:
    """Records acked messages in ack order, in batches, one task at a time."""

    def __init__(self, services: Services, hub: Hub, metrics: Metrics) -> None:
        self.services = services
        self.hub = hub
        self.metrics = metrics
        # Acked, not yet recorded: the task takes them in order, in batches.
        self._acked: list[StreamEvent] = []
        self._task: asyncio.Task[None] | None = None  # records self._acked until empty

    def record(self, user_id: str, device_id: str | None, acked: list[StreamEvent]) -> None:
        """Queue ``acked`` for recording; starts the task unless one is running."""
        self._acked.extend(acked)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._record(user_id, device_id))

    async def _record(self, user_id: str, device_id: str | None) -> None:
        while self._acked:
            batch = self._acked[:ACK_BATCH]
            del self._acked[:ACK_BATCH]
            try:
                await receipts.record_device_ack(
                    self.services,
                    self.hub,
                    self.metrics,
                    user_id=user_id,
                    device_id=device_id,
                    events=batch,
                )
            except Exception:
                # The client's stream position is already saved by its ack; a receipt it
                # could not cause is logged, as a failed fan-out would be.
                logger.warning("recording an ack of %s failed", user_id, exc_info=True)

    async def finish(self) -> None:
        """Wait for the running task: the last acks still count after a disconnect."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
