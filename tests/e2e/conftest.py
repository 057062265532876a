"""End-to-end tests: Playwright (Python) drives Debian's Chromium against a real uvicorn
on a loopback port serving the real app (SQLite in a temporary data directory, media on
the local disk there, Redis under a key prefix of this run).

The server is wrapped in a recording ASGI middleware, its logs go to a file at DEBUG
level, and a RedisTap records what it publishes through Redis and dumps what it keeps
there, so a test can prove that a plaintext never reached the server in any form.
Skipped (not failed) where Playwright or Chromium is missing: ``nox -s e2e`` installs
both. ``OMNINUDGE_CHROMIUM`` points at another Chromium binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from omninudge_core import codec, wire
from omninudge_core.models import Message as DomainMessage
from omninudge_core.models import Origin
from omninudge_server.app import create_app
from omninudge_server.config import Settings, load_settings
from omninudge_server.transport import websocket_options
from tests.services_redis import session_redis_url, unique_prefix

CHROMIUM = os.environ.get("OMNINUDGE_CHROMIUM", "/usr/bin/chromium")
try:
    from playwright import async_api as playwright_api
except ImportError:  # pragma: no cover - depends on the environment
    playwright_api = None

_MISSING = (
    "playwright is not installed (pip install playwright)"
    if playwright_api is None
    else f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not Path(CHROMIUM).exists()
    else None
)
if _MISSING is not None:
    # `nox -s e2e` sets OMNINUDGE_E2E_REQUIRED: there a missing browser is a failure.
    if os.environ.get("OMNINUDGE_E2E_REQUIRED") == "1":
        raise RuntimeError(f"the e2e tests cannot run: {_MISSING}")
    collect_ignore_glob = ["test_*.py"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"
TIMEOUT_MS = 10_000


class Recorder:
    """ASGI middleware that keeps every byte the server received or sent: paths, query
    strings, headers, HTTP bodies and WebSocket frames, both ways."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.chunks: list[bytes] = []

    def _keep(self, message: Message) -> None:
        for key in ("body", "bytes"):
            value = message.get(key)
            if value:
                self.chunks.append(bytes(value))
        text = message.get("text")
        if text:
            self.chunks.append(text.encode("utf-8"))
        for name, value in message.get("headers", ()):
            self.chunks.append(bytes(name) + b": " + bytes(value))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            self.chunks.append(scope["path"].encode("utf-8") + b"?" + scope["query_string"])
            for name, value in scope["headers"]:
                self.chunks.append(bytes(name) + b": " + bytes(value))

        async def recording_receive() -> Message:
            message = await receive()
            self._keep(message)
            return message

        async def recording_send(message: Message) -> None:
            self._keep(message)
            await send(message)

        await self.app(scope, recording_receive, recording_send)

    def contains(self, needle: bytes) -> bool:
        return any(needle in chunk for chunk in self.chunks)

    def size(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


class E2EServer:
    def __init__(
        self, settings: Settings, app: Starlette, recorder: Recorder, log_file: Path
    ) -> None:
        self.settings = settings
        self.app = app
        self.recorder = recorder
        self.log_file = log_file
        self.base_url = f"http://127.0.0.1:{settings.port}"
        self.redis: RedisTap | None = None

    @property
    def services(self) -> Any:
        return self.app.state.services

    async def inject(
        self,
        *,
        conversation_id: str,
        sender_id: str,
        envelope: dict[str, Any],
        notify: str,
        client_msg_id: str | None = None,
    ) -> None:
        """Play a misbehaving server: store a message exactly as given, with none of the
        send path's checks, and push it to ``notify``."""
        raw = {"conversation_id": conversation_id, "client_msg_id": "x", "envelope": envelope}
        body = codec.decode_body(json.dumps(raw).encode("utf-8"), wire.PostMessageBody)
        message = DomainMessage(
            id=self.services.new_id(),
            conversation_id=conversation_id,
            sender_id=sender_id,
            client_msg_id=client_msg_id or str(uuid.uuid4()),
            origin=Origin.PLATFORM,
            sent_at=datetime.now(UTC),
            envelope=body.envelope,
        )
        await self.inject_message(message, notify=notify)

    async def inject_message(self, message: DomainMessage, *, notify: str) -> None:
        appended = await self.services.storage.messages.append(message, (), notify=[notify])
        for event in appended.events:
            await self.app.state.hub.notify_events(event.user_id, event.seq)


class RedisTap:
    """Everything the server keeps in, or sends through, Redis under its key prefix:
    a pattern subscription records every payload published on the prefix's channels
    (the fan-out) while the server runs, and ``dump`` reads every key's value."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.published: list[bytes] = []
        self._client = aioredis.Redis.from_url(url)
        self._pubsub = self._client.pubsub()
        self._task: asyncio.Task[None] | None = None

    def _pattern(self) -> str:
        return "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix) + "*"

    async def start(self) -> None:
        await self._pubsub.psubscribe(self._pattern())
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] == "pmessage":
                self.published.append(bytes(message["channel"]) + b" " + bytes(message["data"]))

    async def dump(self) -> dict[bytes, bytes]:
        """Every key under the prefix with its value, whatever its type, as bytes."""
        out: dict[bytes, bytes] = {}
        async for key in self._client.scan_iter(match=self._pattern(), count=500):
            raw_kind = await self._client.type(key)
            kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
            if kind == "string":
                value: Any = await self._client.get(key)
            elif kind == "hash":
                value = await self._client.hgetall(key)
            elif kind == "list":
                value = await self._client.lrange(key, 0, -1)
            elif kind == "set":
                value = await self._client.smembers(key)
            elif kind == "zset":
                value = await self._client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = await self._client.xrange(key)
            else:
                value = await self._client.dump(key)
            out[bytes(key)] = repr(value).encode("utf-8") + b"|" + _raw_bytes(value)
        return out

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()


def _raw_bytes(value: Any) -> bytes:
    """The bytes inside a Redis answer (repr escapes non-ASCII: scan the raw bytes too)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        return b"|".join(_raw_bytes(k) + b"=" + _raw_bytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return b"|".join(_raw_bytes(v) for v in value)
    return str(value).encode("utf-8")


@contextlib.asynccontextmanager
async def serving(
    env: dict[str, str],
    data_dir: Path,
    *,
    sock: socket.socket | None = None,
    redis_tap: RedisTap | None = None,
) -> AsyncIterator[E2EServer]:
    """The real app under uvicorn on a loopback port (``sock``, or a fresh one), wrapped
    in the Recorder, every log line at DEBUG level into ``data_dir/server.log``."""
    log_file = data_dir / "server.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)

    sock = sock or loopback_socket()
    port = sock.getsockname()[1]
    env = {"DATABASE_URL": f"sqlite:///{data_dir / 'omninudge.db'}", **env}
    settings = load_settings(env, host="127.0.0.1", port=port, data_dir=data_dir)
    app = create_app(settings)
    recorder = Recorder(app)
    config = uvicorn.Config(
        recorder,
        **websocket_options(settings),
        lifespan="on",
        log_level="debug",
        access_log=True,
        log_config=None,  # keep our root handler: everything goes to the log file
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("server did not start")
        running = E2EServer(settings, app, recorder, log_file)
        running.redis = redis_tap
        yield running
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="session")
async def e2e_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[E2EServer]:
    """SQLite in a temporary data directory (media on the local disk there) and Redis
    (shared state and fan-out) under a key prefix of this run, tapped by a RedisTap."""
    data_dir = tmp_path_factory.mktemp("omninudge-e2e")
    url, prefix = session_redis_url(), unique_prefix()
    tap = RedisTap(url, prefix)
    await tap.start()
    env = {"REDIS_URL": url, "OMNINUDGE_REDIS_PREFIX": prefix}
    try:
        async with serving(env, data_dir, redis_tap=tap) as server:
            yield server
    finally:
        await tap.close()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def new_page(browser: Any, e2e_server: E2EServer) -> AsyncIterator[Any]:
    """A factory of pages, each in its own browser context (its own cookies and
    IndexedDB: a separate person on a separate device). ``phone=True`` gives a
    phone-sized viewport."""
    contexts: list[Any] = []

    async def make(phone: bool = False) -> Any:
        viewport = {"width": 390, "height": 780} if phone else {"width": 1100, "height": 760}
        context = await browser.new_context(viewport=viewport, base_url=e2e_server.base_url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        context.on("weberror", lambda web_error: errors.append(str(web_error.error)))
        return await context.new_page()

    errors: list[str] = []
    yield make
    for context in contexts:
        with contextlib.suppress(Exception):
            await context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def login(page: Any, username: str) -> None:
    """Dev login through the page's own form; waits until the WebSocket is up."""
    expect = playwright_api.expect
    await page.goto("/")
    await page.get_by_label("Username (development login)").fill(username)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#conn-status")).to_have_attribute("data-status", "online")


async def start_chat(page: Any, username: str) -> None:
    await page.get_by_label("Start a chat with a Reddit username").fill(username)
    await page.get_by_role("button", name="Start", exact=True).click()
    await playwright_api.expect(page.locator("#chat-title")).to_have_text(username)


async def send(page: Any, text: str) -> None:
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_label("Message", exact=True).press("Enter")
