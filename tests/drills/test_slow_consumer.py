"""Slow consumer: a client that stops reading while 10,000 messages are sent to it.

Server memory stays bounded (at most ``ws_max_in_flight`` unacknowledged pushes per
connection: nothing else is queued for it), the recipient gets everything once it
reads and acks again, and a connection whose socket stays full is closed with 4413."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from omninudge_server.client import Client
from tests.drills.harness import ServerProcess, drill_env, envelope, login, scale

MESSAGES = scale(10_000, 50_000)
IN_FLIGHT = 256  # Settings.ws_max_in_flight


def padded_envelope(sender: Client, recipient: Client, ct_bytes: int) -> dict[str, Any]:
    devices = [sender.device_id or "", recipient.device_id or ""]
    built = envelope(devices[0], devices)
    built["ct"] = base64.urlsafe_b64encode(os.urandom(ct_bytes)).rstrip(b"=").decode()
    return built


async def send_many(
    sender: Client,
    recipient: Client,
    conversation_id: str,
    count: int,
    ct_bytes: int,
    first: int = 0,
) -> None:
    """``count`` messages (numbered from ``first``) over REST from 8 concurrent workers."""
    numbers = iter(range(first, first + count))

    async def worker() -> None:
        for number in numbers:
            body = padded_envelope(sender, recipient, ct_bytes)
            await sender.send(conversation_id, body, client_msg_id=f"slow-{number:06d}")

    await asyncio.gather(*(worker() for _ in range(8)))


async def drain(stream: Any, want: int, ack: bool, idle_s: float = 1.5) -> list[str]:
    """Message ids received until ``want`` arrived or nothing came for ``idle_s``."""
    got: list[str] = []
    if ack:
        await stream.ack()  # what was read before: frees the server's window
    while len(got) < want:
        try:
            frame = await stream.recv(idle_s)
        except TimeoutError:
            break
        if frame.get("type") == "message":
            got.append(frame["message"]["id"])
            if ack and len(got) % 50 == 0:
                await stream.ack()
    if ack:
        await stream.ack()
    return got


async def test_a_reader_that_stops_does_not_grow_server_memory_and_gets_everything(
    tmp_path: Path,
) -> None:
    server = ServerProcess.new(tmp_path, drill_env())
    server.start()
    await server.wait_ready()
    sender, reader = await login(server.base_url, "sender"), await login(server.base_url, "slow")
    try:
        conversation_id = (await sender.open_conversation(reader.user_id))["id"]
        async with reader.connect(resume_from=0) as stream:
            # The reader is connected and stops reading (and acking) from here on.
            await send_many(sender, reader, conversation_id, 500, 4096)
            rss_before = server.rss_kb()
            started = time.monotonic()
            await send_many(sender, reader, conversation_id, MESSAGES - 500, 4096, first=500)
            elapsed = time.monotonic() - started
            rss_after = server.rss_kb()
            # It reads again without acking: only the in-flight window was pushed.
            window = await drain(stream, MESSAGES, ack=False)
            # Then it acks as it goes and gets the rest.
            rest = await drain(stream, MESSAGES - len(window), ack=True, idle_s=10.0)
    finally:
        await sender.aclose()
        await reader.aclose()
        server.stop()
    grown_mb = (rss_after - rss_before) / 1024
    print(
        f"\nslow consumer: {MESSAGES} messages x 4 KiB in {elapsed:.1f}s; server RSS "
        f"{rss_before // 1024} -> {rss_after // 1024} MiB; window {len(window)}; "
        f"delivered {len(window) + len(rest)}"
    )
    assert len(window) == IN_FLIGHT
    received = window + rest
    assert (len(received), len(set(received))) == (MESSAGES, MESSAGES)
    # 10,000 x 4 KiB queued for the reader would be 40 MiB; bounded, it is the window.
    assert grown_mb < 16, f"server RSS grew by {grown_mb:.1f} MiB"


async def open_tiny_buffer_socket(server: ServerProcess, token: str) -> ClientConnection:
    """A WebSocket whose receive buffer is tiny, so the server's fills up quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    connection = await websockets.connect(
        server.ws_url, sock=sock, max_size=None, max_queue=2, compression=None
    )
    await connection.send(json.dumps({"type": "auth", "token": token, "resume_from": 0}))
    assert json.loads(await connection.recv())["type"] == "hello"
    return connection


async def test_a_connection_whose_buffer_stays_full_is_closed_with_4413_then_resumes(
    tmp_path: Path,
) -> None:
    server = ServerProcess.new(tmp_path, drill_env(OMNINUDGE_WS_SEND_TIMEOUT_S="1"))
    server.start()
    await server.wait_ready()
    sender, reader = await login(server.base_url, "sender"), await login(server.base_url, "full")
    count = 200  # x 60 KiB: 12 MiB, far more than the socket buffers hold
    try:
        conversation_id = (await sender.open_conversation(reader.user_id))["id"]
        connection = await open_tiny_buffer_socket(server, reader.token)
        await send_many(sender, reader, conversation_id, count, 45_000)
        await asyncio.sleep(2.5)  # > OMNINUDGE_WS_SEND_TIMEOUT_S: the server gives up
        # The reader reads again: the backlog, then the close frame.
        backlog = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                await connection.recv()
                backlog += 1
        close_code = connection.close_code
        # A new connection resuming from 0 gets every message, once.
        async with reader.connect(resume_from=0) as stream:
            received = await drain(stream, count, ack=True, idle_s=5.0)
    finally:
        await sender.aclose()
        await reader.aclose()
        server.stop()
    print(
        f"\nbuffer full: closed with {close_code} after {backlog} frames; resumed {len(received)}"
    )
    assert close_code == 4413
    assert backlog < count
    assert (len(received), len(set(received))) == (count, count)
