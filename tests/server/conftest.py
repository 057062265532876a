"""Server tests run a real uvicorn (in-process ``uvicorn.Server`` task) on a loopback
port, and talk to it with real httpx and websockets clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from omninudge_server.app import create_app
from omninudge_server.client import Client, Stream
from omninudge_server.config import Settings, load_settings
from omninudge_server.transport import websocket_options


def default_database_url(data_dir: Path) -> str:
    # The embedded default is SQLite; fall back to memory only while it is not there.
    try:
        from omninudge_adapters.sqlite import open_sqlite_storage  # noqa: F401
    except ImportError:
        return "memory://"
    return f"sqlite:///{data_dir / 'omninudge.db'}"


class RunningServer:
    def __init__(self, settings: Settings, base_url: str, app: Starlette) -> None:
        self.settings = settings
        self.app = app
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://") + "/ws"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=10.0, **kwargs)


@contextlib.asynccontextmanager
async def run_server(
    settings_env: Mapping[str, str], data_dir: Path, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """Start the app on a free loopback port; stop it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it; without it Nagle + delayed ACK add 40 ms per request
    # (uvicorn sets it only on sockets it binds itself).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    env = {"DATABASE_URL": default_database_url(data_dir), **settings_env}
    settings = load_settings(env, host="127.0.0.1", port=port, data_dir=data_dir)
    settings = attrs.evolve(settings, **overrides)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        **{**websocket_options(settings), "ws_ping_interval": None},
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("server did not start")
        yield RunningServer(settings, f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture(scope="session")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    """One shared server for the tests that do not need their own configuration.
    Every test creates its own users (unique names), so tests do not interfere."""
    data_dir = tmp_path_factory.mktemp("omninudge-data")
    # Bulk tests send hundreds of messages: lift the per-user send budget.
    async with run_server({}, data_dir, send_burst=100_000.0) as running:
        yield running


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fake_jwk() -> dict[str, str]:
    """A structurally valid EC P-256 public JWK (random coordinates: not a real point,
    which the server cannot and does not check)."""
    return {"kty": "EC", "crv": "P-256", "x": b64u(os.urandom(32)), "y": b64u(os.urandom(32))}


def fake_envelope(sender_device: str, devices: list[str]) -> dict[str, Any]:
    """A structurally valid v1 envelope (API.md) made of random bytes of the right sizes."""
    return {
        "v": 1,
        "alg": "ECDH-P256+HKDF-SHA256+A256GCM+ES256",
        "sender_device": sender_device,
        "epk": b64u(b"\x04" + os.urandom(64)),
        "iv": b64u(os.urandom(12)),
        "ct": b64u(os.urandom(48)),
        "keys": [
            {"device": d, "iv": b64u(os.urandom(12)), "wk": b64u(os.urandom(48))}
            for d in sorted(devices)
        ],
        "sig": b64u(os.urandom(64)),
    }


class Person:
    """A logged-in test user with one registered device."""

    def __init__(self, running: RunningServer, username: str, token: str, user: dict[str, Any]):
        self.running = running
        self.username = username
        self.token = token
        self.user = user
        self.id: str = user["id"]
        self.device_id = f"dev_{uuid.uuid4().hex[:12]}"
        self.http = running.client(headers={"Authorization": f"Bearer {token}"})

    async def register_device(self, device_id: str | None = None) -> str:
        device_id = device_id or self.device_id
        r = await self.http.put(
            f"/api/devices/{device_id}",
            json={"public_key": fake_jwk(), "signing_key": fake_jwk(), "name": "test"},
        )
        assert r.status_code in (200, 201), r.text
        return device_id

    async def conversation_with(self, other: Person) -> str:
        r = await self.http.post("/api/conversations", json={"user_id": other.id})
        assert r.status_code in (200, 201), r.text
        conversation_id: str = r.json()["id"]
        return conversation_id

    def envelope_for(self, other: Person) -> dict[str, Any]:
        return fake_envelope(self.device_id, [self.device_id, other.device_id])

    async def close(self) -> None:
        await self.http.aclose()


async def login(running: RunningServer, username: str | None = None) -> Person:
    username = username or unique_name()
    async with running.client() as http:
        r = await http.post("/api/auth/dev-login", json={"username": username})
    assert r.status_code == 200, r.text
    body = r.json()
    return Person(running, username, body["access_token"], body["user"])


@pytest.fixture
async def people(server: RunningServer) -> AsyncIterator[Any]:
    """A factory of logged-in people with a registered device; closed after the test."""
    made: list[Person] = []

    async def make(register: bool = True) -> Person:
        person = await login(server)
        if register:
            await person.register_device()
        made.append(person)
        return person

    yield make
    for person in made:
        await person.close()


async def sdk_client(server: RunningServer, person: Person) -> Client:
    """An SDK client for ``person`` (their token and device), checked with ``/api/me``."""
    client = Client(server.base_url, person.token, device_id=person.device_id)
    await client.me()
    return client


async def frame_of_type(stream: Stream, kind: str, wait_s: float = 5.0) -> dict[str, Any]:
    """Skip frames (presence...) until one of ``kind`` arrives."""
    while True:
        frame = await stream.recv(wait_s)
        if frame["type"] == kind:
            return frame
