"""Reddit's shared API budget (REDDIT.md §7).

Reddit counts requests per OAuth client id, so every user of one OmniNudge deployment
draws on one budget: 100 queries per minute on the free tier, reported as
``X-Ratelimit-Used`` / ``-Remaining`` / ``-Reset`` over a 10-minute window. The shell
keeps one ``RedditBudget`` for the deployment and asks ``admit`` before every call to
the API host; it feeds back what it saw: ``observe`` (headers of any answer) and
``rate_limited`` (a 429). A request may go when all of these agree:

1. the deployment's own limit: a token bucket of ``burst`` tokens refilled so that no
   60-second window ever holds more than ``requests_per_minute`` admissions
   (refill ``(requests_per_minute - burst) / 60`` per second);
2. Reddit's headers: when ``remaining <= 0``, wait until the reported reset;
3. a 429: wait ``Retry-After`` seconds, else until the reset, else back off
   exponentially (repeated 429s always back off at least exponentially);
4. optionally (``pacing``), prawcore's strategy: spread the remaining requests over the
   time left in Reddit's window, never pausing more than ``max_pacing_s``.

Header values are parsed defensively: a missing or garbage value is None ("unknown"),
never an exception. Responses served from Reddit's CDN carry no headers and change
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs

from omninudge_core.policies.ratelimit import TokenBucket, refill, take
from omninudge_core.ports import RedditQuota

__all__ = [
    "Admission",
    "BudgetConfig",
    "RedditBudget",
    "admit",
    "next_allowed_at",
    "observe",
    "observe_headers",
    "parse_header_number",
    "parse_retry_after",
    "quota_from_headers",
    "rate_limited",
]

_MAX_HEADER_CHARS = 32


def parse_header_number(value: str | None) -> float | None:
    """A non-negative finite number from a header value (``"997.0"``, ``"995"``, ``" 12 "``),
    or None when missing or garbage."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_CHARS:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, or None when absent or not a number of seconds.

    Reddit sends seconds (``Retry-After: 2``); the HTTP-date form is not used by Reddit
    and falls back to back-off like an absent header.
    """
    return parse_header_number(value)


def quota_from_headers(headers: Mapping[str, str]) -> RedditQuota:
    """Read ``X-Ratelimit-Used`` / ``-Remaining`` / ``-Reset`` (case-insensitive names)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return RedditQuota(
        used=parse_header_number(lowered.get("x-ratelimit-used")),
        remaining=parse_header_number(lowered.get("x-ratelimit-remaining")),
        reset_s=parse_header_number(lowered.get("x-ratelimit-reset")),
    )


def _default_burst(requests_per_minute: float) -> float:
    return max(1.0, min(10.0, requests_per_minute / 10))


@attrs.frozen
class BudgetConfig:
    """The deployment's limit on calls to Reddit's API host.

    ``burst`` defaults to a tenth of the per-minute budget (at most 10, at least 1).
    Raises ValueError unless ``1 <= burst < requests_per_minute``.
    """

    requests_per_minute: float = 100.0
    burst: float | None = None
    pacing: bool = False
    max_pacing_s: float = 10.0
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0

    def __attrs_post_init__(self) -> None:
        if not (1 <= self.effective_burst < self.requests_per_minute):
            raise ValueError("need 1 <= burst < requests_per_minute")
        if self.max_pacing_s < 0 or self.backoff_base_s <= 0 or self.backoff_max_s <= 0:
            raise ValueError("pacing and back-off times must be positive")

    @property
    def effective_burst(self) -> float:
        return self.burst if self.burst is not None else _default_burst(self.requests_per_minute)

    @property
    def rate_per_s(self) -> float:
        # Burst + one minute of refill == requests_per_minute: no 60 s window can hold more.
        return (self.requests_per_minute - self.effective_burst) / 60.0

    def backoff_s(self, consecutive_429: int) -> float:
        """base, 2*base, 4*base, ... capped at ``backoff_max_s``."""
        exponent = min(max(consecutive_429 - 1, 0), 30)
        return float(min(self.backoff_max_s, self.backoff_base_s * 2**exponent))


@attrs.frozen
class RedditBudget:
    """The deployment's budget state. ``remaining`` is Reddit's count as last reported,
    decremented by each admission until the next report."""

    config: BudgetConfig = BudgetConfig()
    bucket: TokenBucket | None = None
    remaining: float | None = None
    reset_at: datetime | None = None
    retry_not_before: datetime | None = None
    consecutive_429: int = 0
    last_admitted_at: datetime | None = None


@attrs.frozen
class Admission:
    """``allowed``, or the instant to try again (``wait_until``)."""

    allowed: bool
    wait_until: datetime | None = None


def _ceil_micro(seconds: float) -> timedelta:
    # Round waits up so that retrying at the returned instant is admitted.
    return timedelta(microseconds=math.ceil(max(0.0, seconds) * 1_000_000))


def _window_open(state: RedditBudget, now: datetime) -> bool:
    """True while Reddit's reported window is still running."""
    return state.reset_at is not None and state.reset_at > now


def next_allowed_at(state: RedditBudget, now: datetime) -> datetime:
    """The earliest instant (``now`` or later) at which ``admit`` will allow a request."""
    config = state.config
    candidates = [now]
    bucket = refill(state.bucket, now, rate_per_s=config.rate_per_s, burst=config.effective_burst)
    if bucket.tokens < 1:
        candidates.append(now + _ceil_micro((1 - bucket.tokens) / config.rate_per_s))
    if state.retry_not_before is not None:
        candidates.append(state.retry_not_before)
    if _window_open(state, now) and state.remaining is not None:
        assert state.reset_at is not None
        if state.remaining <= 0:
            candidates.append(state.reset_at)
        elif config.pacing and state.last_admitted_at is not None:
            # prawcore: spread what is left over the time left, pausing at most max_pacing_s.
            left_s = (state.reset_at - now).total_seconds()
            pause = min(left_s / state.remaining, config.max_pacing_s)
            candidates.append(state.last_admitted_at + _ceil_micro(pause))
    return max(candidates)


def admit(state: RedditBudget, now: datetime) -> tuple[RedditBudget, Admission]:
    """Admit one request at ``now`` if the budget allows, taking it from the budget;
    otherwise leave the budget as it was and say when to try again."""
    wait_until = next_allowed_at(state, now)
    if wait_until > now:
        return state, Admission(allowed=False, wait_until=wait_until)
    config = state.config
    bucket, verdict = take(state.bucket, now, config.rate_per_s, config.effective_burst)
    if not verdict.allowed:  # pragma: no cover - next_allowed_at already checked the bucket
        return state, Admission(allowed=False, wait_until=now + _ceil_micro(verdict.retry_after_s))
    remaining, reset_at = state.remaining, state.reset_at
    if not _window_open(state, now):
        remaining, reset_at = None, None  # Reddit's window rolled over: unknown until told
    elif remaining is not None:
        remaining = max(0.0, remaining - 1)
    new_state = attrs.evolve(
        state, bucket=bucket, remaining=remaining, reset_at=reset_at, last_admitted_at=now
    )
    return new_state, Admission(allowed=True)


def observe(state: RedditBudget, now: datetime, quota: RedditQuota) -> RedditBudget:
    """Take in the ``X-Ratelimit-*`` values of a successful (non-429) answer.

    Unknown values keep what was known; a success ends a run of 429s.
    """
    remaining = quota.remaining if quota.remaining is not None else state.remaining
    reset_at = now + _ceil_micro(quota.reset_s) if quota.reset_s is not None else state.reset_at
    return attrs.evolve(state, remaining=remaining, reset_at=reset_at, consecutive_429=0)


def observe_headers(state: RedditBudget, now: datetime, headers: Mapping[str, str]) -> RedditBudget:
    """``observe`` with the raw response headers."""
    return observe(state, now, quota_from_headers(headers))


def rate_limited(
    state: RedditBudget,
    now: datetime,
    retry_after_s: float | None,
    quota: RedditQuota | None = None,
) -> RedditBudget:
    """Take in a 429: hold every request until ``Retry-After`` if given, else until
    Reddit's reset if known, else for an exponential back-off. From the second 429 in
    a row the wait is at least the back-off."""
    if quota is not None:
        state = attrs.evolve(
            state,
            remaining=quota.remaining if quota.remaining is not None else state.remaining,
            reset_at=now + _ceil_micro(quota.reset_s)
            if quota.reset_s is not None
            else state.reset_at,
        )
    strikes = state.consecutive_429 + 1
    explicit: float | None = retry_after_s
    if explicit is None and _window_open(state, now):
        assert state.reset_at is not None
        explicit = (state.reset_at - now).total_seconds()
    backoff = state.config.backoff_s(strikes)
    if explicit is None:
        wait = backoff
    elif strikes > 1:
        wait = max(explicit, backoff)
    else:
        wait = explicit
    until = now + _ceil_micro(wait)
    if state.retry_not_before is not None:
        until = max(until, state.retry_not_before)
    return attrs.evolve(state, retry_not_before=until, consecutive_429=strikes)
