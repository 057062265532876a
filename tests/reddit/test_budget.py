"""The shared Reddit budget (REDDIT.md §7) enforced by the client, counted at the stand-in.

A scaled clock runs Reddit's minute 100 times faster, so the pacing of a 20-per-minute
budget is observable in about a second of real time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from omninudge_adapters.reddit import BudgetGate
from omninudge_core.errors import RateLimited
from omninudge_core.policies.reddit_budget import BudgetConfig
from tests.reddit.conftest import StandInFactory


class ScaledClock:
    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.start = time.monotonic()
        self.base = datetime(2026, 1, 1, tzinfo=UTC)

    def elapsed(self) -> float:
        return (time.monotonic() - self.start) * self.scale

    def now(self) -> datetime:
        return self.base + timedelta(seconds=self.elapsed())

    def epoch(self) -> float:
        return self.base.timestamp() + self.elapsed()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.scale)


def busiest_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    return max(
        sum(1 for other in times[i:] if other < start + window_s) for i, start in enumerate(times)
    )


async def fire(
    standin_factory: StandInFactory, clock: ScaledClock, gate: BudgetGate | None
) -> list[float]:
    standin = await standin_factory(clock=clock.epoch)
    token = standin.token("alice")
    async with standin.client(budget=gate, clock=clock.now) as reddit:
        await asyncio.gather(*(reddit.me(token) for _ in range(30)))
    return [r.at for r in standin.reddit.log if r.path == "/api/v1/me"]


async def test_concurrent_requests_never_exceed_the_per_minute_budget(
    make_standin: StandInFactory,
) -> None:
    clock = ScaledClock(scale=100)
    config = BudgetConfig(requests_per_minute=20, burst=2)
    gate = BudgetGate(config, clock=clock.now, sleep=clock.sleep, max_wait_s=3600)
    times = await fire(make_standin, clock, gate)
    assert len(times) == 30
    # A little slack below 60 s absorbs the network latency between admission and arrival.
    assert busiest_window(times, 57.0) <= 20
    # 2 at once, then 28 at 18/min: the last goes out no earlier than ~93 s in.
    assert max(times) - min(times) >= 85


async def test_without_a_budget_the_same_burst_exceeds_it(make_standin: StandInFactory) -> None:
    """Control: the stand-in's count would catch a client that ignored the budget."""
    clock = ScaledClock(scale=100)
    times = await fire(make_standin, clock, None)
    assert busiest_window(times, 57.0) > 20


async def test_a_429_holds_further_requests_until_retry_after(
    make_standin: StandInFactory,
) -> None:
    standin = await make_standin()
    standin.reddit.force_429 = 1
    standin.reddit.retry_after_s = 30
    gate = BudgetGate(max_wait_s=1.0)
    async with standin.client(budget=gate) as reddit:
        token = standin.token("alice")
        with pytest.raises(RateLimited) as first:
            await reddit.me(token)
        assert first.value.code == "reddit_rate_limited"
        with pytest.raises(RateLimited) as held:
            await reddit.me(token)
    assert held.value.code == "reddit_budget_exhausted"
    assert held.value.retry_at >= first.value.retry_at - timedelta(milliseconds=1)
    assert standin.reddit.requests["GET /api/v1/me"] == 1


async def test_reported_exhaustion_holds_requests_until_the_reset(
    make_standin: StandInFactory,
) -> None:
    # 1_000_000 % 600 == 400: the stand-in reports 200 s to its window's reset.
    standin = await make_standin(rate_limit=3, clock=lambda: 1_000_000.0)
    gate = BudgetGate(max_wait_s=1.0)
    async with standin.client(budget=gate) as reddit:
        token = standin.token("alice")
        for _ in range(3):
            await reddit.me(token)
        with pytest.raises(RateLimited) as caught:
            await reddit.me(token)
    assert caught.value.code == "reddit_budget_exhausted"
    assert gate.last_quota is not None
    assert gate.last_quota.remaining == 0
    assert standin.reddit.requests["GET /api/v1/me"] == 3
