"""Rate limiter contract: token-bucket semantics, atomic under concurrency."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from omninudge_core.ports import RateLimiter
from tests.contract.ports_fixtures import RATE_LIMITERS, Harness

_keys = itertools.count()


def fresh_key() -> str:
    # Unique per test so that shared services (Redis) start from a full bucket.
    return f"contract-ratelimit-{next(_keys)}-{id(object())}"


@pytest.fixture(params=sorted(RATE_LIMITERS))
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Harness[RateLimiter]]:
    async with RATE_LIMITERS[request.param]() as harness:
        yield harness


async def test_a_burst_is_allowed_then_refused_with_retry_after(
    limiter: Harness[RateLimiter],
) -> None:
    key = fresh_key()
    verdicts = [await limiter.port.hit(key, rate_per_s=0.01, burst=3) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [round(v.remaining) for v in verdicts[:3]] == [2, 1, 0]
    assert 90 <= verdicts[3].retry_after_s <= 100  # one token at 0.01/s


async def test_exactly_burst_of_100_concurrent_hits_are_allowed(
    limiter: Harness[RateLimiter],
) -> None:
    key = fresh_key()
    verdicts = await asyncio.gather(
        *(limiter.port.hit(key, rate_per_s=0.001, burst=10) for _ in range(100))
    )
    assert sum(v.allowed for v in verdicts) == 10


async def test_tokens_come_back_after_retry_after(limiter: Harness[RateLimiter]) -> None:
    key = fresh_key()
    assert (await limiter.port.hit(key, rate_per_s=5, burst=1)).allowed
    refused = await limiter.port.hit(key, rate_per_s=5, burst=1)
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 0.2
    await limiter.advance(refused.retry_after_s + 0.01)
    assert (await limiter.port.hit(key, rate_per_s=5, burst=1)).allowed


async def test_keys_have_separate_buckets(limiter: Harness[RateLimiter]) -> None:
    first, second = fresh_key(), fresh_key()
    assert (await limiter.port.hit(first, rate_per_s=0.01, burst=1)).allowed
    assert not (await limiter.port.hit(first, rate_per_s=0.01, burst=1)).allowed
    assert (await limiter.port.hit(second, rate_per_s=0.01, burst=1)).allowed


async def test_cost_takes_several_tokens_and_a_refusal_takes_none(
    limiter: Harness[RateLimiter],
) -> None:
    key = fresh_key()
    assert (await limiter.port.hit(key, rate_per_s=0.01, burst=5, cost=4)).allowed
    assert not (await limiter.port.hit(key, rate_per_s=0.01, burst=5, cost=2)).allowed
    assert (await limiter.port.hit(key, rate_per_s=0.01, burst=5, cost=1)).allowed
