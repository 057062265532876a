"""Several ``omninudge serve`` processes as an operator runs them: one cluster sharing
PostgreSQL and Redis, each instance on its own loopback port.

    cluster = Cluster(database_url=..., redis_url=..., redis_prefix=..., root=tmp_path)
    one, two = await cluster.start(2)
    ...
    two.kill()           # SIGKILL, like a crash
    cluster.stop_all()   # in a finally

Instances are real subprocesses (the console script), so a SIGKILL really loses the
process with its connections, and nothing is shared between instances but the database
and Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.services import spare_port

__all__ = ["OMNINUDGE", "Cluster", "Instance", "clean_env"]

OMNINUDGE = str(Path(sys.executable).parent / "omninudge")
JWT_SECRET = "scale-test-secret-" + "s" * 40
_OUR_VARS = ("DATABASE_URL", "REDIS_URL", "S3_", "REDDIT_", "OMNINUDGE_", "AWS_")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any OmniNudge variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_VARS)}
    env.update(extra)
    return env


class Instance:
    """One ``omninudge serve`` subprocess."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        data_dir: Path,
        log_path: Path,
        *,
        log_level: str = "warning",
    ) -> None:
        self.name = name
        self.log_level = log_level
        self.env = env
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = spare_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    OMNINUDGE, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                    "--data-dir", str(self.data_dir), "--log-level", self.log_level,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
            )  # fmt: skip

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until ``/health`` answers. Raises AssertionError (with the log) otherwise."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if not self.running():
                    raise AssertionError(f"{self.name} exited:\n{self.log()}")
                try:
                    await http.get("/health")
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} did not start:\n{self.log()}")

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0) as http:
            body: dict[str, Any] = (await http.get("/health")).json()
            return body

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process dies with its connections, nothing is flushed."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL after 15 s."""
        if not self.running():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self, tail: int | None = 4000) -> str:
        """The instance's output (the last ``tail`` characters; None: all of it)."""
        try:
            text = self.log_path.read_text(errors="replace")
            return text if tail is None else text[-tail:]
        except FileNotFoundError:
            return ""


class Cluster:
    """Instances sharing one database and one Redis (under one key prefix)."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        redis_prefix: str,
        root: Path,
        **extra_env: str,
    ) -> None:
        self.root = root
        self.env = clean_env(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            OMNINUDGE_REDIS_PREFIX=redis_prefix,
            OMNINUDGE_JWT_SECRET=JWT_SECRET,
            OMNINUDGE_DEV_LOGIN="1",
            **extra_env,
        )
        self.instances: list[Instance] = []

    def add(self) -> Instance:
        number = len(self.instances) + 1
        name = f"instance{number}"
        instance = Instance(name, self.env, self.root / name, self.root / f"{name}.log")
        self.instances.append(instance)
        return instance

    async def start(self, count: int) -> list[Instance]:
        """Start ``count`` more instances, one after the other (the first applies the
        migrations), and wait until each answers."""
        started = []
        for _ in range(count):
            instance = self.add()
            instance.start()
            await instance.wait_ready()
            started.append(instance)
        return started

    def stop_all(self) -> None:
        for instance in self.instances:
            instance.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {i.name}\n{i.log()}" for i in self.instances)
