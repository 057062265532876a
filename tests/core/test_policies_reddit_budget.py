"""Reddit's shared API budget (REDDIT.md §7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core.policies.reddit_budget import (
    BudgetConfig,
    RedditBudget,
    admit,
    next_allowed_at,
    observe,
    observe_headers,
    parse_header_number,
    parse_retry_after,
    quota_from_headers,
    rate_limited,
)
from omninudge_core.ports import RedditQuota

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def seconds(s: float) -> timedelta:
    return timedelta(seconds=s)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("997.0", 997.0),
        ("995", 995.0),
        (" 12 ", 12.0),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("abc", None),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("1" * 40, None),
    ],
)
def test_header_numbers_are_parsed_defensively(raw: str | None, expected: float | None) -> None:
    assert parse_header_number(raw) == expected


def test_quota_from_headers_is_case_insensitive_and_tolerates_missing_values() -> None:
    quota = quota_from_headers(
        {"x-ratelimit-used": "3", "X-Ratelimit-Remaining": "997.0", "Content-Type": "json"}
    )
    assert quota == RedditQuota(used=3.0, remaining=997.0, reset_s=None)
    assert quota_from_headers({}) == RedditQuota(used=None, remaining=None, reset_s=None)


def test_retry_after_in_seconds_or_none() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None


def test_a_fresh_budget_admits_a_burst_then_paces_to_the_configured_rate() -> None:
    state = RedditBudget(config=BudgetConfig(requests_per_minute=100, burst=10))
    for _ in range(10):
        state, admission = admit(state, NOW)
        assert admission.allowed
    state, admission = admit(state, NOW)
    assert not admission.allowed
    assert admission.wait_until == NOW + seconds(60 / 90)  # refill (100 - 10) / 60 per s
    state, admission = admit(state, admission.wait_until)
    assert admission.allowed


def test_default_burst_scales_with_the_budget() -> None:
    assert BudgetConfig().effective_burst == 10
    assert BudgetConfig(requests_per_minute=10).effective_burst == 1


@pytest.mark.parametrize("kwargs", [{"requests_per_minute": 10, "burst": 10}, {"burst": 0.5}])
def test_impossible_configurations_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BudgetConfig(**kwargs)


def test_remaining_zero_waits_until_reddits_reset() -> None:
    state = observe_headers(
        RedditBudget(),
        NOW,
        {"X-Ratelimit-Used": "1000", "X-Ratelimit-Remaining": "0.0", "X-Ratelimit-Reset": "42"},
    )
    assert next_allowed_at(state, NOW) == NOW + seconds(42)
    state, admission = admit(state, NOW + seconds(10))
    assert admission == attrs.evolve(admission, allowed=False, wait_until=NOW + seconds(42))
    state, admission = admit(state, NOW + seconds(42))
    assert admission.allowed
    assert state.remaining is None  # Reddit's window rolled over: unknown until told


def test_admissions_count_down_reddits_remaining() -> None:
    state = observe(RedditBudget(), NOW, RedditQuota(used=998, remaining=2, reset_s=300))
    state, first = admit(state, NOW)
    state, second = admit(state, NOW)
    state, third = admit(state, NOW)
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert third.wait_until == NOW + seconds(300)


def test_headers_missing_from_a_cached_answer_change_nothing() -> None:
    state = observe(RedditBudget(), NOW, RedditQuota(used=10, remaining=990, reset_s=300))
    assert observe_headers(state, NOW + seconds(1), {}) == state


def test_429_with_retry_after_holds_requests_for_that_long() -> None:
    state = rate_limited(RedditBudget(), NOW, retry_after_s=2)
    assert next_allowed_at(state, NOW) == NOW + seconds(2)
    assert not admit(state, NOW + seconds(1.9))[1].allowed
    assert admit(state, NOW + seconds(2))[1].allowed


def test_429_without_retry_after_waits_for_the_reset_when_known() -> None:
    state = observe(RedditBudget(), NOW, RedditQuota(used=None, remaining=None, reset_s=30))
    state = rate_limited(state, NOW, retry_after_s=None)
    assert next_allowed_at(state, NOW) == NOW + seconds(30)


def test_429_without_any_hint_backs_off_exponentially_until_a_success() -> None:
    config = BudgetConfig(backoff_base_s=2, backoff_max_s=10)
    state = RedditBudget(config=config)
    waits = []
    at = NOW
    for _ in range(5):
        state = rate_limited(state, at, retry_after_s=None)
        waits.append((next_allowed_at(state, at) - at).total_seconds())
        at = next_allowed_at(state, at)
    assert waits == [2, 4, 8, 10, 10]
    state = observe(state, at, RedditQuota(used=1, remaining=999, reset_s=600))
    assert state.consecutive_429 == 0


def test_repeated_429s_wait_at_least_the_backoff_even_with_retry_after() -> None:
    state = rate_limited(RedditBudget(config=BudgetConfig(backoff_base_s=5)), NOW, 1)
    assert next_allowed_at(state, NOW) == NOW + seconds(1)
    state = rate_limited(state, NOW + seconds(1), 1)
    assert next_allowed_at(state, NOW + seconds(1)) == NOW + seconds(11)


def test_pacing_spreads_the_remaining_requests_over_the_window() -> None:
    config = BudgetConfig(pacing=True, max_pacing_s=10)
    state = observe(RedditBudget(config=config), NOW, RedditQuota(1, remaining=101, reset_s=200))
    state, admission = admit(state, NOW)
    assert admission.allowed  # 100 left over 200 s: one every 2 s
    assert next_allowed_at(state, NOW) == NOW + seconds(2)


def test_pacing_never_pauses_longer_than_the_cap() -> None:
    config = BudgetConfig(pacing=True, max_pacing_s=10)
    state = observe(RedditBudget(config=config), NOW, RedditQuota(1, remaining=2, reset_s=600))
    state, _ = admit(state, NOW)
    assert next_allowed_at(state, NOW) == NOW + seconds(10)


# --- the budget is never exceeded -------------------------------------------------------

step = st.one_of(
    st.tuples(st.just("admit"), st.integers(min_value=0, max_value=3_000_000)),
    st.tuples(st.just("admit_when_allowed"), st.integers(min_value=1, max_value=150)),
    st.tuples(
        st.just("observe"),
        st.integers(min_value=0, max_value=1_000),
        st.integers(min_value=0, max_value=600),
    ),
    st.tuples(st.just("rate_limited"), st.one_of(st.none(), st.integers(min_value=0, max_value=5))),
)


@given(
    st.lists(step, max_size=40),
    st.sampled_from([(100.0, None), (100.0, 99.0), (10.0, None), (60.0, 1.0), (30.0, 29.5)]),
    st.booleans(),
)
def test_never_admits_more_than_the_configured_count_in_any_60_s_window(
    steps: list[tuple[object, ...]], limits: tuple[float, float | None], pacing: bool
) -> None:
    """Whatever Reddit reports and whenever requests come, admissions in any
    half-open 60 s window stay within requests_per_minute; and admitting at
    next_allowed_at always succeeds."""
    per_minute, burst = limits
    state = RedditBudget(config=BudgetConfig(per_minute, burst=burst, pacing=pacing))
    now = NOW
    admitted: list[datetime] = []
    for action, *args in steps:
        if action == "admit":
            (step_us,) = args
            assert isinstance(step_us, int)
            now += timedelta(microseconds=step_us)
            state, admission = admit(state, now)
            if admission.allowed:
                admitted.append(now)
            else:
                assert admission.wait_until is not None
                assert admission.wait_until > now
        elif action == "admit_when_allowed":
            (times,) = args
            assert isinstance(times, int)
            for _ in range(times):
                now = next_allowed_at(state, now)
                state, admission = admit(state, now)
                assert admission.allowed
                admitted.append(now)
        elif action == "observe":
            remaining, reset = args
            assert isinstance(remaining, int)
            assert isinstance(reset, int)
            state = observe(state, now, RedditQuota(used=None, remaining=remaining, reset_s=reset))
        else:
            (retry_after,) = args
            assert retry_after is None or isinstance(retry_after, int)
            state = rate_limited(state, now, retry_after_s=retry_after)
    for i, start in enumerate(admitted):
        in_window = [t for t in admitted[i:] if t < start + timedelta(seconds=60)]
        assert len(in_window) <= per_minute
