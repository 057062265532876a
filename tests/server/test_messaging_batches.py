"""The send, ack and read paths cost a fixed number of store calls: a send two reads and
the append, an ack batch of any size one read, one write and one append of receipts, a
read a handful - and one fan-out notice per user per batch. Counted through a storage
proxy around the in-memory adapter; the shortcuts that make this so keep every rule."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import attrs
import pytest

from omninudge_core import delivery
from omninudge_core.errors import Blocked, DeviceMismatch
from omninudge_core.models import (
    Block,
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    Device,
    Envelope,
    EventKind,
    StreamEvent,
    User,
    UserSettings,
    WrappedKey,
)
from omninudge_core.ports import Storage
from omninudge_server import messaging, receipts
from omninudge_server.config import load_settings
from omninudge_server.metrics import Metrics
from omninudge_server.realtime import Hub
from omninudge_server.wiring import KnownConversations, Services, open_services

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_STORES = ("users", "devices", "blocks", "conversations", "messages", "events")


class _CountedStore:
    def __init__(self, name: str, inner: object, calls: list[str]) -> None:
        self._name, self._inner, self._calls = name, inner, calls

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._inner, attr)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(f"{self._name}.{attr}")
            return await method(*args, **kwargs)

        return counted


class CountingStorage:
    """The wrapped storage, recording every call to one of its stores."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        return _CountedStore(name, value, self.calls) if name in _STORES else value

    def take(self) -> Counter[str]:
        taken = Counter(self.calls)
        self.calls.clear()
        return taken


@attrs.define
class World:
    services: Services
    storage: CountingStorage
    hub: Hub
    metrics: Metrics
    conversation: Conversation
    notices: Counter[str]

    alice = "alice"
    bob = "bob"

    async def send(self, devices: list[str] | None = None) -> str:
        covered = devices if devices is not None else ["alice-1", "bob-1"]
        outcome = await messaging.send_message(
            self.services,
            self.hub,
            self.metrics,
            sender_id=self.alice,
            conversation_id=self.conversation.id,
            client_msg_id=self.services.new_id(),
            envelope=_envelope("alice-1", covered),
            text=None,
        )
        return outcome.message.id

    async def stream(self, user_id: str) -> list[StreamEvent]:
        return await self.storage.inner.events.read(user_id, after=0, limit=1000)

    async def ack(self, device_id: str, events: list[StreamEvent]) -> None:
        await receipts.record_device_ack(
            self.services,
            self.hub,
            self.metrics,
            user_id=self.bob,
            device_id=device_id,
            events=events,
        )

    async def read(self, up_to: str) -> None:
        await receipts.mark_read(
            self.services,
            self.hub,
            self.metrics,
            user_id=self.bob,
            conversation_id=self.conversation.id,
            up_to=up_to,
        )

    async def receipts(self) -> list[tuple[str, str]]:
        return [
            (str(payload["message_id"]), str(payload["status"]))
            for event in await self.stream(self.alice)
            if event.kind is EventKind.RECEIPT and (payload := event.payload) is not None
        ]


def _envelope(sender_device: str, devices: list[str]) -> Envelope:
    return Envelope(
        v=1,
        alg="ECDH-P256+HKDF-SHA256+A256GCM+ES256",
        sender_device=sender_device,
        epk="e",
        iv="i",
        ct="c",
        keys=tuple(WrappedKey(device=d, iv="i", wk="w") for d in sorted(devices)),
        sig="s",
    )


def _device(user_id: str, device_id: str) -> Device:
    return Device(user_id, device_id, {"kty": "EC"}, {"kty": "EC"}, device_id, T0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = load_settings({"DATABASE_URL": "memory://"}, data_dir=tmp_path)
    settings = attrs.evolve(settings, send_rate_per_s=1e6, send_burst=1e6)
    async with open_services(settings) as services:
        storage = services.storage
        for user_id in (World.alice, World.bob):
            await storage.users.create(User(user_id, user_id, T0))
        await storage.devices.put(_device(World.alice, "alice-1"))
        await storage.devices.put(_device(World.bob, "bob-1"))
        conversation, _ = await storage.conversations.get_or_create(
            Conversation("c1", (World.alice, World.bob), ConversationKind.PLATFORM, T0)
        )
        counting = CountingStorage(storage)
        services.storage = cast(Storage, counting)
        hub = Hub(services.fanout)
        notices: Counter[str] = Counter()
        for user_id in (World.alice, World.bob):

            def listen(payload: bytes, user_id: str = user_id) -> None:
                notices[user_id] += 1

            await services.fanout.subscribe(user_id, listen)
        yield World(services, counting, hub, Metrics(), conversation, notices)
        await hub.close()


async def test_a_platform_send_costs_two_reads_and_the_append(world: World) -> None:
    await world.send()  # reads the conversation once for the process
    world.storage.take()
    world.notices.clear()
    await world.send()
    assert world.storage.take() == Counter(
        {"blocks.between": 1, "devices.for_users": 1, "messages.append": 1}
    )
    assert world.notices == Counter({world.alice: 1, world.bob: 1})


async def test_a_send_sees_a_block_and_a_new_device_at_once(world: World) -> None:
    await world.send()
    await world.storage.inner.devices.put(_device(world.bob, "bob-2"))
    with pytest.raises(DeviceMismatch) as mismatch:
        await world.send()
    assert mismatch.value.missing == ["bob-2"]
    await world.send(["alice-1", "bob-1", "bob-2"])
    await world.storage.inner.blocks.put(Block(world.bob, world.alice, T0))
    with pytest.raises(Blocked):
        await world.send(["alice-1", "bob-1", "bob-2"])


async def test_an_ack_batch_of_64_costs_one_read_one_write_and_one_append(
    world: World,
) -> None:
    sent = [await world.send() for _ in range(64)]
    events = await world.stream(world.bob)
    world.storage.take()
    world.notices.clear()
    await world.ack("bob-1", events)
    assert world.storage.take() == Counter(
        {"messages.deliveries_many": 1, "messages.set_deliveries": 1, "events.append": 1}
    )
    assert world.notices == Counter({world.alice: 1})  # one notice for the whole batch
    assert await world.receipts() == [(m, "delivered") for m in sent]
    await world.ack("bob-1", events)  # the wire is at-least-once: a duplicate changes nothing
    assert world.storage.take() == Counter({"messages.deliveries_many": 1})
    assert len(await world.receipts()) == 64


async def test_an_ack_reads_a_conversation_once_per_process(world: World) -> None:
    await world.send()
    world.services.known_conversations = KnownConversations()  # as in another process
    events = await world.stream(world.bob)
    world.storage.take()
    await world.ack("bob-1", events)
    assert world.storage.take()["conversations.get"] == 1
    await world.send()
    events = await world.stream(world.bob)
    world.storage.take()
    await world.ack("bob-1", events[1:])
    assert world.storage.take()["conversations.get"] == 0


async def test_a_read_of_many_messages_costs_a_fixed_number_of_calls(world: World) -> None:
    sent = [await world.send() for _ in range(20)]
    await world.ack("bob-1", await world.stream(world.bob))
    world.storage.take()
    world.notices.clear()
    await world.read(sent[-1])
    assert world.storage.take() == Counter(
        {
            "users.get": 1,
            "messages.mark_read": 1,
            "messages.deliveries_many": 1,
            "blocks.between": 1,
            "messages.set_deliveries": 1,
            "events.append": 1,
        }
    )
    assert world.notices == Counter({world.alice: 1})
    assert (await world.receipts())[20:] == [(m, "read") for m in sent]


async def test_a_read_sends_no_read_receipt_across_a_block(world: World) -> None:
    sent = [await world.send() for _ in range(3)]
    await world.storage.inner.blocks.put(Block(world.alice, world.bob, T0))
    await world.read(sent[-1])
    assert await world.receipts() == []


async def test_an_ack_of_a_message_read_elsewhere_reads_the_setting(world: World) -> None:
    """Bob reads with read receipts off (Alice hears "delivered" only), turns them on,
    and his second device acks: a device is at ``read``, so the machine gets Bob's
    setting of now, and the ack adds no receipt."""
    await world.storage.inner.devices.put(_device(world.bob, "bob-2"))
    message_id = await world.send(["alice-1", "bob-1", "bob-2"])
    await world.storage.inner.users.update(
        User(world.bob, world.bob, T0, settings=UserSettings(read_receipts=False))
    )
    await world.read(message_id)
    assert await world.receipts() == [(message_id, "delivered")]
    await world.storage.inner.users.update(User(world.bob, world.bob, T0))
    world.storage.take()
    await world.ack("bob-2", await world.stream(world.bob))
    assert world.storage.take()["users.get_many"] == 1
    assert await world.receipts() == [(message_id, "delivered")]


_BEFORE_READ = [s for s in delivery.PLATFORM_STATUSES if s is not DeliveryStatus.READ]


@pytest.mark.parametrize(
    "statuses",
    [
        combo
        for size in (1, 2, 3)
        for combo in itertools.product(sorted(_BEFORE_READ, key=lambda s: s.value), repeat=size)
    ],
)
def test_the_read_receipt_setting_changes_no_ack_until_a_device_has_read(
    statuses: tuple[DeliveryStatus, ...],
) -> None:
    """What record_device_ack relies on to skip reading the setting (see
    receipts._delivery_states)."""

    def decide(enabled: bool) -> list[tuple[object, ...]]:
        records = [
            DeliveryRecord("m", "bob", f"d{i}", status, T0) for i, status in enumerate(statuses)
        ]
        state = delivery.RecipientDelivery.from_records(
            message_id="m",
            conversation_id="c",
            sender_id="alice",
            recipient_id="bob",
            records=records,
            reddit_only=False,
            read_receipts_enabled=enabled,
        )
        seen: list[tuple[object, ...]] = [(state.devices, state.receipts_sent)]
        for device in list(state.devices):
            decision = delivery.handle(state, delivery.DeviceAcked(device), T0)
            state = decision.state
            seen.append((decision.effects, state.devices, state.receipts_sent))
        return seen

    assert decide(True) == decide(False)


def test_the_read_receipt_setting_changes_nothing_accept_does() -> None:
    """What send_message relies on to skip reading the recipient."""

    def effects(enabled: bool) -> tuple[delivery.DeliveryEffect, ...]:
        return delivery.accept(
            message_id="m",
            conversation_id="c",
            sender_id="alice",
            recipient_id="bob",
            device_ids=["d1", "d2"],
            reddit_only=False,
            now=T0 + timedelta(seconds=1),
            read_receipts_enabled=enabled,
        ).effects

    assert effects(True) == effects(False)


async def test_side_by_side_returns_each_result_or_error_like_gather() -> None:
    async def value(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def fail(message: str) -> int:
        await asyncio.sleep(0)
        raise ValueError(message)

    side_by_side = messaging.side_by_side
    assert await side_by_side(value(1), value(2)) == (1, 2)
    first, second = await side_by_side(fail("a"), fail("b"))
    assert (str(first), str(second)) == ("a", "b")
    started = asyncio.Event()

    async def forever() -> int:
        started.set()
        await asyncio.Event().wait()
        return 0

    outer = asyncio.create_task(side_by_side(forever(), forever()))
    await started.wait()
    inner = [
        t for t in asyncio.all_tasks() if getattr(t.get_coro(), "cr_code", None) is forever.__code__
    ]
    assert len(inner) == 1  # the first runs as a task, the second in the caller's
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.sleep(0)
    assert inner[0].cancelled()  # no orphan left running
