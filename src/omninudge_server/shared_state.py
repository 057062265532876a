"""Shared fast state: presence, token revocations, rate limits, cache and fan-out.

Without ``REDIS_URL`` they live in this process (the embedded default: one process).
With it they live in Redis, so that several server processes behave as one
(docs/scaling.md): a message committed by instance 1 is announced through Redis to
instance 2, whose connection of the recipient pushes it from the shared stream.

Redis is never on the durability path (DESIGN.md): messages are committed to the
database first and Redis only carries notices. So when Redis is unreachable the
server keeps working, degraded, and recovers by itself when Redis answers again:

- fan-out: publish failures are logged once per outage; notices still reach the
  connections of THIS process; when Redis answers again every local connection
  re-reads its stream head, so nothing committed meanwhile waits for a reconnect;
- presence: heartbeats are skipped; ``status`` answers ``online: null`` (unknown);
- revocations: FAIL-OPEN, logged loudly: an unexpired token is accepted unless this
  process revoked it itself; a logout meanwhile reaches Redis once it answers;
- rate limits: per process (``FallbackRateLimiter``): each instance allows its burst;
- cache: misses.

Why fail-open for revocations: failing closed would turn a Redis outage into a
complete outage (every request carries a token), contradicting "Redis is not on the
durability path". The exposure is bounded: only tokens revoked elsewhere, only for
the outage, only until their own expiry; revocations made on this instance are
still enforced here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

import attrs
import orjson

from omninudge_core.errors import Unavailable
from omninudge_core.ports import (
    Cache,
    EventStore,
    FanOut,
    Presence,
    PresenceInfo,
    RateLimiter,
    Revocations,
    Subscription,
)
from omninudge_server.config import Settings

__all__ = [
    "OutageLog",
    "ResilientCache",
    "ResilientFanOut",
    "ResilientPresence",
    "ResilientRevocations",
    "SharedState",
    "open_shared_state",
]

logger = logging.getLogger("omninudge.shared_state")

HEALTH_REDIS_TIMEOUT_S = 2.0
CATCH_UP_BATCH = 50  # stream heads read at once after an outage

Listener = Callable[[bytes], Awaitable[None] | None]


class OutageLog:
    """Logs when a dependency goes away and when it is back: once each, not per call
    (a busy server would otherwise write one line per message during an outage)."""

    def __init__(self, what: str, *, level: int = logging.WARNING) -> None:
        self.what = what
        self.level = level
        self.down = False

    def failed(self, exc: Unavailable) -> None:
        if not self.down:
            self.down = True
            logger.log(self.level, "%s: redis unavailable, degraded (%s)", self.what, exc.message)

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            logger.warning("%s: redis answers again, recovered", self.what)


class ResilientPresence:
    """Presence that never fails a connection because Redis is down: heartbeats and
    disconnects are skipped (users show unknown, then reappear at their next heartbeat)."""

    def __init__(self, inner: Presence) -> None:
        self._inner = inner
        self._outage = OutageLog("presence")

    async def heartbeat(self, user_id: str, connection_id: str, ttl_s: float) -> None:
        try:
            await self._inner.heartbeat(user_id, connection_id, ttl_s)
        except Unavailable as exc:
            self._outage.failed(exc)
        else:
            self._outage.succeeded()

    async def disconnected(self, user_id: str, connection_id: str) -> None:
        try:
            await self._inner.disconnected(user_id, connection_id)
        except Unavailable as exc:
            # The connection's entry expires by itself with its heartbeat TTL.
            self._outage.failed(exc)
        else:
            self._outage.succeeded()

    async def status(self, user_ids: Sequence[str]) -> dict[str, PresenceInfo]:
        """``online=None`` for every user while Redis is down (the adapter's rule)."""
        return await self._inner.status(user_ids)


class ResilientRevocations:
    """Revocations in Redis, fail-open while Redis is down (see the module docstring).

    Every revocation is also kept in ``local`` (this process), so a logout is enforced
    here at once whatever Redis does; one made during an outage is written to Redis
    when it answers again.
    """

    def __init__(self, inner: Revocations, local: Revocations) -> None:
        self._inner = inner
        self._local = local
        self._pending: dict[str, datetime] = {}
        self._outage = OutageLog("revocations", level=logging.ERROR)

    async def revoke(self, jti: str, until: datetime) -> None:
        await self._local.revoke(jti, until)
        try:
            await self._inner.revoke(jti, until)
        except Unavailable as exc:
            self._outage.failed(exc)
            self._pending[jti] = until
            logger.error("token %s revoked on this instance only until redis answers", jti)
            return
        self._outage.succeeded()
        await self.flush_pending()

    async def is_revoked(self, jti: str) -> bool:
        if await self._local.is_revoked(jti):
            if self._pending:
                await self.flush_pending()
            return True
        try:
            revoked = await self._inner.is_revoked(jti)
        except Unavailable as exc:
            if not self._outage.down:
                logger.error(
                    "revocation list unreachable: accepting unexpired tokens (fail-open) "
                    "until redis answers"
                )
            self._outage.failed(exc)
            return False
        self._outage.succeeded()
        await self.flush_pending()
        return revoked

    @property
    def pending(self) -> int:
        """Revocations made during an outage and not yet written to Redis."""
        return len(self._pending)

    async def flush_pending(self) -> None:
        """Write the revocations made during an outage to Redis (stops at the first
        failure; the rest waits for the next call)."""
        while self._pending:
            jti, until = next(iter(self._pending.items()))
            try:
                await self._inner.revoke(jti, until)
            except Unavailable as exc:
                self._outage.failed(exc)
                return
            self._pending.pop(jti, None)
            self._outage.succeeded()
            logger.warning("revocation of token %s made during the outage reached redis", jti)


class ResilientCache:
    """A cache whose Redis trouble is a miss (reads) or a no-op (writes)."""

    def __init__(self, inner: Cache) -> None:
        self._inner = inner
        self._outage = OutageLog("cache")

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._inner.get(key)
        except Unavailable as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        try:
            await self._inner.set(key, value, ttl_s)
        except Unavailable as exc:
            self._outage.failed(exc)
        else:
            self._outage.succeeded()

    async def delete(self, key: str) -> None:
        try:
            await self._inner.delete(key)
        except Unavailable as exc:
            self._outage.failed(exc)
        else:
            self._outage.succeeded()


class _Both:
    """A subscription held in the Redis fan-out and in the local registry."""

    def __init__(self, fanout: ResilientFanOut, user_id: str, subs: list[Subscription]) -> None:
        self._fanout = fanout
        self._user_id = user_id
        self._subs = subs

    async def close(self) -> None:
        subs, self._subs = self._subs, []
        if subs:
            self._fanout._forget(self._user_id)
        for sub in subs:
            await sub.close()


class _RemoteFanOut(FanOut, Protocol):
    """The Redis fan-out: a FanOut that knows whether its reader is subscribed."""

    @property
    def connected(self) -> bool: ...


def _events_notice(up_to: int) -> bytes:
    # The hub's "stream grew" notice (omninudge_server.realtime).
    return orjson.dumps({"k": "events", "up_to": up_to})


class ResilientFanOut:
    """Fan-out through Redis that degrades to this process while Redis is down and
    catches up when it is back.

    - ``publish`` goes through Redis (which also reaches this instance's own
      listeners). When Redis refuses it, or this instance's reader is not subscribed,
      the payload is handed to the local listeners directly, so users connected to the
      same instance still talk live.
    - A watcher notices when the reader is (re)subscribed, and after any lost publish:
      it then tells every local listener the current head of its user's stream, so a
      message committed anywhere during the outage is pushed without a reconnect.
    """

    def __init__(
        self,
        remote: _RemoteFanOut,
        local: FanOut,
        events: EventStore,
        *,
        poll_s: float = 0.1,
    ) -> None:
        self._remote = remote
        self._local = local
        self._events = events
        self._poll_s = poll_s
        self._users: dict[str, int] = {}  # user id -> local subscriptions
        self._outage = OutageLog("fan-out")
        self._missed = False
        self._watcher: asyncio.Task[None] | None = None
        self.catch_ups = 0  # completed catch-up rounds (observable in tests)

    def start(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="fanout-catch-up")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def subscribe(self, user_id: str, listener: Listener) -> Subscription:
        """Never raises for Redis trouble (the Redis adapter's rule)."""
        local = await self._local.subscribe(user_id, listener)
        self._users[user_id] = self._users.get(user_id, 0) + 1
        remote = await self._remote.subscribe(user_id, listener)
        return _Both(self, user_id, [remote, local])

    async def publish(self, user_id: str, payload: bytes) -> None:
        """Best effort; never raises Unavailable (the degradation is logged once)."""
        try:
            await self._remote.publish(user_id, payload)
        except Unavailable as exc:
            self._outage.failed(exc)
            self._missed = True
            await self._local.publish(user_id, payload)
            return
        self._outage.succeeded()
        if not self._remote.connected and user_id in self._users:
            # Our reader is cut off: Redis took the payload but cannot hand it back.
            self._missed = True
            await self._local.publish(user_id, payload)

    def _forget(self, user_id: str) -> None:
        count = self._users.get(user_id, 0) - 1
        if count > 0:
            self._users[user_id] = count
        else:
            self._users.pop(user_id, None)

    async def _watch(self) -> None:
        was_connected = False
        while True:
            await asyncio.sleep(self._poll_s)
            connected = self._remote.connected
            if connected and (not was_connected or self._missed):
                self._missed = False
                try:
                    await self.catch_up()
                except Unavailable as exc:
                    logger.warning("fan-out catch-up postponed: %s", exc.message)
                    self._missed = True
                except Exception:
                    logger.exception("fan-out catch-up failed")
                    self._missed = True
            was_connected = connected

    async def catch_up(self) -> None:
        """Tell every local listener the head of its user's stream. Raises Unavailable
        when the database does not answer."""
        users = list(self._users)
        for start in range(0, len(users), CATCH_UP_BATCH):
            batch = users[start : start + CATCH_UP_BATCH]
            heads = await asyncio.gather(*(self._events.last_seq(u) for u in batch))
            for user_id, head in zip(batch, heads, strict=True):
                if head > 0 and user_id in self._users:
                    await self._local.publish(user_id, _events_notice(head))
        self.catch_ups += 1


@attrs.frozen
class SharedState:
    """The shared-state ports of one process and how to check them."""

    mode: str  # "in-process" or "redis"
    instance_id: str
    presence: Presence
    revocations: Revocations
    rate_limiter: RateLimiter
    cache: Cache
    fanout: FanOut
    ping: Callable[[], Awaitable[None]] | None = None

    async def health(self) -> str:
        """``in-process``, ``ok`` or ``down`` (the ``redis`` field of /health)."""
        if self.ping is None:
            return "in-process"
        try:
            await asyncio.wait_for(self.ping(), HEALTH_REDIS_TIMEOUT_S)
        except (Unavailable, TimeoutError):
            return "down"
        if isinstance(self.revocations, ResilientRevocations):
            # Health checks come often: they carry an outage's logouts to Redis.
            await self.revocations.flush_pending()
        return "ok"


@contextlib.asynccontextmanager
async def open_shared_state(settings: Settings, events: EventStore) -> AsyncIterator[SharedState]:
    """In-process adapters, or Redis ones when ``settings.redis_url`` is set (Redis
    need not be up: the adapters connect when it answers)."""
    from omninudge_adapters.memory.cache import MemoryCache
    from omninudge_adapters.memory.fanout import MemoryFanOut
    from omninudge_adapters.memory.presence import MemoryPresence
    from omninudge_adapters.memory.ratelimit import MemoryRateLimiter
    from omninudge_adapters.memory.revocations import MemoryRevocations

    if settings.redis_url is None:
        yield SharedState(
            mode="in-process",
            instance_id="local",
            presence=MemoryPresence(),
            revocations=MemoryRevocations(),
            rate_limiter=MemoryRateLimiter(),
            cache=MemoryCache(),
            fanout=MemoryFanOut(),
        )
        return

    from omninudge_adapters.redis import FallbackRateLimiter, open_redis

    async with open_redis(settings.redis_url, prefix=settings.redis_prefix) as redis:
        fanout = ResilientFanOut(redis.fanout, MemoryFanOut(), events)
        fanout.start()
        try:
            logger.info(
                "redis shared state: prefix=%s instance=%s",
                settings.redis_prefix,
                redis.instance_id,
            )
            yield SharedState(
                mode="redis",
                instance_id=redis.instance_id,
                presence=ResilientPresence(redis.presence),
                revocations=ResilientRevocations(redis.revocations, MemoryRevocations()),
                rate_limiter=FallbackRateLimiter(redis.rate_limiter, MemoryRateLimiter()),
                cache=ResilientCache(redis.cache),
                fanout=fanout,
                ping=redis.ping,
            )
        finally:
            await fanout.close()
