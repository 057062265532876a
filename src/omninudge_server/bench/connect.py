"""Opening an authenticated bench connection (``open_session``), and the small helpers
every generator process shares: ``wait_until`` and ``install_uvloop``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson

from omninudge_server.bench.setup import Account
from omninudge_server.bench.wsclient import Payload, TextHandler, WebSocketClient, open_websocket

__all__ = ["MAX_FRAME", "OPEN_TIMEOUT_S", "install_uvloop", "open_session", "wait_until"]

MAX_FRAME = 1 << 20
OPEN_TIMEOUT_S = 60.0


async def open_session(
    ws_url: str,
    account: Account,
    resume_from: int | None = None,
    on_text: TextHandler | None = None,
) -> WebSocketClient:
    """Connect and authenticate; frames after ``hello`` go to ``on_text``. Raises
    RuntimeError when the server answers ``auth`` with anything but ``hello``."""
    hello: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    opened: list[WebSocketClient] = []

    def first(data: Payload) -> None:
        if on_text is not None and opened:
            opened[0].on_text = on_text  # the rest of this read already goes there
        if not hello.done():
            hello.set_result(orjson.loads(data))

    client = await open_websocket(
        f"{ws_url}?device_id={account.device_id}",
        on_text=first,
        max_size=MAX_FRAME,
        timeout_s=OPEN_TIMEOUT_S,
    )
    opened.append(client)
    auth: dict[str, Any] = {"type": "auth", "token": account.token}
    if resume_from is not None:
        auth["resume_from"] = resume_from
    client.send(orjson.dumps(auth))
    await asyncio.wait(
        {hello, client.lost}, timeout=OPEN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
    )
    frame = hello.result() if hello.done() else None
    if not isinstance(frame, dict) or frame.get("type") != "hello":
        client.abort()
        raise RuntimeError(f"expected hello, got {frame}")
    return client


async def wait_until(
    done: Callable[[], bool], until: float = float("inf"), step: float = 0.01
) -> None:
    # Polling: the conditions span many connections, and a check every 10 ms costs
    # nothing next to the traffic.
    while not done() and time.monotonic() < until:  # noqa: ASYNC110
        await asyncio.sleep(step)


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
