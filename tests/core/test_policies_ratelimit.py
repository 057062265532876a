"""Token bucket: refill, cap at burst, never negative, exact retry_after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core.policies.ratelimit import TokenBucket, idle_after_s, retry_at, take

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_a_missing_bucket_is_full() -> None:
    bucket, verdict = take(None, NOW, rate_per_s=1, burst=5)
    assert verdict.allowed
    assert verdict.remaining == 4
    assert bucket == TokenBucket(tokens=4, updated_at=NOW)


def test_burst_requests_pass_then_the_next_is_refused_with_exact_wait() -> None:
    bucket: TokenBucket | None = None
    for _ in range(3):
        bucket, verdict = take(bucket, NOW, rate_per_s=0.5, burst=3)
        assert verdict.allowed
    bucket, verdict = take(bucket, NOW, rate_per_s=0.5, burst=3)
    assert not verdict.allowed
    assert verdict.retry_after_s == pytest.approx(2.0)
    assert verdict.remaining == 0
    later = NOW + timedelta(seconds=2)
    _, verdict = take(bucket, later, rate_per_s=0.5, burst=3)
    assert verdict.allowed


def test_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(tokens=0, updated_at=NOW)
    bucket, verdict = take(bucket, NOW + timedelta(hours=1), rate_per_s=10, burst=4)
    assert verdict.allowed
    assert bucket.tokens == 3


def test_a_refusal_takes_nothing() -> None:
    bucket = TokenBucket(tokens=0.5, updated_at=NOW)
    after, verdict = take(bucket, NOW, rate_per_s=1, burst=2)
    assert not verdict.allowed
    assert after.tokens == 0.5


def test_a_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(tokens=0, updated_at=NOW)
    after, verdict = take(bucket, NOW - timedelta(seconds=30), rate_per_s=1, burst=5)
    assert not verdict.allowed
    assert after.updated_at == NOW


def test_cost_is_taken_whole() -> None:
    bucket, verdict = take(None, NOW, rate_per_s=1, burst=10, cost=7)
    assert verdict.allowed
    assert verdict.remaining == 3
    _, verdict = take(bucket, NOW, rate_per_s=1, burst=10, cost=4)
    assert not verdict.allowed
    assert verdict.retry_after_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("rate", "burst", "cost"),
    [(0, 1, 1), (-1, 1, 1), (1, 0, 1), (1, 2, 3), (1, 2, -1), (float("inf"), 1, 1)],
)
def test_invalid_parameters_are_a_programming_error(rate: float, burst: float, cost: float) -> None:
    with pytest.raises(ValueError):
        take(None, NOW, rate_per_s=rate, burst=burst, cost=cost)


def test_idle_after_is_when_the_bucket_is_full_again() -> None:
    bucket = TokenBucket(tokens=1, updated_at=NOW)
    assert idle_after_s(bucket, rate_per_s=2, burst=5) == 2.0


steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3_000_000), st.sampled_from([0.5, 1, 2])),
    max_size=60,
)


@given(
    steps,
    st.sampled_from([0.1, 1.0, 3.0, 7.5]),
    st.sampled_from([1.0, 2.0, 5.0, 10.0]),
)
def test_bucket_invariants_hold_for_any_sequence(
    sequence: list[tuple[int, float]], rate: float, burst: float
) -> None:
    """Tokens stay within 0..burst, and retrying at now + retry_after is allowed."""
    bucket: TokenBucket | None = None
    now = NOW
    for step_us, cost in sequence:
        now += timedelta(microseconds=step_us)
        bucket, verdict = take(bucket, now, rate, burst, min(cost, burst))
        assert 0 <= bucket.tokens <= burst
        assert verdict.remaining == bucket.tokens
        if not verdict.allowed:
            assert verdict.retry_after_s > 0
            _, again = take(bucket, retry_at(now, verdict), rate, burst, min(cost, burst))
            assert again.allowed


@given(st.integers(min_value=1, max_value=50), st.floats(min_value=0.01, max_value=100))
def test_admissions_never_exceed_burst_plus_refill(burst: int, rate: float) -> None:
    """Hammering every 10 ms for 2 s admits at most burst + rate * elapsed (+1)."""
    bucket: TokenBucket | None = None
    admitted = 0
    for step in range(201):
        bucket, verdict = take(bucket, NOW + timedelta(milliseconds=10 * step), rate, burst)
        admitted += verdict.allowed
    assert admitted <= burst + rate * 2.0 + 1
    assert admitted >= min(burst, 201)
