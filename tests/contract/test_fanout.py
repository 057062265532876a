"""Fan-out contract: every live subscription of a user gets each payload; none after close."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from omninudge_core.ports import FanOut
from tests.contract.ports_fixtures import FANOUTS, Harness

DELIVERY_TIMEOUT_S = 5.0
_users = itertools.count()


def fresh_user() -> str:
    return f"contract-fanout-{next(_users)}-{id(object())}"


class Inbox:
    """Collects payloads; ``wait_for(n)`` returns once ``n`` have arrived."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._changed = asyncio.Event()

    def sync_listener(self, payload: bytes) -> None:
        self.received.append(payload)
        self._changed.set()

    async def async_listener(self, payload: bytes) -> None:
        await asyncio.sleep(0)
        self.sync_listener(payload)

    async def wait_for(self, count: int) -> list[bytes]:
        async def arrived() -> None:
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(arrived(), DELIVERY_TIMEOUT_S)
        return self.received


@pytest.fixture(params=sorted(FANOUTS))
async def fanout(request: pytest.FixtureRequest) -> AsyncIterator[Harness[FanOut]]:
    async with FANOUTS[request.param]() as harness:
        yield harness


async def test_every_subscriber_of_the_user_gets_the_payload(fanout: Harness[FanOut]) -> None:
    user, other = fresh_user(), fresh_user()
    inboxes = [Inbox() for _ in range(3)]
    bystander = Inbox()
    subs = [await fanout.port.subscribe(user, inboxes[0].sync_listener)]
    subs.append(await fanout.port.subscribe(user, inboxes[1].async_listener))
    subs.append(await fanout.port.subscribe(user, inboxes[2].sync_listener))
    subs.append(await fanout.port.subscribe(other, bystander.sync_listener))
    await fanout.port.publish(user, b"hello")
    for inbox in inboxes:
        assert await inbox.wait_for(1) == [b"hello"]
    await fanout.port.publish(other, b"marker")
    assert await bystander.wait_for(1) == [b"marker"]
    for sub in subs:
        await sub.close()


async def test_payloads_arrive_in_publish_order(fanout: Harness[FanOut]) -> None:
    user = fresh_user()
    inbox = Inbox()
    sub = await fanout.port.subscribe(user, inbox.async_listener)
    for n in range(20):
        await fanout.port.publish(user, b"%d" % n)
    assert await inbox.wait_for(20) == [b"%d" % n for n in range(20)]
    await sub.close()


async def test_nothing_arrives_after_close(fanout: Harness[FanOut]) -> None:
    user = fresh_user()
    closed, open_ = Inbox(), Inbox()
    closing = await fanout.port.subscribe(user, closed.sync_listener)
    staying = await fanout.port.subscribe(user, open_.sync_listener)
    await fanout.port.publish(user, b"before")
    await closed.wait_for(1)
    await closing.close()
    await closing.close()  # closing twice is harmless
    await fanout.port.publish(user, b"after")
    await open_.wait_for(2)  # the open subscription saw "after": delivery has happened
    await asyncio.sleep(0.05)
    assert closed.received == [b"before"]
    await staying.close()


async def test_a_failing_listener_does_not_stop_the_others(fanout: Harness[FanOut]) -> None:
    user = fresh_user()
    inbox = Inbox()

    def broken(payload: bytes) -> None:
        raise RuntimeError("listener bug")

    async def broken_async(payload: bytes) -> None:
        raise RuntimeError("async listener bug")

    subs = [
        await fanout.port.subscribe(user, broken),
        await fanout.port.subscribe(user, broken_async),
        await fanout.port.subscribe(user, inbox.sync_listener),
    ]
    await fanout.port.publish(user, b"one")
    await fanout.port.publish(user, b"two")
    assert await inbox.wait_for(2) == [b"one", b"two"]
    for sub in subs:
        await sub.close()


async def test_publishing_to_a_user_nobody_listens_to_is_fine(fanout: Harness[FanOut]) -> None:
    await fanout.port.publish(fresh_user(), b"into the void")
