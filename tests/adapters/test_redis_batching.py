"""ScriptBatcher on a real Redis: concurrent script calls share pipelines, each caller
gets its own result or error, and a script Redis forgot is loaded again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from omninudge_adapters.redis.batching import ScriptBatcher

# Returns its argument, or fails with a script error when asked to.
_ECHO = """
if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 60000)
return ARGV[1]
"""


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield redis
    finally:
        await redis.aclose()


async def test_concurrent_calls_share_pipelines_and_keep_their_results(
    client: Redis, redis_prefix: str
) -> None:
    script = client.register_script(_ECHO)
    batcher = ScriptBatcher(client)
    counter = f"{redis_prefix}:count"
    results = await asyncio.gather(
        *(batcher.call(script, keys=[counter], args=[str(i)]) for i in range(200))
    )
    assert results == [str(i) for i in range(200)]
    assert int(await client.get(counter)) == 200  # every script ran exactly once
    assert 1 <= batcher.pipelines < 200


async def test_a_failing_call_fails_alone(client: Redis, redis_prefix: str) -> None:
    script = client.register_script(_ECHO)
    batcher = ScriptBatcher(client)
    counter = f"{redis_prefix}:count"
    results = await asyncio.gather(
        batcher.call(script, keys=[counter], args=["a"]),
        batcher.call(script, keys=[counter], args=["fail"]),
        batcher.call(script, keys=[counter], args=["b"]),
        return_exceptions=True,
    )
    assert results[0] == "a"
    assert results[2] == "b"
    assert isinstance(results[1], ResponseError)
    assert int(await client.get(counter)) == 2


async def test_a_script_redis_forgot_is_loaded_again(client: Redis, redis_prefix: str) -> None:
    script = client.register_script(_ECHO)
    batcher = ScriptBatcher(client)
    counter = f"{redis_prefix}:count"
    assert await batcher.call(script, keys=[counter], args=["first"]) == "first"
    await client.script_flush()  # as after a Redis restart
    results = await asyncio.gather(
        *(batcher.call(script, keys=[counter], args=[str(i)]) for i in range(5))
    )
    assert results == [str(i) for i in range(5)]
    assert int(await client.get(counter)) == 6


async def test_an_unreachable_redis_reaches_every_caller(redis_prefix: str) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        script = dead.register_script(_ECHO)
        batcher = ScriptBatcher(dead)
        results = await asyncio.gather(
            *(batcher.call(script, keys=[f"{redis_prefix}:x"], args=["a"]) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await dead.aclose()
