"""Token bucket, the one rate-limit rule of the project.

A bucket holds up to ``burst`` tokens and refills continuously at ``rate_per_s``. A
request costing ``cost`` tokens is allowed when the bucket holds at least that many;
otherwise it is refused with the exact wait until it would be allowed, and nothing is
taken (a refused request does not dig the hole deeper). A missing bucket is a full one,
so adapters may forget idle buckets once they have refilled (``idle_after_s``).

Time is an argument. A clock that steps backwards refills nothing and never rewinds
``updated_at`` (so a later call cannot refill twice for the same interval).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import attrs

from omninudge_core.ports import RateVerdict

__all__ = ["TOLERANCE", "TokenBucket", "Verdict", "idle_after_s", "refill", "retry_at", "take"]

Verdict = RateVerdict
"""``allowed``, ``retry_after_s`` (0 when allowed), ``remaining`` tokens after the call."""

TOLERANCE = 1e-9
"""Tokens treated as present despite float rounding, so a retry at exactly
``now + retry_after_s`` is allowed."""


@attrs.frozen
class TokenBucket:
    tokens: float
    updated_at: datetime


def _check(rate_per_s: float, burst: float, cost: float) -> None:
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
    if not (math.isfinite(burst) and burst > 0):
        raise ValueError(f"burst must be a positive number, got {burst!r}")
    if not (math.isfinite(cost) and 0 <= cost <= burst):
        # A cost above burst could never be paid: a caller bug, not a refusal.
        raise ValueError(f"cost must be within 0..burst ({burst}), got {cost!r}")


def refill(
    bucket: TokenBucket | None, now: datetime, *, rate_per_s: float, burst: float
) -> TokenBucket:
    """The bucket as of ``now``: refilled for the time elapsed, capped at ``burst``."""
    if bucket is None:
        return TokenBucket(tokens=burst, updated_at=now)
    elapsed = (now - bucket.updated_at).total_seconds()
    if elapsed <= 0:
        return TokenBucket(tokens=min(bucket.tokens, burst), updated_at=bucket.updated_at)
    return TokenBucket(tokens=min(burst, bucket.tokens + elapsed * rate_per_s), updated_at=now)


def take(
    bucket: TokenBucket | None,
    now: datetime,
    rate_per_s: float,
    burst: float,
    cost: float = 1,
) -> tuple[TokenBucket, Verdict]:
    """Try to take ``cost`` tokens at ``now``; return the new bucket and the verdict.

    Raises ValueError for a non-positive rate or burst, or a cost outside 0..burst.
    """
    _check(rate_per_s, burst, cost)
    current = refill(bucket, now, rate_per_s=rate_per_s, burst=burst)
    if current.tokens + TOLERANCE >= cost:
        left = max(0.0, current.tokens - cost)
        return attrs.evolve(current, tokens=left), Verdict(
            allowed=True, retry_after_s=0.0, remaining=left
        )
    wait = (cost - current.tokens) / rate_per_s
    return current, Verdict(allowed=False, retry_after_s=wait, remaining=current.tokens)


def idle_after_s(bucket: TokenBucket, *, rate_per_s: float, burst: float) -> float:
    """Seconds after ``bucket.updated_at`` when it is full again, i.e. equivalent to
    no bucket at all (adapters use this as the key's time to live)."""
    return max(0.0, (burst - bucket.tokens) / rate_per_s)


def retry_at(now: datetime, verdict: Verdict) -> datetime:
    """The instant a refused request may be retried, rounded up to the microsecond."""
    micros = math.ceil(verdict.retry_after_s * 1_000_000)
    return now + timedelta(microseconds=micros)
