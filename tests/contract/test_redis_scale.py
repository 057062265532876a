"""Several instances on one Redis: fan-out routes payloads only to the instances holding
the user, and rate limits stay atomic across processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from omninudge_adapters.redis import RedisAdapters, open_redis
from omninudge_adapters.redis.fanout import decode_frame, encode_frame
from tests.contract.test_fanout import Inbox


@pytest.fixture
async def instances(redis_url: str, redis_prefix: str) -> AsyncIterator[list[RedisAdapters]]:
    """Two server instances ("a" and "b") sharing one Redis and one prefix."""
    async with (
        open_redis(redis_url, prefix=redis_prefix, instance_id="a") as a,
        open_redis(redis_url, prefix=redis_prefix, instance_id="b") as b,
    ):
        yield [a, b]


class ChannelTap:
    """Records every frame published on any instance channel of a prefix."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self.pubsub = client.pubsub()
        self.pattern = f"{prefix}instance:*"
        self.seen: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChannelTap:
        await self.pubsub.psubscribe(self.pattern)
        # psubscribe only sends the command: wait for Redis to confirm it, or the first
        # publishes of the test may pass before the tap listens.
        async with asyncio.timeout(5):
            while True:
                message = await self.pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "psubscribe":
                    break
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "pmessage":
                self.seen.append((message["channel"].decode(), message["data"]))

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_publish_goes_only_to_the_instances_holding_the_user(
    instances: list[RedisAdapters], redis_prefix: str
) -> None:
    a, b = instances
    on_a, on_b, on_both_a, on_both_b = Inbox(), Inbox(), Inbox(), Inbox()
    subs = [
        await a.fanout.subscribe("alice", on_a.sync_listener),
        await b.fanout.subscribe("bob", on_b.sync_listener),
        await a.fanout.subscribe("carol", on_both_a.sync_listener),
        await b.fanout.subscribe("carol", on_both_b.sync_listener),
    ]
    async with ChannelTap(a.client, redis_prefix) as tap:
        await b.fanout.publish("alice", b"to alice")
        await a.fanout.publish("bob", b"to bob")
        await a.fanout.publish("carol", b"to carol")
        await a.fanout.publish("dave", b"to nobody")
        assert await on_a.wait_for(1) == [b"to alice"]
        assert await on_b.wait_for(1) == [b"to bob"]
        assert await on_both_a.wait_for(1) == [b"to carol"]
        assert await on_both_b.wait_for(1) == [b"to carol"]
        await asyncio.sleep(0.1)
    channel_a, channel_b = f"{redis_prefix}instance:a", f"{redis_prefix}instance:b"
    assert sorted(tap.seen) == sorted(
        [
            (channel_a, encode_frame("alice", b"to alice")),
            (channel_b, encode_frame("bob", b"to bob")),
            (channel_a, encode_frame("carol", b"to carol")),
            (channel_b, encode_frame("carol", b"to carol")),
        ]
    )
    for sub in subs:
        await sub.close()


async def test_closing_the_last_local_subscription_withdraws_only_this_instances_route(
    instances: list[RedisAdapters],
) -> None:
    a, b = instances
    routes = a.keys.routes("carol")
    first = await a.fanout.subscribe("carol", Inbox().sync_listener)
    second = await a.fanout.subscribe("carol", Inbox().sync_listener)
    on_b = await b.fanout.subscribe("carol", Inbox().sync_listener)
    await first.close()
    assert await a.client.zscore(routes, "a") is not None  # "second" still holds it
    await second.close()
    assert await a.client.zscore(routes, "a") is None
    assert await a.client.zscore(routes, "b") is not None
    await on_b.close()
    assert await a.client.exists(routes) == 0


async def test_routes_are_refreshed_while_subscribed(redis_url: str, redis_prefix: str) -> None:
    async with (
        open_redis(redis_url, prefix=redis_prefix, instance_id="a", route_ttl_s=0.6) as a,
        open_redis(redis_url, prefix=redis_prefix, instance_id="b") as b,
    ):
        inbox = Inbox()
        subscription = await a.fanout.subscribe("alice", inbox.sync_listener)
        await asyncio.sleep(1.5)  # 2.5 route TTLs
        await b.fanout.publish("alice", b"still routed")
        assert await inbox.wait_for(1) == [b"still routed"]
        await subscription.close()


async def test_the_route_of_an_instance_that_stops_refreshing_expires(
    instances: list[RedisAdapters], redis_prefix: str
) -> None:
    """Per-instance route expiry: another instance refreshing the same user's key does
    not keep a crashed instance's route alive."""
    a, b = instances
    inbox = Inbox()
    subscription = await b.fanout.subscribe("alice", inbox.sync_listener)
    seconds, micros = await b.client.time()
    now_ms = seconds * 1000 + micros // 1000
    # What a crashed instance leaves behind: a route nobody refreshes any more.
    await b.client.zadd(b.keys.routes("alice"), {"crashed": now_ms + 300})
    await asyncio.sleep(0.4)
    async with ChannelTap(a.client, redis_prefix) as tap:
        await a.fanout.publish("alice", b"hello")
        assert await inbox.wait_for(1) == [b"hello"]
        await asyncio.sleep(0.05)
    assert [channel for channel, _ in tap.seen] == [f"{redis_prefix}instance:b"]
    refreshing = await b.fanout.subscribe("alice", Inbox().sync_listener)  # prunes it
    assert await b.client.zscore(b.keys.routes("alice"), "crashed") is None
    await refreshing.close()
    await subscription.close()


async def test_a_rate_limit_is_atomic_across_instances(instances: list[RedisAdapters]) -> None:
    verdicts = await asyncio.gather(
        *(
            instances[n % 2].rate_limiter.hit("shared-bucket", rate_per_s=0.001, burst=10)
            for n in range(100)
        )
    )
    assert sum(v.allowed for v in verdicts) == 10


@given(user_id=st.text(min_size=0, max_size=40), payload=st.binary(max_size=200))
def test_a_fan_out_frame_round_trips(user_id: str, payload: bytes) -> None:
    assert decode_frame(encode_frame(user_id, payload)) == (user_id, payload)


@pytest.mark.parametrize("frame", [b"", b"abc", b"5:ab", b"-1:x", b"x:y"])
def test_a_malformed_frame_is_refused(frame: bytes) -> None:
    with pytest.raises(ValueError, match="malformed"):
        decode_frame(frame)
