"""The load generator's lean WebSocket client against the ``websockets`` server: the
parts it does itself (fragments, write batching inside a read, failures, closing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from omninudge_server.bench.wsclient import Payload, WebSocketClient, open_websocket


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """A server that sends one fragmented message, then echoes every text message
    back twice."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(["frag", "mented"])  # a text message in two frames
        async for message in ws:
            await ws.send(message)
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


class _Received:
    """Collects text messages; ``wait(count)`` until that many arrived."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.changed = asyncio.Event()

    def __call__(self, data: Payload) -> None:
        self.messages.append(bytes(data))
        self.changed.set()

    async def wait(self, count: int) -> list[bytes]:
        async with asyncio.timeout(5):
            while len(self.messages) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.messages


async def _open(url: str, on_text: _Received) -> WebSocketClient:
    return await open_websocket(url, on_text=on_text, max_size=1 << 20, timeout_s=5)


async def test_fragments_are_joined_and_sends_arrive_in_order(echo_url: str) -> None:
    received = _Received()
    client = await _open(echo_url, received)
    client.send(b"one")
    client.send(b"two")
    assert await received.wait(5) == [b"fragmented", b"one", b"one", b"two", b"two"]
    await client.close()
    assert client.closed


async def test_sends_made_while_handling_a_read_are_written_together(echo_url: str) -> None:
    """Replies queued by on_text leave in one write at the end of the read."""
    received = _Received()
    client = await _open(echo_url, received)
    await received.wait(1)  # "fragmented"
    assert client.transport is not None
    writes: list[bytes] = []
    write = client.transport.write

    def counting_write(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        write(data)

    client.transport.write = counting_write  # type: ignore[method-assign]

    def reply_twice(data: Payload) -> None:
        received(data)
        if data == b"ping" and received.messages.count(b"ping") == 1:
            client.send(b"a")
            client.send(b"b")
            assert writes == []  # still inside the read

    client.on_text = reply_twice
    client.send(b"ping")
    writes.clear()
    assert (await received.wait(7))[1:] == [b"ping", b"ping", b"a", b"a", b"b", b"b"]
    assert len(writes) == 1
    await client.close()


async def test_a_failing_handler_is_recorded_and_drops_the_connection(echo_url: str) -> None:
    def on_text(data: Payload) -> None:
        raise ValueError("bad frame")

    client = await open_websocket(echo_url, on_text=on_text, max_size=1 << 20, timeout_s=5)
    await asyncio.wait_for(asyncio.shield(client.lost), 5)
    assert isinstance(client.failure, ValueError)


async def test_a_refused_handshake_raises() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close()

    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(403, "no\n")

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(Exception, match="403"):
            await _open(f"ws://127.0.0.1:{port}/ws", _Received())
