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

Cost per message is the point (the generator shares the machine with the server);
``lane_run`` explains how its bookkeeping keeps it low.
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

from omninudge_server.bench.connect import install_uvloop, open_session, wait_until
from omninudge_server.bench.lane_run import Conn, Counts, LaneRun
from omninudge_server.bench.setup import Lane

__all__ = ["WorkerPlan", "run_worker", "worker_process"]

ACK_TICK_S = 0.005
STALL_S = 10.0
PROGRESS_EVERY_S = 0.5
# A paced send may leave up to this much before its due time: uvloop's timers count
# whole milliseconds (a shorter sleep returns at once), so waiting out the last
# fraction would spin the loop.
PACING_TOLERANCE_NS = 500_000

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


async def _pace(runs: list[LaneRun], plan: WorkerPlan, start: int) -> None:
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


def _snapshot(counts: Counts) -> dict[str, Any]:
    return {
        "sent": counts.sent,
        "acked": counts.acked,
        "delivered": counts.delivered,
        "cpu_s": _cpu_s(),
    }


def _raise_failures(conns: list[Conn]) -> None:
    for conn in conns:
        if conn.client is not None and conn.client.failure is not None:
            raise RuntimeError("the generator failed on a frame") from conn.client.failure


async def run_worker(plan: WorkerPlan, progress: Progress | None = None) -> dict[str, Any]:
    """Connect, send, drain; returns the raw counts and latencies of these lanes
    (latencies as arrays of nanoseconds). Raises RuntimeError when a frame handler
    failed or a connection could not authenticate."""
    counts = Counts()
    runs = [LaneRun(lane, plan, counts) for lane in plan.lanes]
    conns: list[Conn] = []
    tasks: list[asyncio.Task[None]] = []

    async def connect_recipients(resume_from: int | None) -> None:
        for run in runs:
            for index, account in enumerate(run.lane.recipients):
                conn = Conn(counts, plan.ack_every)
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
