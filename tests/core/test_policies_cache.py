"""Cache freshness: fresh for the TTL, then stale up to a limit, then expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omninudge_core.policies.cache import CachePolicy, Freshness, freshness

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age_s", "expected"),
    [
        (0, Freshness.FRESH),
        (299.999, Freshness.FRESH),
        (300, Freshness.STALE),
        (3899.9, Freshness.STALE),
        (3900, Freshness.EXPIRED),
        (-60, Freshness.FRESH),  # stored "in the future" by a skewed clock
    ],
)
def test_defaults_fresh_five_minutes_then_stale_for_an_hour(
    age_s: float, expected: Freshness
) -> None:
    assert freshness(NOW - timedelta(seconds=age_s), NOW) is expected


def test_stale_entries_are_usable_when_reddit_is_down_expired_ones_are_not() -> None:
    assert Freshness.FRESH.usable_when_reddit_is_down
    assert Freshness.STALE.usable_when_reddit_is_down
    assert not Freshness.EXPIRED.usable_when_reddit_is_down


@pytest.mark.parametrize("ttl", [299, 901, 0])
def test_ttl_outside_five_to_fifteen_minutes_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError):
        CachePolicy(ttl_s=ttl)


def test_policy_keeps_entries_for_ttl_plus_stale_age() -> None:
    policy = CachePolicy(ttl_s=900, max_stale_s=100)
    assert policy.keep_s == 1000
    assert policy.freshness(NOW - timedelta(seconds=950), NOW) is Freshness.STALE
    with pytest.raises(ValueError):
        CachePolicy(max_stale_s=-1)


@given(
    st.floats(min_value=0, max_value=10_000),
    st.floats(min_value=0, max_value=10_000),
    st.floats(min_value=300, max_value=900),
    st.floats(min_value=0, max_value=3_600),
)
def test_freshness_only_degrades_with_age(
    age: float, more: float, ttl: float, max_stale: float
) -> None:
    order = [Freshness.FRESH, Freshness.STALE, Freshness.EXPIRED]
    stored = NOW - timedelta(seconds=age)
    earlier = freshness(stored, NOW, ttl_s=ttl, max_stale_s=max_stale)
    later = freshness(stored, NOW + timedelta(seconds=more), ttl_s=ttl, max_stale_s=max_stale)
    assert order.index(earlier) <= order.index(later)
