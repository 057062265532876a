"""A history import survives a crash: ``omninudge serve`` (a subprocess, Reddit pointed
at the stand-in) is killed with SIGKILL while importing, started again, and the
import completes with nothing lost and nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from omninudge_adapters.reddit.testing import running_standin
from tests.server.reddit_env import (
    CLIENT_ID,
    RedditWorld,
    bearer,
    make_standin,
    reddit_env,
    reddit_login,
)

OMNINUDGE = str(Path(sys.executable).parent / "omninudge")
_OUR_VARS = ("DATABASE_URL", "REDIS_URL", "S3_", "REDDIT_", "OMNINUDGE_", "AWS_")


class Remote:
    """Enough of ``RunningServer`` for ``reddit_login``: a base URL and clients."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=10.0, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(data_dir: Path, port: int, env: dict[str, str]) -> AsyncIterator[Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_VARS)}
    log = (data_dir.parent / f"serve-{port}.log").open("ab")  # read when a test fails
    process = await asyncio.create_subprocess_exec(
        OMNINUDGE,
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        env={**clean, **env},
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    await http.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
                    break
                if process.returncode is not None:
                    raise AssertionError("omninudge serve exited during start-up")
                await asyncio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def upgrade_state(http: httpx.AsyncClient, conversation_id: str) -> str | None:
    page = (await http.get("/api/conversations")).json()["conversations"]
    return next((c["upgrade_state"] for c in page if c["id"] == conversation_id), None)


async def test_an_import_killed_midway_completes_after_a_restart_without_duplicates(
    tmp_path: Path,
) -> None:
    standin = make_standin()
    for name in ("alice", "bob"):
        standin.add_user(name)
    # 110 Reddit messages between them: only the newest 100 come along.
    for i in range(110):
        author, dest = ("bob", "alice") if i % 2 == 0 else ("alice", "bob")
        standin.mail._new_message(author, dest, "s", f"history {i:03d}", None)
        standin.mail.messages[-1]["created_utc"] = 1_700_000_000.0 + i
    port = _free_port()
    data_dir = tmp_path / "data"
    async with running_standin(standin) as url:
        env = reddit_env(url)
        world = RedditWorld(standin, url, Remote(f"http://127.0.0.1:{port}"))  # type: ignore[arg-type]
        async with serve(data_dir, port, env) as process:
            alice = await reddit_login(world, "alice")
            async with world.server.client(headers=bearer(alice["access_token"])) as http:
                created = await http.post("/api/conversations", json={"reddit_username": "bob"})
                cid = created.json()["id"]
                sent = await http.post(
                    "/api/messages",
                    json={"conversation_id": cid, "client_msg_id": "r1", "text": "join me"},
                )
                assert sent.json()["message"]["status"] == "relayed_to_reddit"
            # Reddit sends /message/* to its login page for a while: the import must wait.
            standin.messaging_redirect = True
            bob = await reddit_login(world, "bob")
            async with world.server.client(headers=bearer(bob["access_token"])) as http:
                for _ in range(200):
                    fetched = standin.requests["GET /message/inbox"]
                    if fetched and await upgrade_state(http, cid) == "importing":
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the import never started")
            process.kill()  # SIGKILL: no shutdown, no goodbye
            await process.wait()
        standin.messaging_redirect = False
        async with (
            serve(data_dir, port, env),
            world.server.client(headers=bearer(bob["access_token"])) as http,
        ):
            deadline = time.monotonic() + 30  # the retry is due 5 s after the failed fetch
            while (state := await upgrade_state(http, cid)) != "upgraded":
                if time.monotonic() > deadline:
                    logs = (tmp_path / f"serve-{port}.log").read_text(errors="replace")
                    raise AssertionError(f"stuck in {state}: {dict(standin.requests)}\n{logs}")
                await asyncio.sleep(0.05)
            page = (
                await http.get(f"/api/conversations/{cid}/messages", params={"limit": 100})
            ).json()
            extra = None
            if page["next_cursor"] is not None:
                extra = await http.get(
                    f"/api/conversations/{cid}/messages",
                    params={"limit": 100, "before": page["next_cursor"]},
                )
    assert extra is None or extra.json()["messages"] == []
    texts = [m["text"] for m in page["messages"]]
    assert len(texts) == len(set(texts)) == 100  # 99 imported + the relayed one
    assert texts[0] == "join me"
    assert sorted(t for t in texts if t.startswith("history")) == [
        f"history {i:03d}" for i in range(11, 110)
    ]
    assert all(r.client_id == CLIENT_ID for r in standin.log if r.path.startswith("/message/"))
