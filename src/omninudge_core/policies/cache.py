"""Freshness of cached Reddit answers (DESIGN.md: listings are cached 5 to 15 minutes).

An entry stored at ``stored_at`` is

- FRESH for ``ttl_s`` seconds: serve it without asking Reddit;
- then STALE for up to ``max_stale_s`` more seconds: ask Reddit, but when Reddit is
  down or our budget says wait, serve it marked stale rather than fail;
- then EXPIRED: never served.

An entry stored "in the future" (clock skew between instances) counts as fresh.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

__all__ = [
    "DEFAULT_MAX_STALE_S",
    "DEFAULT_TTL_S",
    "MAX_TTL_S",
    "MIN_TTL_S",
    "CachePolicy",
    "Freshness",
    "freshness",
]

DEFAULT_TTL_S = 300.0
MIN_TTL_S = 300.0
MAX_TTL_S = 900.0
DEFAULT_MAX_STALE_S = 3600.0


class Freshness(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"
    EXPIRED = "expired"

    @property
    def usable_when_reddit_is_down(self) -> bool:
        return self is not Freshness.EXPIRED


def _check_ttl(instance: CachePolicy, attribute: attrs.Attribute[float], value: float) -> None:
    if not MIN_TTL_S <= value <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be within {MIN_TTL_S:g}..{MAX_TTL_S:g} s, got {value!r}")


def _check_max_stale(
    instance: CachePolicy, attribute: attrs.Attribute[float], value: float
) -> None:
    if value < 0:
        raise ValueError(f"max_stale_s must not be negative, got {value!r}")


@attrs.frozen
class CachePolicy:
    """Raises ValueError for a TTL outside 300..900 s or a negative max stale age."""

    ttl_s: float = attrs.field(default=DEFAULT_TTL_S, validator=_check_ttl)
    max_stale_s: float = attrs.field(default=DEFAULT_MAX_STALE_S, validator=_check_max_stale)

    @property
    def keep_s(self) -> float:
        """How long a store should keep an entry: after this it is never served."""
        return self.ttl_s + self.max_stale_s

    def freshness(self, stored_at: datetime, now: datetime) -> Freshness:
        return freshness(stored_at, now, ttl_s=self.ttl_s, max_stale_s=self.max_stale_s)


def freshness(
    stored_at: datetime,
    now: datetime,
    *,
    ttl_s: float = DEFAULT_TTL_S,
    max_stale_s: float = DEFAULT_MAX_STALE_S,
) -> Freshness:
    """Classify an entry stored at ``stored_at`` as seen at ``now``."""
    age = (now - stored_at).total_seconds()
    if age < ttl_s:
        return Freshness.FRESH
    if age < ttl_s + max_stale_s:
        return Freshness.STALE
    return Freshness.EXPIRED
