"""Drill harness: real ``omninudge serve`` processes and a load driver built on the SDK.

    server = ServerProcess.new(tmp_path, env)   # DEBUG logs into the drill log directory
    server.start(); await server.wait_ready()
    load = await Load.prepare(server.base_url, pairs=4, messages=scale(100, 2000))
    task = asyncio.create_task(load.run())
    server.kill(); server.start(); ...          # SIGKILL and restart on the same port
    counts = await task                         # sent, acknowledged, delivered, lost, ...

The load is N senders and N receivers, one conversation per pair. A sender sends its
messages one after the other (``client_msg_id`` = ``<pair>-<n>``) over the WebSocket
(``send`` -> ``sent``) or REST (201/200) and retries the SAME ``client_msg_id`` until it
is acknowledged, whatever happens to the server. A receiver streams, acks every few
frames, and reconnects with ``resume_from`` = its last ack; it dedupes by message id, as
a real client does, and counts what arrived twice before that dedupe.

Every token and envelope the drills create is remembered in ``SECRETS``, and every
server log in ``LOGS``: tests/drills/conftest.py scans them all at the end of the run.
``OMNINUDGE_DRILL_SCALE=long`` (the ``drills`` nox session) makes every drill bigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from omninudge_server.client import ApiError, Client, Stream
from tests.server.conftest import fake_envelope, fake_jwk
from tests.server.multiproc import Instance, clean_env

__all__ = [
    "LOGS",
    "LONG",
    "SECRETS",
    "Counts",
    "Load",
    "ServerProcess",
    "drill_env",
    "remember_secret",
    "scale",
]

LONG = os.environ.get("OMNINUDGE_DRILL_SCALE", "").lower() == "long"
LOGS: list[Path] = []
SECRETS: set[str] = set()
JWT_SECRET = "drill-jwt-secret-" + "d" * 40
# Errors that mean "the server is not there right now": retry.
TRANSIENT = (httpx.TransportError, ConnectionClosed, InvalidHandshake, OSError, TimeoutError)


def scale(ci: int, long: int) -> int:
    """The CI-bounded size, or the long one under OMNINUDGE_DRILL_SCALE=long."""
    return long if LONG else ci


def remember_secret(value: str) -> None:
    """A value that must never appear in a server log (scanned at the end of the run)."""
    if len(value) >= 12:
        SECRETS.add(value)


def drill_env(**extra: str) -> dict[str, str]:
    """A clean environment for a drill server: dev login, no send budget in the way."""
    return clean_env(
        OMNINUDGE_DEV_LOGIN="1",
        OMNINUDGE_SEND_BURST="1000000",
        OMNINUDGE_SEND_RATE="100000",
        **extra,
    )


class ServerProcess(Instance):
    """One ``omninudge serve`` subprocess on a fixed loopback port, logging at DEBUG into
    the drill log directory (scanned for secrets), restartable on the same port."""

    def __init__(self, env: dict[str, str], data_dir: Path, log_path: Path) -> None:
        super().__init__("server", env, data_dir, log_path, log_level="debug")
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.starts = 0
        LOGS.append(log_path)

    @classmethod
    def new(cls, root: Path, env: dict[str, str], name: str = "server") -> ServerProcess:
        return cls(env, root / f"{name}-data", root / f"{name}.log")

    def start(self) -> None:
        """Start the process (again: same port, same data directory, same env)."""
        assert not self.running(), "already running"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== start {self.starts + 1}\n".encode())
        super().start()
        self.starts += 1

    async def restart(self) -> None:
        self.start()
        await self.wait_ready()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def terminate(self) -> None:
        """SIGTERM: ask for a graceful shutdown (does not wait)."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float = 20.0) -> int:
        """The exit status once the process ended. Raises AssertionError on timeout."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        raise AssertionError(f"server did not exit:\n{self.log()}")

    def rss_kb(self) -> int:
        """The server's resident set size, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")


# --- people -----------------------------------------------------------------------------


async def login(base_url: str, prefix: str) -> Client:
    """A new user (dev login) with one registered device; its token is a secret."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    client = await Client.dev_login(base_url, name)
    remember_secret(client.token)
    await client.register_device(
        f"dev_{uuid.uuid4().hex[:12]}", public_key=fake_jwk(), signing_key=fake_jwk()
    )
    return client


def envelope(sender_device: str, devices: Iterable[str]) -> dict[str, Any]:
    """A structurally valid envelope (its ciphertext is remembered as a secret)."""
    built = fake_envelope(sender_device, sorted(devices))
    if len(SECRETS) < 500:  # a sample is enough, and keeps the final scan quick
        remember_secret(built["ct"])
    return built


def _retryable(exc: ApiError) -> bool:
    """Rate limited or a dependency down: the same request later will do."""
    return exc.status in (429, 503) or exc.code in ("unavailable", "rate_limited")


# --- the load ---------------------------------------------------------------------------


@attrs.define
class Counts:
    """What a load measured. ``lost`` counts acknowledged messages that are missing from
    the store or never reached their recipient; it must be 0."""

    sent: int = 0  # send attempts (retries included)
    acknowledged: int = 0  # distinct messages acknowledged (201/200 or ``sent``)
    delivered: int = 0  # distinct messages received by their recipient
    lost: int = 0
    duplicates: int = 0  # deliveries of a message already received, before dedupe
    out_of_order: int = 0  # per conversation, a message received before an earlier one
    retries: int = 0  # attempts that failed (server down, 503, 429) and were repeated

    def line(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in attrs.asdict(self).items())


@attrs.define
class Pair:
    index: int
    sender: Client
    receiver: Client
    conversation_id: str
    mode: str  # "ws" or "rest"
    acked: dict[str, str] = attrs.field(factory=dict)  # client_msg_id -> message id
    received: list[str] = attrs.field(factory=list)  # client_msg_ids, first arrival order
    received_ids: set[str] = attrs.field(factory=set)  # message ids
    received_cmids: set[str] = attrs.field(factory=set)
    done_sending: bool = False

    @property
    def devices(self) -> list[str]:
        return [self.sender.device_id or "", self.receiver.device_id or ""]


class Load:
    """N senders and N receivers on one server (see the module doc)."""

    def __init__(self, base_url: str, pairs: list[Pair], messages: int) -> None:
        self.base_url = base_url
        self.pairs = pairs
        self.messages = messages
        self.counts = Counts()
        self.deadline = 0.0

    @classmethod
    async def prepare(
        cls, base_url: str, *, pairs: int = 4, messages: int = 100, modes: tuple[str, ...] = ()
    ) -> Load:
        """Log in ``pairs`` senders and receivers and open their conversations; senders
        alternate between the WebSocket and REST unless ``modes`` says otherwise."""
        made = []
        for index in range(pairs):
            sender = await login(base_url, f"send{index}")
            receiver = await login(base_url, f"recv{index}")
            conversation = await sender.open_conversation(receiver.user_id)
            mode = modes[index % len(modes)] if modes else ("ws", "rest")[index % 2]
            made.append(Pair(index, sender, receiver, conversation["id"], mode))
        return cls(base_url, made, messages)

    @property
    def acknowledged(self) -> int:
        return sum(len(pair.acked) for pair in self.pairs)

    async def wait_acknowledged(self, count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.acknowledged < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.acknowledged} acknowledged, wanted {count}")
            await asyncio.sleep(0.02)

    async def run(self, timeout_s: float = 120.0) -> Counts:
        """Send everything and wait until every acknowledged message arrived (or the
        timeout); then count. Does not check the store (see ``verify_store``)."""
        self.deadline = time.monotonic() + timeout_s
        tasks = [
            *(asyncio.create_task(self._send_all(pair)) for pair in self.pairs),
            *(asyncio.create_task(self._receive_all(pair)) for pair in self.pairs),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        counts = self.counts
        counts.acknowledged = self.acknowledged
        counts.delivered = sum(len(pair.received_ids) for pair in self.pairs)
        for pair in self.pairs:
            arrived = set(pair.received)
            counts.lost += sum(1 for cmid in pair.acked if cmid not in arrived)
            numbers = [int(cmid.split("-")[1]) for cmid in pair.received]
            counts.out_of_order += sum(1 for a, b in itertools.pairwise(numbers) if b < a)
        return counts

    async def verify_store(self, base_url: str | None = None) -> int:
        """Acknowledged messages that are NOT in the store (read back over REST); adds
        them to ``counts.lost`` and returns how many."""
        missing = 0
        for pair in self.pairs:
            async with Client(base_url or self.base_url, pair.sender.token) as reader:
                stored: dict[str, str] = {}
                cursor: str | None = None
                while True:
                    page = await reader.history(pair.conversation_id, before=cursor, limit=100)
                    for message in page["messages"]:
                        stored[message["client_msg_id"]] = message["id"]
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
            for cmid, message_id in pair.acked.items():
                if stored.get(cmid) != message_id:
                    missing += 1
        self.counts.lost += missing
        return missing

    async def close(self) -> None:
        for pair in self.pairs:
            await pair.sender.aclose()
            await pair.receiver.aclose()

    # --- senders ---------------------------------------------------------------------------

    async def _send_all(self, pair: Pair) -> None:
        stack = contextlib.AsyncExitStack()
        stream: Stream | None = None
        try:
            for number in range(self.messages):
                cmid = f"{pair.index}-{number:06d}"
                while cmid not in pair.acked:
                    if time.monotonic() > self.deadline:
                        return
                    self.counts.sent += 1
                    try:
                        if pair.mode == "rest":
                            message = await pair.sender.send(
                                pair.conversation_id,
                                envelope(pair.sender.device_id or "", pair.devices),
                                client_msg_id=cmid,
                            )
                        else:
                            if stream is None:
                                stream = await stack.enter_async_context(
                                    pair.sender.connect(resume_from=0)
                                )
                            message = await self._send_ws(pair, stream, cmid)
                        pair.acked[cmid] = message["id"]
                    except (ApiError, *TRANSIENT) as exc:
                        if isinstance(exc, ApiError) and not _retryable(exc):
                            raise
                        self.counts.retries += 1
                        if isinstance(exc, ApiError) and exc.status == 429:
                            await asyncio.sleep(0.5)  # keep the stream: only slow down
                            continue
                        stream = None
                        await stack.aclose()
                        await asyncio.sleep(0.05)
        finally:
            pair.done_sending = True
            await stack.aclose()

    async def _send_ws(self, pair: Pair, stream: Stream, cmid: str) -> dict[str, Any]:
        await stream.send(
            pair.conversation_id, envelope(pair.sender.device_id or "", pair.devices), cmid
        )
        while True:
            frame = await stream.recv(wait_s=10.0)
            if frame.get("type") == "sent" and frame.get("client_msg_id") == cmid:
                if stream.last_seq - stream.acked_seq >= 20:
                    await stream.ack()  # our own copies: ack in batches (fewer frames)
                message: dict[str, Any] = frame["message"]
                return message
            if frame.get("type") == "error" and frame.get("code") == "rate_limited":
                # The session's frame budget (10/s, docs/reliability.md) refused the frame
                # itself: wait for the bucket and send the same message again.
                raise ApiError(429, frame)
            if frame.get("type") == "error" and frame.get("ref") == cmid:
                raise ApiError(503 if frame.get("code") == "unavailable" else 400, frame)

    # --- receivers -------------------------------------------------------------------------

    def _receiver_done(self, pair: Pair) -> bool:
        return pair.done_sending and pair.received_cmids.issuperset(pair.acked)

    async def _receive_all(self, pair: Pair) -> None:
        resume_from = 0
        while not self._receiver_done(pair) and time.monotonic() < self.deadline:
            stream: Stream | None = None
            try:
                async with pair.receiver.connect(resume_from=resume_from) as stream:
                    await self._stream_into(pair, stream)
            except (ApiError, *TRANSIENT):
                await asyncio.sleep(0.05)
            finally:
                if stream is not None:
                    self.counts.duplicates += stream.duplicates
                    resume_from = max(resume_from, stream.resume_from)

    async def _stream_into(self, pair: Pair, stream: Stream) -> None:
        unacked = 0
        while not self._receiver_done(pair) and time.monotonic() < self.deadline:
            try:
                frame = await stream.recv(wait_s=0.3)
            except TimeoutError:
                await stream.ack()
                unacked = 0
                continue
            if frame.get("type") != "message":
                continue
            message = frame["message"]
            if message["id"] in pair.received_ids:
                self.counts.duplicates += 1  # the same message under another seq
            else:
                pair.received_ids.add(message["id"])
                pair.received.append(message["client_msg_id"])
                pair.received_cmids.add(message["client_msg_id"])
            unacked += 1
            if unacked >= 10:  # batch acks as a real client does: a crash re-sends some
                await stream.ack()
                unacked = 0
        await stream.ack()
