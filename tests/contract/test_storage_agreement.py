"""Differential test: random send / replay / import / read / page sequences give the
same observable results on every backend as on the in-memory reference."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omninudge_adapters.memory.storage import MemoryStorage, open_memory_storage
from omninudge_core.models import (
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    Message,
    Origin,
    StreamEvent,
    User,
)
from omninudge_core.ports import Storage
from tests.contract.conftest import T0, envelope

ENVELOPE = envelope("d", ["d1"])

send = st.tuples(
    st.just("send"),
    st.integers(0, 1),  # sender
    st.integers(0, 4),  # seconds after T0: collisions make ties that ids must break
    st.sampled_from(["c0", "c1", "c2", "c3", "c4", "c5"]),  # replays happen
)
import_ = st.tuples(
    st.just("import"),
    st.integers(0, 1),
    st.integers(0, 4),
    st.sampled_from(["t4_a", "t4_b", "t4_c"]),
)
read = st.tuples(st.just("read"), st.integers(0, 1), st.integers(0, 40), st.just(""))
page = st.tuples(st.just("page"), st.integers(0, 1), st.integers(1, 4), st.just(""))
steps = st.lists(st.one_of(send, import_, read, page), max_size=20)


@pytest.fixture(scope="module")
async def reference() -> AsyncIterator[MemoryStorage]:
    async with open_memory_storage() as memory:
        yield memory


def _event_view(event: StreamEvent) -> tuple[object, ...]:
    # created_at comes from each adapter's clock: not part of the comparison.
    return (event.user_id, event.seq, event.kind, event.message, event.payload)


async def _setup(store: Storage, tag: str) -> Conversation:
    for side in "ab":
        await store.users.create(
            User(id=f"u-{tag}-{side}", username=f"{side}_{tag}", created_at=T0)
        )
    conversation, _ = await store.conversations.get_or_create(
        Conversation(
            id=f"c-{tag}",
            participants=(f"u-{tag}-a", f"u-{tag}-b"),
            kind=ConversationKind.PLATFORM,
            created_at=T0,
        )
    )
    return conversation


async def _observe(
    store: Storage,
    conversation: Conversation,
    step: tuple[object, ...],
    index: int,
    tag: str,
    sent: list[str],
) -> object:
    """Perform one step; return everything it lets a caller observe."""
    kind, who, number, label = step
    assert isinstance(who, int)
    assert isinstance(number, int)
    assert isinstance(label, str)
    user_id = conversation.participants[who]
    if kind == "send":
        message = Message(
            id=f"m-{tag}-{index}",
            conversation_id=conversation.id,
            sender_id=user_id,
            client_msg_id=label,
            origin=Origin.PLATFORM,
            sent_at=T0 + timedelta(seconds=number),
            envelope=attrs.evolve(ENVELOPE, ct=f"ct-{index}"),
        )
        delivery = DeliveryRecord(
            message.id, conversation.other(user_id), "d1", DeliveryStatus.ACCEPTED, T0
        )
        appended = await store.messages.append(message, [delivery], conversation.participants)
        if appended.created:
            sent.append(message.id)
        return (appended.message, appended.created, [_event_view(e) for e in appended.events])
    if kind == "import":
        message = Message(
            id=f"m-{tag}-{index}",
            conversation_id=conversation.id,
            sender_id=user_id,
            client_msg_id=f"reddit-{index}",
            origin=Origin.REDDIT,
            sent_at=T0 + timedelta(seconds=number),
            text="imported",
            reddit_fullname=label,
        )
        added = await store.messages.import_reddit(conversation.id, [message])
        if added:
            sent.append(message.id)
        return added
    if kind == "read":
        if not sent:
            return None
        return await store.messages.mark_read(conversation.id, user_id, sent[number % len(sent)])
    # page: walk the whole history, and the user's conversation list
    walked: list[Message] = []
    cursor = None
    while True:
        history = await store.messages.history(conversation.id, before=cursor, limit=number)
        walked.extend(history.items)
        cursor = history.next_cursor
        if cursor is None:
            break
    listing = await store.conversations.list_for_user(user_id, before=None, limit=5)
    unread = [(v.conversation, v.unread) for v in listing.items]
    events = await store.events.read(user_id, after=0, limit=1000)
    return (walked, unread, [_event_view(e) for e in events], await store.events.last_seq(user_id))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(script=steps)
async def test_backend_agrees_with_memory_reference(
    storage: Storage, reference: MemoryStorage, script: list[tuple[object, ...]]
) -> None:
    tag = uuid.uuid4().hex[:16]
    mine, theirs = await _setup(storage, tag), await _setup(reference, tag)
    sent_mine: list[str] = []
    sent_reference: list[str] = []
    for index, step in enumerate([*script, ("page", 0, 3, ""), ("page", 1, 2, "")]):
        observed = await _observe(storage, mine, step, index, tag, sent_mine)
        expected = await _observe(reference, theirs, step, index, tag, sent_reference)
        assert observed == expected, f"step {index}: {step}"
