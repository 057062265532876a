"""Key and channel names, all under one configurable prefix.

Several deployments (or test runs) can share one Redis by using different prefixes;
nothing this package writes lives outside its prefix. User ids and token ids are
embedded as they are (they are opaque strings chosen by the server).
"""

from __future__ import annotations

import attrs

__all__ = ["RedisKeys"]


@attrs.frozen
class RedisKeys:
    """Builds every key and channel name used by the Redis adapters."""

    prefix: str = "omninudge:"

    def presence(self, user_id: str) -> str:
        """Sorted set: connection id -> expiry (ms since the epoch, Redis clock)."""
        return f"{self.prefix}presence:{user_id}"

    def last_seen(self, user_id: str) -> str:
        """String: ms since the epoch of the last heartbeat or last disconnect."""
        return f"{self.prefix}last_seen:{user_id}"

    def revoked(self, jti: str) -> str:
        return f"{self.prefix}revoked:{jti}"

    def rate_limit(self, key: str) -> str:
        """Hash ``tokens``, ``updated_at`` (seconds, Redis clock)."""
        return f"{self.prefix}ratelimit:{key}"

    def cache(self, key: str) -> str:
        return f"{self.prefix}cache:{key}"

    def routes(self, user_id: str) -> str:
        """Sorted set: instance id -> route expiry (ms since the epoch, Redis clock)."""
        return f"{self.prefix}ws:connection:{user_id}"

    def instance_channel(self, instance_id: str) -> str:
        """The pub/sub channel one server instance reads its users' payloads from."""
        return f"{self.prefix}instance:{instance_id}"

    def pattern(self) -> str:
        """A SCAN/KEYS pattern matching every key under the prefix."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}*"
