"""The asyncio shell around ``omninudge_core.policies.reddit_budget``.

Reddit counts requests per OAuth client id, so one deployment has one budget
(REDDIT.md §7). ``BudgetGate`` keeps that budget for one process: ``acquire`` waits
until the policy admits a request (or raises ``RateLimited`` when the wait would be
longer than ``max_wait_s``, so a web request never hangs for minutes), ``observe``
feeds the ``X-Ratelimit-*`` headers of every answer back, ``rate_limited`` a 429.

Anything with the same three methods (``RedditBudgetHook``) can replace it, e.g. a
Redis-backed gate shared by several server processes. Clock and sleep are injectable
so tests can run a "minute" in a fraction of a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from omninudge_core.errors import RateLimited
from omninudge_core.policies.reddit_budget import (
    BudgetConfig,
    RedditBudget,
    admit,
    observe,
    quota_from_headers,
    rate_limited,
)
from omninudge_core.ports import RedditQuota

__all__ = ["BudgetGate", "RedditBudgetHook", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class RedditBudgetHook(Protocol):
    async def acquire(self) -> None:
        """Return when one request to the API host may go. Raises RateLimited."""
        ...

    def observe(self, headers: Mapping[str, str]) -> RedditQuota:
        """Take in the headers of a non-429 answer; returns the quota they report."""
        ...

    def rate_limited(self, retry_after_s: float | None, quota: RedditQuota) -> datetime:
        """Take in a 429; returns when requests may resume."""
        ...


class BudgetGate:
    """One process's share of Reddit's per-client-id budget."""

    def __init__(
        self,
        config: BudgetConfig | None = None,
        *,
        max_wait_s: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._state = RedditBudget(config=config or BudgetConfig())
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self.last_quota: RedditQuota | None = None

    @property
    def state(self) -> RedditBudget:
        return self._state

    async def acquire(self) -> None:
        """Wait for an admission. Raises RateLimited(code="reddit_budget_exhausted")
        with the instant to retry when that is more than ``max_wait_s`` away."""
        while True:
            async with self._lock:
                now = self._clock()
                self._state, admission = admit(self._state, now)
                if admission.allowed:
                    return
                assert admission.wait_until is not None
                wait_s = (admission.wait_until - now).total_seconds()
            if wait_s > self._max_wait_s:
                raise RateLimited(
                    "the Reddit request budget is exhausted",
                    retry_at=admission.wait_until,
                    code="reddit_budget_exhausted",
                )
            # Sleep outside the lock so other callers can see (and time out on) the wait.
            await self._sleep(wait_s)

    def observe(self, headers: Mapping[str, str]) -> RedditQuota:
        quota = quota_from_headers(headers)
        if quota != RedditQuota(used=None, remaining=None, reset_s=None):
            self.last_quota = quota
        self._state = observe(self._state, self._clock(), quota)
        return quota

    def rate_limited(self, retry_after_s: float | None, quota: RedditQuota) -> datetime:
        self._state = rate_limited(self._state, self._clock(), retry_after_s, quota)
        assert self._state.retry_not_before is not None
        return self._state.retry_not_before
