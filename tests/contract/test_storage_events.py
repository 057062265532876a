"""Storage contract: the per-user durable event stream."""

from __future__ import annotations

import asyncio

import pytest

from omninudge_core.errors import NotFound
from omninudge_core.models import EventKind
from omninudge_core.ports import NewEvent, Storage
from tests.contract.conftest import Factory, new_id


async def test_stream_of_unknown_user_is_empty(storage: Storage) -> None:
    user_id = new_id("u-")
    assert await storage.events.last_seq(user_id) == 0
    assert await storage.events.read(user_id, after=0, limit=10) == []


async def test_append_assigns_per_user_seq_in_given_order(storage: Storage) -> None:
    alice, bob = new_id("u-"), new_id("u-")
    payload = {"message_id": "m1", "user_id": bob, "status": "read", "nested": {"n": [1, 2.5]}}
    appended = await storage.events.append(
        [
            NewEvent(user_id=alice, kind=EventKind.RECEIPT, payload=payload),
            NewEvent(user_id=bob, kind=EventKind.UPGRADE, payload={"conversation_id": "c"}),
            NewEvent(user_id=alice, kind=EventKind.SLIDESHOW, payload={"state": None}),
        ]
    )
    assert [(e.user_id, e.seq, e.kind) for e in appended] == [
        (alice, 1, EventKind.RECEIPT),
        (bob, 1, EventKind.UPGRADE),
        (alice, 2, EventKind.SLIDESHOW),
    ]
    assert appended[0].payload == payload
    assert appended[2].payload == {"state": None}
    assert all(e.message is None and e.created_at.tzinfo is not None for e in appended)
    assert await storage.events.read(alice, after=0, limit=10) == [appended[0], appended[2]]
    assert await storage.events.last_seq(alice) == 2
    assert await storage.events.last_seq(bob) == 1


async def test_read_honours_after_and_limit(storage: Storage) -> None:
    user_id = new_id("u-")
    appended = await storage.events.append(
        [NewEvent(user_id=user_id, kind=EventKind.RECEIPT, payload={"i": i}) for i in range(8)]
    )
    assert [e.seq for e in appended] == list(range(1, 9))
    assert await storage.events.read(user_id, after=2, limit=3) == appended[2:5]
    assert await storage.events.read(user_id, after=6, limit=10) == appended[6:]
    assert await storage.events.read(user_id, after=8, limit=10) == []


async def test_message_events_resolve_their_message(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    sent = await make.send(conversation, conversation.participants[0])
    user_id = new_id("u-")
    (event,) = await storage.events.append(
        [NewEvent(user_id=user_id, kind=EventKind.MESSAGE, message_id=sent.message.id)]
    )
    assert event.message == sent.message
    assert event.payload is None
    assert await storage.events.read(user_id, after=0, limit=1) == [event]


async def test_message_event_for_unknown_message_raises_not_found_and_writes_nothing(
    storage: Storage,
) -> None:
    user_id = new_id("u-")
    with pytest.raises(NotFound):
        await storage.events.append(
            [
                NewEvent(user_id=user_id, kind=EventKind.RECEIPT, payload={}),
                NewEvent(user_id=user_id, kind=EventKind.MESSAGE, message_id=new_id("m-")),
            ]
        )
    assert await storage.events.last_seq(user_id) == 0


async def test_concurrent_appends_keep_seq_gap_free(storage: Storage) -> None:
    user_id = new_id("u-")
    batches = await asyncio.gather(
        *(
            storage.events.append(
                [NewEvent(user_id=user_id, kind=EventKind.RECEIPT, payload={"b": b})] * 2
            )
            for b in range(20)
        )
    )
    seqs = sorted(e.seq for batch in batches for e in batch)
    assert seqs == list(range(1, 41))
    for batch in batches:
        assert batch[1].seq == batch[0].seq + 1  # one transaction: a batch is contiguous
    assert [e.seq for e in await storage.events.read(user_id, after=0, limit=100)] == seqs
