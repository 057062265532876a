"""uvicorn's sans-I/O WebSocket protocol, with the writes of one loop turn coalesced.

uvicorn hands every outgoing frame to ``transport.write`` at once, and the event loop
tries a ``send()`` system call for each. Under load one connection gets several frames
in the same turn of the loop (a ``sent``, the ``message`` echo, ``receipt``s), and a
system call per frame is the largest single cost of the send path. Here the frames of
one turn are joined and written once, at the end of the turn (``call_soon``): no frame
waits longer than the work already queued in the loop, and the order is kept.

Flow control is unchanged: the real transport still pauses and resumes the protocol
once its buffer passes the high-water mark (one turn later than without coalescing).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from omninudge_server.config import Settings

__all__ = ["CoalescingWebSocketProtocol", "websocket_options"]


class _CoalescingTransport:
    """A transport whose ``write``s of one loop turn leave in one system call."""

    __slots__ = ("_buffer", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._buffer.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        self._scheduled = False
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()  # a close frame queued this turn still goes out first
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._buffer))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    """``ws="websockets-sansio"`` with coalesced writes (see the module doc)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        coalescing = _CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(coalescing)  # type: ignore[arg-type]


def websocket_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options of our WebSocket transport, for every way the server starts."""
    return {
        "ws": CoalescingWebSocketProtocol,
        # Deflate costs ~5x the memory per idle connection and halves throughput.
        "ws_per_message_deflate": False,
        "ws_max_size": settings.ws_max_frame_bytes,
        # API.md: ping every 30 s, drop a peer that misses two pongs. ASGI apps cannot
        # see ping/pong frames, so the transport does it (see ws.py).
        "ws_ping_interval": settings.ws_ping_interval_s,
        "ws_ping_timeout": 2 * settings.ws_ping_interval_s,
    }
