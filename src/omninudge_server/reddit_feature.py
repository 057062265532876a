"""The Reddit feature of the server: the client, its shared budget, tokens at rest.

``open_reddit(services, secret)`` is entered by the composition root when the four
``REDDIT_*`` variables are set (else it yields None and every Reddit endpoint answers
404 or 503). It builds:

- ONE ``HttpxRedditClient`` whose API calls pass ``SharedRedditBudget``: a token bucket
  in the ``RateLimiter`` port (Redis in production, so every process draws on the same
  budget, as Reddit counts per client id - REDDIT.md §7) in front of this process's
  ``BudgetGate`` (which follows Reddit's ``X-Ratelimit-*`` headers and 429s);
- a ``TokenCipher`` whose key is derived (HKDF) from the server secret, so refresh and
  access tokens are stored encrypted and bound to their user id;
- (in ``reddit_access``) a user's access token, refreshed when it is about to expire
  or when Reddit calls it invalid (once; then the user must consent again);
- the health of Reddit as seen from here: ``ok``, ``degraded`` (the last call failed
  with a 5xx or a timeout) or ``revoked`` (our app credentials were refused: Reddit
  features answer 503 ``reddit_app_revoked`` for a while, chat keeps working);
- the migration worker (``omninudge_server.migrations``), which resumes unfinished
  imports on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from omninudge_adapters.reddit import (
    BudgetGate,
    HttpxRedditClient,
    RedditAppRevoked,
    TokenCipher,
)
from omninudge_core.errors import RateLimited, Unavailable
from omninudge_core.policies.reddit_budget import BudgetConfig
from omninudge_core.ports import Cache, RateLimiter, RedditQuota

if TYPE_CHECKING:
    from omninudge_server.migrations import MigrationWorker
    from omninudge_server.wiring import Services

__all__ = [
    "RedditFeature",
    "SharedRedditBudget",
    "SingleFlight",
    "open_reddit",
    "require_reddit",
]

logger = logging.getLogger("omninudge.reddit")

T = TypeVar("T")

REVOKED_RETRY_S = 300.0  # after the app was refused, try Reddit again this much later


class SharedRedditBudget:
    """A ``RedditBudgetHook``: the deployment's budget in the RateLimiter port, then
    this process's ``BudgetGate``.

    The bucket holds ``burst`` tokens and refills ``(rpm - burst) / window_s`` per
    second, so no window of ``window_s`` seconds ever admits more than ``rpm`` calls,
    whatever the number of processes (policies.reddit_budget uses the same rule).
    """

    KEY = "reddit:budget"

    def __init__(
        self,
        limiter: RateLimiter,
        gate: BudgetGate,
        *,
        rpm: int,
        window_s: float,
        max_wait_s: float,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limiter = limiter
        self.gate = gate
        self.burst = max(1.0, min(10.0, rpm / 10))
        self.rate_per_s = (rpm - self.burst) / window_s
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep

    async def acquire(self) -> None:
        """Wait for one admission. Raises RateLimited(code="reddit_budget_exhausted")
        when that would take longer than ``max_wait_s``."""
        deadline = time.monotonic() + self._max_wait_s
        while True:
            verdict = await self._limiter.hit(
                self.KEY, rate_per_s=self.rate_per_s, burst=self.burst
            )
            if verdict.allowed:
                break
            if time.monotonic() + verdict.retry_after_s > deadline:
                raise RateLimited(
                    "the Reddit request budget is exhausted",
                    retry_at=self._clock() + timedelta(seconds=verdict.retry_after_s),
                    code="reddit_budget_exhausted",
                )
            await self._sleep(verdict.retry_after_s)
        await self.gate.acquire()

    def observe(self, headers: Mapping[str, str]) -> RedditQuota:
        return self.gate.observe(headers)

    def rate_limited(self, retry_after_s: float | None, quota: RedditQuota) -> datetime:
        return self.gate.rate_limited(retry_after_s, quota)


class SingleFlight:
    """Concurrent calls with the same key share ONE run of the work (in this process).

    The work runs in its own task, so a caller that goes away does not cancel it for
    the others."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[Any]] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:

            async def wrapped() -> T:
                return await work()

            task = asyncio.create_task(wrapped())
            self._running[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        result: T = await asyncio.shield(task)
        return result

    def _finished(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not logged twice


def _derive(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), b"omninudge/v1/" + label, hashlib.sha256).digest()


@attrs.define
class RedditFeature:
    """Everything the Reddit endpoints, the relay and the migration worker share."""

    client: HttpxRedditClient
    budget: SharedRedditBudget
    cipher: TokenCipher
    state_key: bytes  # signs the OAuth ``state``
    invite_key: bytes  # derives invitation tokens from conversation ids
    cache: Cache
    clock: Callable[[], datetime]
    flights: SingleFlight = attrs.field(factory=SingleFlight)
    # One refresh at a time per user in this process: refresh tokens may rotate.
    refresh_locks: dict[str, asyncio.Lock] = attrs.field(factory=dict)
    background: set[asyncio.Task[None]] = attrs.field(factory=set)  # relay retries
    revoked_at: datetime | None = None
    degraded: bool = False
    worker: MigrationWorker | None = None

    @property
    def health(self) -> str:
        """``ok``, ``degraded`` or ``revoked`` (for ``/health`` ``reddit_api``)."""
        if self.revoked_at is not None:
            return "revoked"
        return "degraded" if self.degraded else "ok"

    @property
    def last_quota(self) -> RedditQuota | None:
        return self.budget.gate.last_quota

    def check_enabled(self) -> None:
        """Raises Unavailable(code="reddit_app_revoked") while the app is refused."""
        if self.revoked_at is None:
            return
        if (self.clock() - self.revoked_at).total_seconds() < REVOKED_RETRY_S:
            raise Unavailable(
                "Reddit refused this server's app credentials; Reddit features are off",
                code="reddit_app_revoked",
            )
        self.revoked_at = None  # time to try again

    async def guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one call to Reddit, keeping the health up to date. An app refusal becomes
        Unavailable(code="reddit_app_revoked") (not a 401 of ours)."""
        self.check_enabled()
        try:
            result = await call()
        except RedditAppRevoked as exc:
            if self.revoked_at is None:
                logger.error("Reddit refused the app credentials: Reddit features are off")
            self.revoked_at = self.clock()
            raise Unavailable(
                "Reddit refused this server's app credentials; Reddit features are off",
                code="reddit_app_revoked",
            ) from exc
        except Unavailable:
            self.degraded = True
            raise
        self.degraded = False
        return result

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background until it ends or the server stops."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Reddit background task failed", exc_info=task.exception())

    async def stop_background(self) -> None:
        tasks = list(self.background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def invite_token(self, conversation_id: str) -> str:
        """The conversation's invitation token: derived, so there is one per conversation
        and no lookup by conversation is needed."""
        digest = hmac.new(self.invite_key, conversation_id.encode(), hashlib.sha256).hexdigest()
        return digest[:32]

    def seal(self, user_id: str, token: str) -> bytes:
        return self.cipher.encrypt(token, context=user_id)


def require_reddit(services: Services) -> RedditFeature:
    """The Reddit feature. Raises Unavailable(code="reddit_unavailable") when no Reddit
    app is configured, or "reddit_app_revoked" while Reddit refuses it."""
    feature = services.reddit
    if feature is None:
        raise Unavailable("Reddit is not configured on this server", code="reddit_unavailable")
    feature.check_enabled()
    return feature


@contextlib.asynccontextmanager
async def open_reddit(services: Services, secret: str) -> AsyncIterator[RedditFeature | None]:
    """The Reddit feature for ``services`` (None when no Reddit app is configured);
    starts the migration worker and stops it on exit."""
    settings = services.settings
    if settings.reddit_client_id is None:
        yield None
        return
    from omninudge_adapters.memory.cache import MemoryCache
    from omninudge_adapters.reddit import open_reddit_client
    from omninudge_server.migrations import MigrationWorker

    window_s = settings.reddit_budget_window_s
    # The gate follows Reddit's headers; its own ceiling is the same budget per minute.
    per_minute = settings.reddit_rpm * 60.0 / window_s
    gate = BudgetGate(
        BudgetConfig(requests_per_minute=per_minute),
        max_wait_s=settings.reddit_max_wait_s,
        clock=services.clock,
    )
    budget = SharedRedditBudget(
        services.rate_limiter,
        gate,
        rpm=settings.reddit_rpm,
        window_s=window_s,
        max_wait_s=settings.reddit_max_wait_s,
        clock=services.clock,
    )
    cache: Cache = services.shared.cache if services.shared is not None else MemoryCache()
    async with open_reddit_client(
        settings.reddit_client_id,
        settings.reddit_client_secret,
        settings.reddit_redirect_uri,
        settings.reddit_user_agent,
        auth_base=settings.reddit_auth_base,
        api_base=settings.reddit_api_base,
        budget=budget,
        clock=services.clock,
    ) as client:
        feature = RedditFeature(
            client=client,
            budget=budget,
            cipher=TokenCipher.from_secret(secret),
            state_key=_derive(secret, b"reddit-state"),
            invite_key=_derive(secret, b"invite"),
            cache=cache,
            clock=services.clock,
        )
        worker = MigrationWorker(services, feature)
        feature.worker = worker
        await worker.start()
        try:
            yield feature
        finally:
            await feature.stop_background()
            await worker.stop()
