"""A lean WebSocket client for the load generator: the ``websockets`` sans-I/O protocol
(handshake, framing, masking, ping/pong, close) over a plain ``asyncio.Protocol``.

Why not ``websockets.asyncio.client``: it costs a task wake-up, a future and an
assembler round per frame, and one ``send`` system call per frame. Here every text
frame goes straight to a plain callback (``on_text``) from ``data_received``, and
frames sent while a read is being handled (the next ``send`` after a ``sent``, an
``ack``) leave in one write at the end of that read. Outside a read (a timer), a send
is written at once. Compression is never offered (no extensions).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

__all__ = ["Payload", "TextHandler", "WebSocketClient", "open_websocket"]

Payload = bytes | bytearray | memoryview  # a text message's UTF-8 bytes, as framed
TextHandler = Callable[[Payload], None]

CLOSE_TIMEOUT_S = 5.0


class WebSocketClient(asyncio.Protocol):
    """One connection. ``on_text`` receives each complete text message's bytes (UTF-8
    JSON here); it runs inside ``data_received`` and must not block."""

    def __init__(self, url: str, max_size: int, on_text: TextHandler) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=max_size)
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failure: BaseException | None = None  # raised by on_text: the run is invalid
        self._in_read = False
        self._closing_timer: asyncio.TimerHandle | None = None
        self._fragments: list[Payload] = []

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports don't subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._in_read = True
        try:
            for event in self.protocol.events_received():
                if isinstance(event, Frame):
                    self._frame(event)
                elif isinstance(event, Response):
                    self._handshake_done()
        except Exception as exc:
            # An on_text bug must not pass for a server that stopped answering.
            self.failure = exc
            self.abort()
        finally:
            self._in_read = False
            self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closing_timer is not None:
            self._closing_timer.cancel()
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    # --- use ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.lost.done() or self.protocol.state is not State.OPEN

    def send(self, data: bytes) -> None:
        """Queue one text frame (``data`` is UTF-8); written at the end of the read
        being handled, or at once outside one. A closed connection drops it."""
        if self.protocol.state is not State.OPEN:
            return
        self.protocol.send_text(data)
        if not self._in_read:
            self._flush()

    async def close(self) -> None:
        """The closing handshake, then the TCP close (at most CLOSE_TIMEOUT_S)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close()
            self._flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT_S)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- internals ----------------------------------------------------------------

    def _handshake_done(self) -> None:
        if self.opened.done():
            return
        if self.protocol.handshake_exc is not None:
            self.opened.set_exception(self.protocol.handshake_exc)
        else:
            self.opened.set_result(None)

    def _frame(self, frame: Frame) -> None:
        # Ping, pong and close are answered by the sans-I/O protocol itself.
        if frame.opcode is Opcode.TEXT:
            if frame.fin:
                self.on_text(frame.data)
            else:
                self._fragments = [frame.data]
        elif frame.opcode is Opcode.CONT and self._fragments:
            self._fragments.append(frame.data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self.on_text(data)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        chunks = self.protocol.data_to_send()
        if not chunks:
            return
        data = b"".join(chunks)
        if data:
            transport.write(data)
        if chunks[-1] == b"":  # the protocol's end-of-stream marker (after a close)
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        elif self.protocol.close_expected() and self._closing_timer is None:
            # The server closes TCP after the closing handshake; don't wait forever.
            self._closing_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.abort)


async def open_websocket(
    url: str, *, on_text: TextHandler, max_size: int, timeout_s: float
) -> WebSocketClient:
    """Connect and complete the opening handshake; text messages go to ``on_text`` from
    the first one (it may be in the handshake's read). Raises OSError, TimeoutError or
    a ``websockets`` handshake error (InvalidStatus, InvalidHandshake)."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        _, client = await loop.create_connection(
            lambda: WebSocketClient(url, max_size, on_text),
            uri.host,
            uri.port,
            ssl=ssl.create_default_context() if uri.secure else None,
        )
        try:
            await client.opened
        except BaseException:
            client.abort()
            raise
    return client
