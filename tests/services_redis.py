"""Redis for the test suite (a pytest plugin registered from tests/conftest.py).

``redis_url`` (session) is, in order:

1. ``$OMNINUDGE_TEST_REDIS`` (it must answer),
2. ``redis://127.0.0.1:6379/0`` when it answers,
3. else a throwaway ``redis-server`` (no persistence) on a spare loopback port, started
   on first use and stopped at the end of the session.

Tests share that Redis, so each one works under its own key prefix
(``unique_prefix()``, all below the run's ``session_prefix()``); the keys under the
run's prefix are deleted at the end of the session.

``RedisServer`` is a private ``redis-server`` a test may stop and start again on the
same port (degradation tests, drills): ask ``redis_server_factory`` for one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import RedisError

from tests.services import spare_port

__all__ = [
    "RedisServer",
    "redis_answers",
    "session_prefix",
    "session_redis_url",
    "unique_prefix",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis server at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer:
    """A private ``redis-server`` (no persistence) in a temporary directory on a
    loopback port. ``stop()`` then ``start()`` brings it back on the same port, empty."""

    def __init__(self, *, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = port or spare_port()
        self.root = Path(tempfile.mkdtemp(prefix="omninudge-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers. Raises RuntimeError if it does not."""
        if self.running():
            return
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.root),
            "--logfile", str(self.root / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(command, cwd=self.root)
        deadline = time.monotonic() + timeout_s
        while not redis_answers(self.url, timeout_s=0.5):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait for the process to exit (connections drop at once)."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL, like a crash."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, signum: int, timeout_s: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        if self.running():
            assert self._process is not None
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.running():
            assert self._process is not None
            self._process.send_signal(signal.SIGCONT)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def destroy(self) -> None:
        """Stop the server if it runs and delete its directory."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()


# --- the run's shared Redis --------------------------------------------------------------

_session: dict[str, object] = {}
_prefix_numbers = itertools.count(1)


def session_redis_url() -> str:
    """The URL of the Redis shared by this test run (resolved, or started, on first use)."""
    url = _session.get("url")
    if isinstance(url, str):
        return url
    configured = os.environ.get("OMNINUDGE_TEST_REDIS")
    if configured:
        if not redis_answers(configured):
            pytest.fail(f"OMNINUDGE_TEST_REDIS={configured} does not answer")
        url = configured
    elif redis_answers(DEFAULT_REDIS_URL):
        url = DEFAULT_REDIS_URL
    else:
        server = RedisServer()
        server.start()
        _session["server"] = server
        url = server.url
    _session["url"] = url
    return url


def session_prefix() -> str:
    """A key prefix unique to this test run; every test prefix lies below it."""
    prefix = _session.get("prefix")
    if not isinstance(prefix, str):
        prefix = f"omninudge-test-{os.getpid()}-{uuid.uuid4().hex[:8]}:"
        _session["prefix"] = prefix
    return prefix


def unique_prefix() -> str:
    """A fresh key prefix below ``session_prefix()`` (one per adapter under test)."""
    return f"{session_prefix()}{next(_prefix_numbers)}:"


def _delete_session_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    try:
        pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + "*"
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    url, prefix, server = _session.get("url"), _session.get("prefix"), _session.get("server")
    if isinstance(url, str) and isinstance(prefix, str) and not isinstance(server, RedisServer):
        with contextlib.suppress(RedisError, OSError):
            _delete_session_keys(url, prefix)
    if isinstance(server, RedisServer):
        server.destroy()
    _session.clear()


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis shared by the run (see the module docstring)."""
    return session_redis_url()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return unique_prefix()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[[], RedisServer]]:
    """Start private redis-servers on demand (for tests that stop and restart Redis);
    each is destroyed when the test ends."""
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer()
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.destroy()
