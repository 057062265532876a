"""The generator's inner loop: real WebSocket clients that send, receive and ack.

One ``run_worker`` drives a set of lanes in one event loop; ``worker_process`` is the
same in a child process (``multiprocessing``), so the load can be spread over cores.
Times are ``time.monotonic()`` (one clock for every process on Linux), so a send in
one process and its delivery in another would still be comparable.

What the server sees is what any client sends: ``auth``, then ``send`` frames with a
real sealed v1 envelope (sealed once per lane, reused with a fresh ``client_msg_id``;
its signature no longer matches the new id, which only a receiving client could
tell, and this one does not check), and ``ack`` frames for the highest ``seq`` seen,
at least every ``ack_every`` events and every few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Callable
from typing import Any, Literal

import attrs
import orjson
from websockets.asyncio.client import ClientConnection, connect

from omninudge_server.bench.setup import Account, Lane

__all__ = ["WorkerPlan", "run_worker", "worker_process"]

ACK_TICK_S = 0.005
STALL_S = 10.0
PROGRESS_EVERY_S = 0.5
MAX_FRAME = 1 << 20

Progress = Callable[[dict[str, Any]], None]


@attrs.frozen
class WorkerPlan:
    ws_url: str
    lanes: tuple[Lane, ...]
    mode: Literal["max", "rate"] = "max"
    rate_per_lane: float = 0.0  # messages per second per lane (mode "rate")
    window: int = 4  # sends awaiting their ``sent`` per lane (mode "max")
    messages_per_lane: int | None = None
    duration_s: float | None = None
    start_at: float = 0.0  # time.monotonic() at which every worker starts sending
    drain_s: float = 15.0
    offline: bool = False  # recipients connect (resume_from=0) after the sending
    ack_every: int = 64


class _Conn:
    __slots__ = ("acked", "max_seq", "ws")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.max_seq = 0
        self.acked = 0

    async def ack(self) -> None:
        if self.max_seq > self.acked:
            self.acked = self.max_seq
            await self.ws.send(f'{{"type":"ack","seq":{self.max_seq}}}')


class _Counts:
    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.delivered = 0
        self.duplicates = 0
        self.redelivered = 0
        self.errors: dict[str, int] = {}
        self.ack_ms: list[float] = []
        self.deliver_ms: list[float] = []
        self.last_delivery = 0.0
        self.last_ack = 0.0
        self.last_answer = 0.0

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class _LaneRun:
    """One lane's state: what was sent when, what each recipient connection got."""

    def __init__(self, lane: Lane, plan: WorkerPlan, counts: _Counts) -> None:
        self.lane = lane
        self.plan = plan
        self.counts = counts
        self.prefix = (
            f'{{"type":"send","conversation_id":"{lane.conversation_id}","client_msg_id":"'
        )
        self.suffix = '","envelope":' + lane.envelope_json + "}"
        self.sender: _Conn | None = None
        self.sent_at: dict[str, float] = {}
        self.pending: set[str] = set()  # sent, no answer yet
        self.acked: set[str] = set()
        self.received: list[dict[str, int]] = [{} for _ in lane.recipients]
        self.next_number = 0
        self.stop_sending = False
        self.deadline = float("inf")
        self.replay_s: list[float] = []

    def budget_left(self) -> bool:
        limit = self.plan.messages_per_lane
        if self.stop_sending or (limit is not None and self.next_number >= limit):
            return False
        return time.monotonic() < self.deadline

    async def send_next(self) -> None:
        assert self.sender is not None
        client_msg_id = f"m{self.next_number}"
        self.next_number += 1
        self.pending.add(client_msg_id)
        self.sent_at[client_msg_id] = time.monotonic()
        self.counts.sent += 1
        await self.sender.ws.send(self.prefix + client_msg_id + self.suffix)

    def on_answer(self, client_msg_id: str, ok: bool) -> bool:
        """The ``sent`` (or error) for one send; True when it was ours and pending."""
        if client_msg_id not in self.pending:
            return False
        self.pending.discard(client_msg_id)
        self.counts.last_answer = time.monotonic()
        if ok:
            now = time.monotonic()
            self.acked.add(client_msg_id)
            self.counts.acked += 1
            self.counts.last_ack = now
            self.counts.ack_ms.append((now - self.sent_at[client_msg_id]) * 1000)
        return True

    def on_delivery(self, recipient: int, client_msg_id: str) -> None:
        got = self.received[recipient]
        if client_msg_id in got:
            got[client_msg_id] += 1
            self.counts.duplicates += 1
            return
        got[client_msg_id] = 1
        now = time.monotonic()
        self.counts.delivered += 1
        self.counts.last_delivery = now
        sent = self.sent_at.get(client_msg_id)
        if sent is not None:
            self.counts.deliver_ms.append((now - sent) * 1000)

    def complete(self) -> bool:
        return not self.pending and all(self.acked <= got.keys() for got in self.received)

    def lost(self) -> int:
        return sum(len(self.acked - got.keys()) for got in self.received)


async def _open(ws_url: str, account: Account, resume_from: int | None = None) -> ClientConnection:
    ws = await connect(
        f"{ws_url}?device_id={account.device_id}",
        compression=None,
        max_size=MAX_FRAME,
        ping_interval=None,
        open_timeout=60,
    )
    auth: dict[str, Any] = {"type": "auth", "token": account.token}
    if resume_from is not None:
        auth["resume_from"] = resume_from
    await ws.send(orjson.dumps(auth).decode())
    hello = orjson.loads(await ws.recv())
    if hello.get("type") != "hello":
        await ws.close()
        raise RuntimeError(f"expected hello, got {hello}")
    return ws


async def _read_sender(run: _LaneRun, conn: _Conn) -> None:
    counts = run.counts
    async for raw in conn.ws:
        frame = orjson.loads(raw)
        kind = frame.get("type")
        seq = frame.get("seq")
        if seq is not None:
            if seq <= conn.max_seq:
                counts.redelivered += 1
                continue
            conn.max_seq = seq
            if seq - conn.acked >= run.plan.ack_every:
                await conn.ack()
        if kind == "sent":
            answered = run.on_answer(frame["client_msg_id"], True)
        elif kind == "error":
            counts.error(str(frame.get("code")))
            answered = run.on_answer(str(frame.get("ref")), False)
        else:
            continue
        if answered and run.plan.mode == "max" and run.budget_left():
            await run.send_next()


async def _read_recipient(run: _LaneRun, index: int, conn: _Conn) -> None:
    counts = run.counts
    async for raw in conn.ws:
        frame = orjson.loads(raw)
        seq = frame.get("seq")
        if seq is not None:
            if seq <= conn.max_seq:
                counts.redelivered += 1
                continue
            conn.max_seq = seq
            if seq - conn.acked >= run.plan.ack_every:
                await conn.ack()
        if frame.get("type") == "message":
            run.on_delivery(index, frame["message"]["client_msg_id"])
        elif frame.get("type") == "error":
            counts.error(str(frame.get("code")))


async def _rate_sender(run: _LaneRun, start: float) -> None:
    interval = 1.0 / run.plan.rate_per_lane
    # Spread the lanes' phases so that they do not all send in the same instant.
    due = start + interval * (run.lane.index % 97) / 97
    while run.budget_left():
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
            if not run.budget_left():
                break
        await run.send_next()
        due += interval


async def _wait_until(
    done: Callable[[], bool], until: float = float("inf"), step: float = 0.01
) -> None:
    # Polling: the conditions span many connections' tasks (or another process), and a
    # check every 10 ms costs nothing next to the traffic.
    while not done() and time.monotonic() < until:  # noqa: ASYNC110
        await asyncio.sleep(step)


def _snapshot(counts: _Counts, final: bool = False) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    snap: dict[str, Any] = {
        "sent": counts.sent,
        "acked": counts.acked,
        "delivered": counts.delivered,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    if final:
        snap["peak_rss_bytes"] = usage.ru_maxrss * 1024
    return snap


async def run_worker(plan: WorkerPlan, progress: Progress | None = None) -> dict[str, Any]:
    """Connect, send, drain; returns the raw counts and latencies of these lanes."""
    counts = _Counts()
    runs = [_LaneRun(lane, plan, counts) for lane in plan.lanes]
    conns: list[_Conn] = []
    tasks: list[asyncio.Task[None]] = []

    async def connect_recipients(resume_from: int | None) -> None:
        for run in runs:
            for index, account in enumerate(run.lane.recipients):
                conn = _Conn(await _open(plan.ws_url, account, resume_from))
                conns.append(conn)
                tasks.append(asyncio.create_task(_read_recipient(run, index, conn)))

    async def ack_ticker() -> None:
        while True:
            await asyncio.sleep(ACK_TICK_S)
            for conn in conns:
                if conn.max_seq > conn.acked:
                    with contextlib.suppress(Exception):
                        await conn.ack()

    async def progress_ticker() -> None:
        while progress is not None:
            await asyncio.sleep(PROGRESS_EVERY_S)
            progress(_snapshot(counts))

    try:
        for run in runs:
            run.sender = _Conn(await _open(plan.ws_url, run.lane.sender))
            conns.append(run.sender)
            tasks.append(asyncio.create_task(_read_sender(run, run.sender)))
        if not plan.offline:
            await connect_recipients(None)
        tasks.append(asyncio.create_task(ack_ticker()))
        tasks.append(asyncio.create_task(progress_ticker()))
        await asyncio.sleep(max(0.0, plan.start_at - time.monotonic()))
        start = time.monotonic()
        for run in runs:
            if plan.duration_s is not None:
                run.deadline = start + plan.duration_s
        if plan.mode == "max":
            for run in runs:
                for _ in range(plan.window):
                    if run.budget_left():
                        await run.send_next()

            def finished_or_stalled() -> bool:
                # A server that stops answering (or refuses frames without a ref)
                # would leave every window full forever: give up after STALL_S.
                if time.monotonic() - max(counts.last_answer, start) > STALL_S:
                    counts.error("bench_stalled")
                    return True
                return not any(run.budget_left() for run in runs)

            await _wait_until(finished_or_stalled)
        else:
            await asyncio.gather(*(_rate_sender(run, start) for run in runs))
        for run in runs:
            run.stop_sending = True
        sending_done = time.monotonic()
        replay_started = sending_done
        if plan.offline:
            await _wait_until(lambda: not any(run.pending for run in runs), sending_done + 60)
            replay_started = time.monotonic()
            await connect_recipients(0)
        drain_until = time.monotonic() + plan.drain_s
        await _wait_until(lambda: all(run.complete() for run in runs), drain_until)
        finished = time.monotonic()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.ws.close()
    result = _snapshot(counts, final=True)
    result.update(
        duplicates=counts.duplicates,
        redelivered=counts.redelivered,
        lost=sum(run.lost() for run in runs),
        unanswered=sum(len(run.pending) for run in runs),
        errors=counts.errors,
        ack_ms=counts.ack_ms,
        deliver_ms=counts.deliver_ms,
        start=start,
        sending_done=sending_done,
        last_ack=counts.last_ack,
        last_delivery=counts.last_delivery,
        finished=finished,
        replay_s=(counts.last_delivery - replay_started) if plan.offline else None,
        expected_deliveries=sum(len(run.acked) * len(run.received) for run in runs),
        pid=os.getpid(),
    )
    return result


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def worker_process(plan: WorkerPlan, queue: Any) -> None:
    """Entry point of a generator child process: progress and the result go to ``queue``
    as ``("progress", pid, snapshot)`` and ``("result", pid, result)``."""
    _install_uvloop()
    pid = os.getpid()
    try:
        result = asyncio.run(run_worker(plan, lambda snap: queue.put(("progress", pid, snap))))
    except BaseException as exc:  # the parent must hear about it, not wait forever
        queue.put(("failed", pid, f"{type(exc).__name__}: {exc}"))
        raise
    queue.put(("result", pid, result))


# --- idle connections ------------------------------------------------------------------


@attrs.frozen
class IdlePlan:
    ws_url: str
    accounts: tuple[Account, ...]
    connections: int
    concurrency: int = 64  # connection attempts at once


async def run_idle_worker(
    plan: IdlePlan, connected: Callable[[int, int], None], release: Any
) -> None:
    """Open ``plan.connections`` authenticated connections (round-robin over the
    accounts), report ``connected(ok, failed)``, hold them until ``release`` is set."""
    opened: list[ClientConnection] = []
    failed = 0
    semaphore = asyncio.Semaphore(plan.concurrency)

    async def one(index: int) -> None:
        nonlocal failed
        account = plan.accounts[index % len(plan.accounts)]
        async with semaphore:
            try:
                opened.append(await _open(plan.ws_url, account))
            except Exception:
                failed += 1

    try:
        await asyncio.gather(*(one(i) for i in range(plan.connections)))
        connected(len(opened), failed)
        await _wait_until(release.is_set, step=0.1)
        # Still open? A server that dropped idle sockets would show here.
        alive = sum(1 for ws in opened if ws.close_code is None)
        connected(alive, failed)
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


def idle_process(plan: IdlePlan, queue: Any, release: Any) -> None:
    """Child process entry for idle connections: ``("connected", pid, (ok, failed))``
    twice (after opening, after the hold), then ``("result", pid, usage)``."""
    _install_uvloop()
    pid = os.getpid()
    try:
        asyncio.run(
            run_idle_worker(plan, lambda ok, bad: queue.put(("connected", pid, (ok, bad))), release)
        )
    except BaseException as exc:
        queue.put(("failed", pid, f"{type(exc).__name__}: {exc}"))
        raise
    queue.put(("result", pid, _snapshot(_Counts(), final=True)))
