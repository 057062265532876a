"""The generator's inner loop: real WebSocket clients that send, receive and ack.

One ``run_worker`` drives a set of lanes in one event loop; ``worker_process`` is the
same in a child process (``multiprocessing``), so the load can be spread over cores.
Every time is ``time.monotonic_ns()``: CLOCK_MONOTONIC, one clock for every process on
the host, so the runner can line up the processes' start and last-delivery instants.
A lane's sender and recipients live in the same process, so send→deliver is one
process's clock read twice.

What the server sees is what any client sends: ``auth``, then ``send`` frames with a
real sealed v1 envelope (sealed once per lane, reused with a fresh ``client_msg_id``;
its signature no longer matches the new id, which only a receiving client could
tell, and this one does not check), and ``ack`` frames for the highest ``seq`` seen,
at least every ``ack_every`` events and every ACK_TICK_S.

Cost per message is the point (the generator shares the machine with the server):
frames go to plain callbacks (``wsclient``), each is parsed once with orjson, a
``send`` is the lane's pre-built bytes around the message number, and the
bookkeeping is arrays indexed by that number (send instant, answer, deliveries per
recipient) rather than per-message objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from array import array
from collections.abc import Callable
from typing import Any, Literal

import attrs
import orjson

from omninudge_server.bench.setup import Account, Lane
from omninudge_server.bench.wsclient import Payload, TextHandler, WebSocketClient, open_websocket

__all__ = [
    "WorkerPlan",
    "install_uvloop",
    "open_session",
    "run_worker",
    "wait_until",
    "worker_process",
]

ACK_TICK_S = 0.005
STALL_S = 10.0
PROGRESS_EVERY_S = 0.5
MAX_FRAME = 1 << 20
OPEN_TIMEOUT_S = 60.0
# A paced send may leave up to this much before its due time: uvloop's timers count
# whole milliseconds (a shorter sleep returns at once), so waiting out the last
# fraction would spin the loop.
PACING_TOLERANCE_NS = 500_000

# A send's answer, by message number (``_LaneRun.answers``).
PENDING, ACCEPTED, REFUSED = 0, 1, 2

Progress = Callable[[dict[str, Any]], None]


@attrs.frozen
class WorkerPlan:
    ws_url: str
    lanes: tuple[Lane, ...]
    mode: Literal["max", "rate"] = "max"
    rate: float = 0.0  # this worker's messages per second (mode "rate")
    phase_s: float = 0.0  # its first send's offset, so N workers interleave evenly
    window: int = 4  # sends awaiting their ``sent`` per lane (mode "max")
    messages_per_lane: int | None = None
    duration_s: float | None = None
    start_at: float = 0.0  # time.monotonic() at which every worker starts sending
    drain_s: float = 15.0
    offline: bool = False  # recipients connect (resume_from=0) after the sending
    ack_every: int = 64


def _now() -> int:
    return time.monotonic_ns()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Counts:
    """The worker's totals; ``unanswered`` and ``missing`` make "done?" O(1)."""

    __slots__ = (
        "ack_ns",
        "acked",
        "deliver_ns",
        "delivered",
        "duplicates",
        "errors",
        "last_ack",
        "last_answer",
        "last_delivery",
        "missing",
        "pacing_lag_ns",
        "redelivered",
        "sent",
        "unanswered",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.delivered = 0
        self.duplicates = 0
        self.redelivered = 0
        self.unanswered = 0  # sends without their ``sent`` or error yet
        self.missing = 0  # (accepted message, recipient device) pairs not delivered yet
        self.errors: dict[str, int] = {}
        self.ack_ns = array("q")
        self.deliver_ns = array("q")
        self.pacing_lag_ns = array("q")  # mode "rate": actual send - scheduled send
        self.last_delivery = 0
        self.last_ack = 0
        self.last_answer = 0

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class _Conn:
    """One WebSocket: the highest ``seq`` seen and the highest acknowledged."""

    __slots__ = ("ack_every", "acked", "client", "counts", "max_seq")

    def __init__(self, counts: _Counts, ack_every: int) -> None:
        self.counts = counts
        self.ack_every = ack_every
        self.client: WebSocketClient | None = None
        self.max_seq = 0
        self.acked = 0

    def fresh(self, seq: Any) -> bool:
        """False for a replayed event (seq already seen); acks every ``ack_every``."""
        if seq is None:
            return True
        if seq <= self.max_seq:
            self.counts.redelivered += 1
            return False
        self.max_seq = seq
        if seq - self.acked >= self.ack_every:
            self.ack()
        return True

    def ack(self) -> None:
        if self.max_seq > self.acked and self.client is not None:
            self.acked = self.max_seq
            self.client.send(b'{"type":"ack","seq":%d}' % self.max_seq)


class _LaneRun:
    """One lane: what was sent when, how it was answered, what each recipient got.
    Message ``n`` is ``client_msg_id`` ``"m<n>"``; every array is indexed by ``n``."""

    __slots__ = (
        "answers",
        "counts",
        "deadline",
        "lane",
        "limit",
        "prefix",
        "received",
        "refill",
        "sender",
        "sent_ns",
        "stop_sending",
        "suffix",
    )

    def __init__(self, lane: Lane, plan: WorkerPlan, counts: _Counts) -> None:
        self.lane = lane
        self.counts = counts
        self.refill = plan.mode == "max"  # each answer frees a window slot
        self.limit = plan.messages_per_lane if plan.messages_per_lane is not None else 1 << 62
        self.prefix = (
            f'{{"type":"send","conversation_id":"{lane.conversation_id}","client_msg_id":"m'
        ).encode()
        self.suffix = ('","envelope":' + lane.envelope_json + "}").encode()
        self.sender = _Conn(counts, plan.ack_every)
        self.sent_ns = array("q")
        self.answers = bytearray()
        self.received = [bytearray() for _ in lane.recipients]  # deliveries, saturating
        self.stop_sending = False
        self.deadline = 1 << 62

    def can_send(self, now: int) -> bool:
        return not self.stop_sending and len(self.sent_ns) < self.limit and now < self.deadline

    def send_next(self, now: int) -> None:
        assert self.sender.client is not None
        number = len(self.sent_ns)
        self.sent_ns.append(now)
        self.answers.append(PENDING)
        for got in self.received:
            got.append(0)
        self.counts.sent += 1
        self.counts.unanswered += 1
        self.sender.client.send(b"%b%d%b" % (self.prefix, number, self.suffix))

    def _number(self, client_msg_id: Any) -> int:
        """The message number of one of our ids, else -1."""
        if isinstance(client_msg_id, str) and client_msg_id[:1] == "m":
            with contextlib.suppress(ValueError):
                number = int(client_msg_id[1:])
                if 0 <= number < len(self.sent_ns):
                    return number
        return -1

    def on_sender_text(self, data: Payload) -> None:
        frame = orjson.loads(data)
        if not self.sender.fresh(frame.get("seq")):
            return
        kind = frame.get("type")
        if kind == "sent":
            self._answered(frame.get("client_msg_id"), ACCEPTED)
        elif kind == "error":
            self.counts.error(str(frame.get("code")))
            self._answered(frame.get("ref"), REFUSED)

    def _answered(self, client_msg_id: Any, outcome: int) -> None:
        number = self._number(client_msg_id)
        if number < 0 or self.answers[number] != PENDING:
            return
        counts = self.counts
        now = _now()
        self.answers[number] = outcome
        counts.unanswered -= 1
        counts.last_answer = now
        if outcome == ACCEPTED:
            counts.acked += 1
            counts.last_ack = now
            counts.ack_ns.append(now - self.sent_ns[number])
            counts.missing += sum(1 for got in self.received if not got[number])
        if self.refill and self.can_send(now):
            self.send_next(now)

    def recipient_handler(self, index: int, conn: _Conn) -> TextHandler:
        def on_text(data: Payload) -> None:
            frame = orjson.loads(data)
            if not conn.fresh(frame.get("seq")):
                return
            kind = frame.get("type")
            if kind == "message":
                self._delivered(index, frame["message"].get("client_msg_id"))
            elif kind == "error":
                self.counts.error(str(frame.get("code")))

        return on_text

    def _delivered(self, index: int, client_msg_id: Any) -> None:
        counts = self.counts
        number = self._number(client_msg_id)
        if number < 0:
            counts.error("bench_unknown_message")
            return
        got = self.received[index]
        if got[number]:
            got[number] = min(255, got[number] + 1)
            counts.duplicates += 1
            return
        got[number] = 1
        now = _now()
        counts.delivered += 1
        counts.last_delivery = now
        counts.deliver_ns.append(now - self.sent_ns[number])
        if self.answers[number] == ACCEPTED:
            counts.missing -= 1

    def accepted(self) -> int:
        return self.answers.count(ACCEPTED)


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


async def _pace(runs: list[_LaneRun], plan: WorkerPlan, start: int) -> None:
    """Mode "rate": one send every 1/rate s, the lanes in turn. A late send is still
    sent (the offered rate holds) and its lateness recorded, so bursts show."""
    interval = round(1e9 / plan.rate)
    lag = runs[0].counts.pacing_lag_ns
    due = start + round(plan.phase_s * 1e9)
    turn = 0
    while True:
        now = _now()
        if due - now >= PACING_TOLERANCE_NS:
            await asyncio.sleep((due - now) / 1e9)
            continue
        for step in range(len(runs)):
            run = runs[(turn + step) % len(runs)]
            if run.can_send(now):
                turn += step + 1
                break
        else:
            return
        run.send_next(now)
        lag.append(now - due)
        due += interval


def _snapshot(counts: _Counts) -> dict[str, Any]:
    return {
        "sent": counts.sent,
        "acked": counts.acked,
        "delivered": counts.delivered,
        "cpu_s": _cpu_s(),
    }


def _raise_failures(conns: list[_Conn]) -> None:
    for conn in conns:
        if conn.client is not None and conn.client.failure is not None:
            raise RuntimeError("the generator failed on a frame") from conn.client.failure


async def run_worker(plan: WorkerPlan, progress: Progress | None = None) -> dict[str, Any]:
    """Connect, send, drain; returns the raw counts and latencies of these lanes
    (latencies as arrays of nanoseconds). Raises RuntimeError when a frame handler
    failed or a connection could not authenticate."""
    counts = _Counts()
    runs = [_LaneRun(lane, plan, counts) for lane in plan.lanes]
    conns: list[_Conn] = []
    tasks: list[asyncio.Task[None]] = []

    async def connect_recipients(resume_from: int | None) -> None:
        for run in runs:
            for index, account in enumerate(run.lane.recipients):
                conn = _Conn(counts, plan.ack_every)
                conn.client = await open_session(
                    plan.ws_url, account, resume_from, run.recipient_handler(index, conn)
                )
                conns.append(conn)

    async def ack_ticker() -> None:
        while True:
            await asyncio.sleep(ACK_TICK_S)
            for conn in conns:
                conn.ack()

    async def progress_ticker() -> None:
        while progress is not None:
            await asyncio.sleep(PROGRESS_EVERY_S)
            progress(_snapshot(counts))

    def settled(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            _raise_failures(conns)
            return condition()

        return check

    try:
        for run in runs:
            run.sender.client = await open_session(
                plan.ws_url, run.lane.sender, on_text=run.on_sender_text
            )
            conns.append(run.sender)
        if not plan.offline:
            await connect_recipients(None)
        tasks.append(asyncio.create_task(ack_ticker()))
        tasks.append(asyncio.create_task(progress_ticker()))
        await asyncio.sleep(max(0.0, plan.start_at - time.monotonic()))
        start = _now()
        cpu_at_start = _cpu_s()
        if plan.duration_s is not None:
            for run in runs:
                run.deadline = start + round(plan.duration_s * 1e9)
        if plan.mode == "max":
            for run in runs:
                for _ in range(plan.window):
                    if run.can_send(start):
                        run.send_next(start)

            def finished_or_stalled() -> bool:
                # A server that stops answering (or refuses frames without a ref)
                # would leave every window full forever: give up after STALL_S.
                now = _now()
                if now - max(counts.last_answer, start) > STALL_S * 1e9:
                    counts.error("bench_stalled")
                    return True
                return not any(run.can_send(now) for run in runs)

            await wait_until(settled(finished_or_stalled))
        else:
            await _pace(runs, plan, start)
        for run in runs:
            run.stop_sending = True
        sending_done = _now()
        cpu_at_sending_done = _cpu_s()
        replay_started = sending_done
        if plan.offline:
            await wait_until(settled(lambda: counts.unanswered == 0), time.monotonic() + 60)
            replay_started = _now()
            await connect_recipients(0)
        await wait_until(
            settled(lambda: counts.unanswered == 0 and counts.missing == 0),
            time.monotonic() + plan.drain_s,
        )
        finished = _now()
        cpu_at_finish = _cpu_s()
        _raise_failures(conns)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(
            *(conn.client.close() for conn in conns if conn.client is not None),
            return_exceptions=True,
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sent": counts.sent,
        "acked": counts.acked,
        "delivered": counts.delivered,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "run_cpu_s": cpu_at_finish - cpu_at_start,
        "sending_cpu_s": cpu_at_sending_done - cpu_at_start,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "duplicates": counts.duplicates,
        "redelivered": counts.redelivered,
        "lost": counts.missing,
        "unanswered": counts.unanswered,
        "errors": counts.errors,
        "ack_ns": counts.ack_ns,
        "deliver_ns": counts.deliver_ns,
        "pacing_lag_ns": counts.pacing_lag_ns,
        "start": start / 1e9,
        "sending_done": sending_done / 1e9,
        "last_ack": counts.last_ack / 1e9,
        "last_delivery": counts.last_delivery / 1e9,
        "finished": finished / 1e9,
        "replay_s": (counts.last_delivery - replay_started) / 1e9 if plan.offline else None,
        "expected_deliveries": sum(run.accepted() * len(run.received) for run in runs),
        "pid": os.getpid(),
    }


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def worker_process(plan: WorkerPlan, queue: Any) -> None:
    """Entry point of a generator child process: progress and the result go to ``queue``
    as ``("progress", pid, snapshot)`` and ``("result", pid, result)``."""
    install_uvloop()
    pid = os.getpid()
    try:
        result = asyncio.run(run_worker(plan, lambda snap: queue.put(("progress", pid, snap))))
    except BaseException as exc:  # the parent must hear about it, not wait forever
        queue.put(("failed", pid, f"{type(exc).__name__}: {exc}"))
        raise
    queue.put(("result", pid, result))
