"""Cross-instance fan-out over Redis pub/sub.

Routing: ``ws:connection:{user_id}`` is a sorted set of the instance ids holding a
live subscription of the user, each scored with its route expiry (ms, Redis clock);
the key's own TTL follows its latest member. An instance refreshes its routes every
``route_ttl_s / 3`` while subscribed, so the routes of a crashed instance vanish by
themselves within ``route_ttl_s``.

Publishing: one script reads the user's live routes and PUBLISHes the frame to the
channel of each instance holding the user (``instance:{instance_id}``), so a payload
travels only to where it is needed. The frame carries the user id
(``<len>:<user_id><payload>``) because one channel serves all of an instance's users.

Reading: each instance runs ONE reader task on its channel and calls its local
listeners, in publish order, awaiting async ones (listeners should be quick). When
the connection breaks (Redis restarted, network cut) the reader reconnects with
exponential backoff and registers all its routes again: a Redis restarted without
persistence has forgotten them.

Best effort by design (DESIGN.md): ``publish`` raises Unavailable when Redis is down
and the caller carries on; ``subscribe`` and ``Subscription.close`` never fail
because of Redis (routes are (re)registered by the reader once Redis answers); the
durable event stream and resume close every gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import math
import random
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from omninudge_adapters.redis.batching import ScriptBatcher
from omninudge_adapters.redis.clock import LUA_NOW_MS
from omninudge_adapters.redis.errors import UNREACHABLE, map_errors
from omninudge_adapters.redis.keys import RedisKeys
from omninudge_core.errors import Unavailable

__all__ = ["RedisFanOut", "RedisSubscription", "decode_frame", "encode_frame"]

logger = logging.getLogger(__name__)

Listener = Callable[[bytes], Awaitable[None] | None]

_REGISTER_BATCH = 500
_READER_ERRORS: tuple[type[BaseException], ...] = (*UNREACHABLE, RedisError, Unavailable)
_LOCK_STRIPES = 64

# KEYS: route sets. ARGV: instance id, route ttl ms.
_REGISTER = (
    LUA_NOW_MS
    + """
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now_ms)
  redis.call('ZADD', KEYS[i], now_ms + tonumber(ARGV[2]), ARGV[1])
  local latest = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[i], latest[2])
end
return #KEYS
"""
)

# KEYS: the user's route set. ARGV: instance channel prefix, frame. Returns instances reached.
_PUBLISH = (
    LUA_NOW_MS
    + """
local instances = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms, '+inf')
for _, instance in ipairs(instances) do
  redis.call('PUBLISH', ARGV[1] .. instance, ARGV[2])
end
return #instances
"""
)


def encode_frame(user_id: str, payload: bytes) -> bytes:
    """``<len(user_id)>:<user_id><payload>`` (user id UTF-8, length in bytes)."""
    user = user_id.encode()
    return b"%d:%s%s" % (len(user), user, payload)


def decode_frame(frame: bytes) -> tuple[str, bytes]:
    """Inverse of ``encode_frame``. Raises ValueError for a malformed frame."""
    head, sep, rest = frame.partition(b":")
    if not sep or not head.isdigit() or int(head) > len(rest):
        raise ValueError("malformed fan-out frame")
    size = int(head)
    return rest[:size].decode(), rest[size:]


class RedisSubscription:
    """Implements ``omninudge_core.ports.Subscription``; ``close`` is idempotent."""

    def __init__(self, fanout: RedisFanOut, user_id: str, subscription_id: int) -> None:
        self._fanout = fanout
        self._user_id = user_id
        self._id = subscription_id

    async def close(self) -> None:
        await self._fanout._unsubscribe(self._user_id, self._id)


class RedisFanOut:
    """Implements ``omninudge_core.ports.FanOut`` across instances sharing one Redis.

    ``client`` runs commands; ``pubsub_client`` gives the reader its dedicated
    connection (built without retries, so a broken connection surfaces to the reader,
    which then re-registers the routes).
    """

    def __init__(
        self,
        client: Redis,
        pubsub_client: Redis,
        keys: RedisKeys,
        *,
        instance_id: str,
        route_ttl_s: float = 30.0,
        ready_timeout_s: float = 2.0,
        keepalive_s: float = 5.0,
        backoff_s: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self._client = client
        self._pubsub_client = pubsub_client
        self._keys = keys
        self.instance_id = instance_id
        self._channel = keys.instance_channel(instance_id)
        self._route_ttl_ms = max(1, math.ceil(route_ttl_s * 1000))
        self._refresh_every_s = route_ttl_s / 3
        self._ready_timeout_s = ready_timeout_s
        self._keepalive_s = keepalive_s
        self._backoff_s = backoff_s
        self._register_script = client.register_script(_REGISTER)
        self._publish_script = client.register_script(_PUBLISH)
        self._publishes = ScriptBatcher(client)  # concurrent publishes share a round trip
        self._ids = itertools.count(1)
        self._listeners: dict[str, dict[int, Listener]] = {}
        # Striped locks order a user's route add/remove without serialising all users.
        self._route_locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        """True while the reader is subscribed to this instance's channel."""
        return self._ready.is_set()

    async def subscribe(self, user_id: str, listener: Listener) -> RedisSubscription:
        """Call ``listener`` with every payload published to ``user_id`` until closed.

        Raises RuntimeError after ``close()``; never raises for Redis trouble."""
        if self._closed:
            raise RuntimeError("subscribe on a closed RedisFanOut")
        subscription_id = next(self._ids)
        self._listeners.setdefault(user_id, {})[subscription_id] = listener
        self._start_reader()
        try:
            async with self._lock_for(user_id):
                if self._listeners.get(user_id):
                    await self._register([user_id])
        except Unavailable as exc:
            logger.warning("fan-out route for %s not registered yet: %s", user_id, exc.message)
        else:
            # A publish right after subscribe must find the reader listening.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), self._ready_timeout_s)
        return RedisSubscription(self, user_id, subscription_id)

    async def publish(self, user_id: str, payload: bytes) -> None:
        """Send ``payload`` to every instance holding ``user_id``. Raises Unavailable."""
        with map_errors("fan-out publish"):
            await self._publishes.call(
                self._publish_script,
                keys=[self._keys.routes(user_id)],
                args=[self._keys.instance_channel(""), encode_frame(user_id, payload)],
            )

    async def close(self) -> None:
        """Stop the reader and withdraw this instance's routes (best effort)."""
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        users = list(self._listeners)
        self._listeners.clear()
        with contextlib.suppress(Unavailable):
            for user_id in users:
                await self._unregister(user_id)

    # --- routes --------------------------------------------------------------------------

    def _lock_for(self, user_id: str) -> asyncio.Lock:
        return self._route_locks[zlib.crc32(user_id.encode()) % _LOCK_STRIPES]

    async def _register(self, user_ids: Iterable[str]) -> None:
        users = list(user_ids)
        with map_errors("fan-out route"):
            for start in range(0, len(users), _REGISTER_BATCH):
                batch = users[start : start + _REGISTER_BATCH]
                await self._register_script(
                    keys=[self._keys.routes(u) for u in batch],
                    args=[self.instance_id, self._route_ttl_ms],
                )

    async def _unregister(self, user_id: str) -> None:
        with map_errors("fan-out route removal"):
            await self._client.zrem(self._keys.routes(user_id), self.instance_id)

    async def _unsubscribe(self, user_id: str, subscription_id: int) -> None:
        listeners = self._listeners.get(user_id)
        if listeners is None or listeners.pop(subscription_id, None) is None:
            return
        if listeners:
            return
        del self._listeners[user_id]
        try:
            async with self._lock_for(user_id):
                if user_id not in self._listeners:  # nobody subscribed again meanwhile
                    await self._unregister(user_id)
        except Unavailable as exc:
            # The route expires by itself; a stray payload meanwhile finds no listener.
            logger.info("fan-out route for %s left to expire: %s", user_id, exc.message)

    # --- the reader ----------------------------------------------------------------------

    def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(
                self._read_forever(), name=f"redis-fanout-reader-{self.instance_id}"
            )

    async def _read_forever(self) -> None:
        delay = self._backoff_s[0]
        outage = False
        while True:
            pubsub = self._pubsub_client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                # Routes may be gone (Redis restarted) or expired while we were cut off.
                await self._register(list(self._listeners))
                self._ready.set()
                if outage:
                    logger.warning("fan-out reader %s reconnected", self.instance_id)
                outage, delay = False, self._backoff_s[0]
                await self._pump(pubsub)
            except _READER_ERRORS as exc:
                if not outage:
                    logger.warning("fan-out reader %s lost redis: %r", self.instance_id, exc)
                outage = True
            except Exception:
                # A bug must not end fan-out for the life of the process: log, retry.
                logger.exception("fan-out reader %s failed", self.instance_id)
            finally:
                self._ready.clear()
                with contextlib.suppress(*UNREACHABLE, RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff_s[1])

    async def _pump(self, pubsub: PubSub) -> None:
        """Dispatch messages until the connection breaks (then raise). Refreshes the
        routes and checks the connection with PING while idle."""
        loop = asyncio.get_running_loop()
        last_heard = last_ping = next_refresh = loop.time()
        next_refresh += self._refresh_every_s
        # Wake often enough for both the keepalive and the route refresh deadlines.
        poll_s = min(1.0, self._keepalive_s, self._refresh_every_s)
        while True:
            message: dict[str, Any] | None = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=poll_s
            )
            now = loop.time()
            if message is not None:
                last_heard = now
                if message["type"] == "message":
                    await self._dispatch(message["data"])
            elif now - last_heard > 3 * self._keepalive_s:
                raise RedisConnectionError("no answer to PING on the fan-out connection")
            elif now - last_heard >= self._keepalive_s and now - last_ping >= self._keepalive_s:
                await pubsub.ping()
                last_ping = now
            if now >= next_refresh:
                next_refresh = now + self._refresh_every_s
                try:
                    await self._register(list(self._listeners))
                except Unavailable as exc:
                    logger.warning("fan-out route refresh failed: %s", exc.message)

    async def _dispatch(self, frame: bytes) -> None:
        try:
            user_id, payload = decode_frame(frame)
        except (ValueError, UnicodeDecodeError):
            logger.warning("dropped a malformed fan-out frame on %s", self._channel)
            return
        for subscription_id, listener in list(self._listeners.get(user_id, {}).items()):
            if subscription_id not in self._listeners.get(user_id, {}):
                continue  # closed by an earlier listener of this same payload
            try:
                result = listener(payload)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("fan-out listener for user %s failed", user_id)
