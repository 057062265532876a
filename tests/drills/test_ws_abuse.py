"""WebSocket abuse against a real ``omninudge serve``, all at once: a silent socket that
never authenticates, oversize, binary and flooding frames, and thousands of connections
from one user. Each gets its documented close code; everyone else is served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.drills.harness import ServerProcess, drill_env, login, scale

CONNECTIONS = scale(400, 3000)  # from one user
CAP = 20  # OMNINUDGE_WS_MAX_CONNECTIONS_PER_USER default


async def closed_with(connection: ClientConnection, wait_s: float = 15.0) -> int | None:
    """Read until the server closes; its close code."""
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            await asyncio.wait_for(connection.recv(), deadline - time.monotonic())
    except (ConnectionClosed, TimeoutError):
        pass
    return connection.close_code


async def authenticated(server: ServerProcess, token: str) -> ClientConnection | int | None:
    """An authenticated connection, or the close code it was refused with."""
    connection = await websockets.connect(server.ws_url, max_size=None, compression=None)
    await connection.send(json.dumps({"type": "auth", "token": token}))
    try:
        frame = json.loads(await asyncio.wait_for(connection.recv(), 15))
    except ConnectionClosed:
        return connection.close_code
    assert frame["type"] == "hello", frame
    return connection


async def test_abusive_clients_get_their_close_codes_and_others_are_served(
    tmp_path: Path,
) -> None:
    server = ServerProcess.new(tmp_path, drill_env())
    server.start()
    await server.wait_ready()
    hog, normal = await login(server.base_url, "hog"), await login(server.base_url, "normal")
    opened: list[ClientConnection] = []
    try:
        silent = await websockets.connect(server.ws_url)  # never sends auth
        silent_since = time.monotonic()

        oversize = await authenticated(server, normal.token)
        assert isinstance(oversize, ClientConnection)
        await oversize.send("x" * (200 * 1024))
        oversize_code = await closed_with(oversize)

        binary = await authenticated(server, normal.token)
        assert isinstance(binary, ClientConnection)
        await binary.send(b"\x00\xff\xfe garbage")
        binary_answer = json.loads(await binary.recv())
        await binary.send(b'{"type":"ping"}')  # JSON in a binary frame is read as JSON
        binary_pong = json.loads(await binary.recv())
        for _ in range(200):
            await binary.send(b"\x01" * 64)
        flood_codes = set()
        with contextlib.suppress(ConnectionClosed):
            while True:
                flood_codes.add(json.loads(await asyncio.wait_for(binary.recv(), 15))["code"])
        binary_flood_code = binary.close_code

        results: list[ClientConnection | int | None] = []
        for start in range(0, CONNECTIONS, 50):
            batch = [authenticated(server, hog.token) for _ in range(min(50, CONNECTIONS - start))]
            results.extend(await asyncio.gather(*batch, return_exceptions=False))
        opened = [r for r in results if isinstance(r, ClientConnection)]
        refused = [r for r in results if not isinstance(r, ClientConnection)]

        # Meanwhile a normal user is served: a live round trip.
        async with normal.connect() as stream:
            await stream.ping()
            assert (await stream.recv(5.0))["type"] == "pong"
        # One of the hog's connections closes: a new one is admitted again.
        await opened[0].close()
        await asyncio.sleep(0.2)
        again = await authenticated(server, hog.token)
        assert isinstance(again, ClientConnection)
        opened[0] = again

        silent_code = await closed_with(silent, wait_s=20.0)
        silent_after = time.monotonic() - silent_since
        health = (await server_health(server))["status"]
    finally:
        for connection in opened:
            await connection.close()
        await hog.aclose()
        await normal.aclose()
        server.stop()
    print(
        f"\nws abuse: {CONNECTIONS} connections from one user -> {len(opened)} open, "
        f"{len(refused)} closed {set(refused)}; oversize {oversize_code}; binary flood "
        f"{binary_flood_code}; silent socket {silent_code} after {silent_after:.1f}s"
    )
    assert oversize_code == 1009
    assert binary_answer["type"] == "error"
    assert binary_pong["type"] == "pong"
    assert "rate_limited" in flood_codes  # warned first, then closed
    assert binary_flood_code == 1008
    assert len(opened) == CAP
    assert set(refused) == {4429}
    assert silent_code == 4401
    assert 9.0 <= silent_after < 20.0
    assert health == "healthy"
    assert "Traceback" not in server.log(tail=None)


async def server_health(server: ServerProcess) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as http:
        body: dict[str, str] = (await http.get("/health")).json()
        return body
