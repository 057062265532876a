"""Storage contract: append (one transaction, idempotent replay), history pages,
Reddit import, deliveries, read marks, and concurrent senders."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import attrs
import pytest

from omninudge_core.errors import Conflict, InvalidFrame, NotFound
from omninudge_core.models import (
    DeliveryRecord,
    DeliveryStatus,
    EventKind,
    Message,
    Origin,
)
from omninudge_core.ports import Storage
from tests.contract.conftest import T0, Factory, new_id

# --- append ----------------------------------------------------------------------------


async def test_append_writes_message_deliveries_and_events(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    sender, recipient = conversation.participants
    before = {uid: await storage.events.last_seq(uid) for uid in (sender, recipient)}
    appended = await make.send(conversation, sender)
    message = appended.message
    assert appended.created
    assert await storage.messages.get(message.id) == message
    assert [e.user_id for e in appended.events] == [sender, recipient]
    for event in appended.events:
        assert event.kind is EventKind.MESSAGE
        assert event.message == message
        assert event.seq == before[event.user_id] + 1
        assert event.created_at.tzinfo is not None
        assert await storage.events.last_seq(event.user_id) == event.seq
        assert await storage.events.read(event.user_id, after=event.seq - 1, limit=5) == [event]
    (delivery,) = await storage.messages.deliveries(message.id)
    assert delivery.recipient_id == recipient
    assert delivery.status is DeliveryStatus.ACCEPTED
    assert delivery.updated_at == T0


async def test_replayed_client_msg_id_returns_original_and_writes_nothing(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    sender, recipient = conversation.participants
    first = await make.send(conversation, sender, client_msg_id="same")
    seq = await storage.events.last_seq(recipient)
    replay = await make.send(
        conversation, sender, client_msg_id="same", at=T0 + timedelta(minutes=1)
    )
    assert replay.created is False
    assert replay.message == first.message
    assert replay.events == ()
    assert await storage.events.last_seq(recipient) == seq
    page = await storage.messages.history(conversation.id, before=None, limit=10)
    assert page.items == (first.message,)
    stored = await storage.conversations.get(conversation.id)
    assert stored.last_message_at == T0


async def test_same_client_msg_id_from_two_senders_is_two_messages(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    a, b = conversation.participants
    first = await make.send(conversation, a, client_msg_id="shared")
    second = await make.send(conversation, b, client_msg_id="shared")
    assert first.created
    assert second.created
    assert first.message.id != second.message.id


async def test_append_to_unknown_conversation_raises_not_found(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    stray = attrs.evolve(
        make.message(conversation, conversation.participants[0]), conversation_id=new_id("c-")
    )
    with pytest.raises(NotFound):
        await storage.messages.append(stray, [], notify=[conversation.participants[0]])


async def test_append_with_taken_message_id_conflicts_and_writes_nothing(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    sender, recipient = conversation.participants
    first = await make.send(conversation, sender)
    seq = await storage.events.last_seq(recipient)
    clash = attrs.evolve(first.message, client_msg_id=new_id("cm-"))
    with pytest.raises(Conflict):
        await storage.messages.append(clash, [], notify=[recipient])
    assert await storage.events.last_seq(recipient) == seq


async def test_reddit_text_message_round_trips(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    message = make.message(
        conversation, conversation.participants[0], text="plain ünïcode ✓", reddit_fullname="t4_x1"
    )
    appended = await storage.messages.append(message, [], notify=[])
    assert appended == type(appended)(message=message, created=True, events=())
    stored = await storage.messages.get(message.id)
    assert stored == message
    assert stored.origin is Origin.REDDIT
    assert stored.envelope is None


async def test_get_unknown_message_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.messages.get(new_id("m-"))


# --- history ---------------------------------------------------------------------------


async def test_history_pages_newest_first_without_gaps_or_repeats(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    a, b = conversation.participants
    sent: list[Message] = []
    for index in range(11):
        # Several messages share a sent_at: the id breaks the tie.
        at = T0 + timedelta(seconds=index // 3)
        sent.append((await make.send(conversation, a if index % 2 else b, at=at)).message)
    expected = sorted(sent, key=lambda m: (m.sent_at, m.id), reverse=True)
    seen: list[Message] = []
    cursor = None
    pages = 0
    while True:
        page = await storage.messages.history(conversation.id, before=cursor, limit=4)
        pages += 1
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
        assert len(page.items) == 4
    assert seen == expected
    assert pages == 3


async def test_history_with_exact_page_has_no_next_cursor(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    sent = await make.send_many(conversation, conversation.participants[0], 3)
    page = await storage.messages.history(conversation.id, before=None, limit=3)
    assert page.items == tuple(reversed(sent))
    assert page.next_cursor is None


async def test_history_of_empty_conversation_is_empty(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    page = await storage.messages.history(conversation.id, before=None, limit=10)
    assert page.items == ()
    assert page.next_cursor is None


async def test_history_only_shows_its_conversation(storage: Storage, make: Factory) -> None:
    one, two = await make.conversation(), await make.conversation()
    mine = await make.send(one, one.participants[0])
    await make.send(two, two.participants[0])
    page = await storage.messages.history(one.id, before=None, limit=10)
    assert page.items == (mine.message,)


@pytest.mark.parametrize("cursor", ["", "%%%", "bm9wZQ", "WyJtIiwxLDJd", "WyJtIiwiYSIsImIiXQ"])
async def test_history_rejects_malformed_cursor(
    storage: Storage, make: Factory, cursor: str
) -> None:
    conversation = await make.conversation()
    with pytest.raises(InvalidFrame) as caught:
        await storage.messages.history(conversation.id, before=cursor, limit=5)
    assert caught.value.code == "invalid_cursor"


async def test_conversation_cursor_is_not_a_history_cursor(storage: Storage, make: Factory) -> None:
    me = await make.user()
    conversation = await make.conversation(me)
    await make.conversation(me)
    listing = await storage.conversations.list_for_user(me.id, before=None, limit=1)
    assert listing.next_cursor is not None
    with pytest.raises(InvalidFrame):
        await storage.messages.history(conversation.id, before=listing.next_cursor, limit=5)


# --- Reddit import ---------------------------------------------------------------------


async def test_import_reddit_is_idempotent_by_fullname(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    a, b = conversation.participants
    batch = [
        make.message(
            conversation,
            a if index % 2 else b,
            at=T0 + timedelta(minutes=index),
            reddit_fullname=f"t4_{index}",
            client_msg_id=f"reddit:t4_{index}",
        )
        for index in range(5)
    ]
    assert await storage.messages.import_reddit(conversation.id, batch[:3]) == 3
    # A retried import (new ids, same fullnames) adds only what is new.
    retried = [attrs.evolve(m, id=new_id("m-")) for m in batch[1:]]
    assert await storage.messages.import_reddit(conversation.id, retried) == 2
    assert await storage.messages.import_reddit(conversation.id, retried) == 0
    page = await storage.messages.history(conversation.id, before=None, limit=10)
    assert [m.reddit_fullname for m in page.items] == [f"t4_{i}" for i in reversed(range(5))]
    assert all(m.origin is Origin.REDDIT for m in page.items)
    stored = await storage.conversations.get(conversation.id)
    assert stored.last_message_at == T0 + timedelta(minutes=4)


async def test_import_reddit_skips_duplicates_within_one_batch(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    sender = conversation.participants[0]
    one = make.message(conversation, sender, reddit_fullname="t4_dup", client_msg_id="r1")
    twin = make.message(conversation, sender, reddit_fullname="t4_dup", client_msg_id="r2")
    assert await storage.messages.import_reddit(conversation.id, [one, twin]) == 1


async def test_import_reddit_writes_no_events(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    a, b = conversation.participants
    seqs = [await storage.events.last_seq(a), await storage.events.last_seq(b)]
    batch = [make.message(conversation, a, reddit_fullname="t4_quiet", client_msg_id="q")]
    assert await storage.messages.import_reddit(conversation.id, batch) == 1
    assert [await storage.events.last_seq(a), await storage.events.last_seq(b)] == seqs


async def test_import_reddit_into_unknown_conversation_raises_not_found(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    ghost = new_id("c-")
    message = attrs.evolve(
        make.message(conversation, conversation.participants[0], reddit_fullname="t4_g"),
        conversation_id=ghost,
    )
    with pytest.raises(NotFound):
        await storage.messages.import_reddit(ghost, [message])


async def test_same_fullname_in_two_conversations_is_two_messages(
    storage: Storage, make: Factory
) -> None:
    one, two = await make.conversation(), await make.conversation()
    m1 = make.message(one, one.participants[0], reddit_fullname="t4_same", client_msg_id="x")
    m2 = make.message(two, two.participants[0], reddit_fullname="t4_same", client_msg_id="x")
    assert await storage.messages.import_reddit(one.id, [m1]) == 1
    assert await storage.messages.import_reddit(two.id, [m2]) == 1


# --- deliveries ------------------------------------------------------------------------


async def test_set_deliveries_upserts_per_device(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    sender, recipient = conversation.participants
    message = (await make.send(conversation, sender)).message
    later = T0 + timedelta(seconds=3)
    delivered = DeliveryRecord(message.id, recipient, "d-1", DeliveryStatus.DELIVERED, later)
    second_device = DeliveryRecord(message.id, recipient, "d-2", DeliveryStatus.PUSHED, later)
    await storage.messages.set_deliveries([delivered, second_device])
    assert await storage.messages.deliveries(message.id) == [delivered, second_device]
    read = attrs.evolve(delivered, status=DeliveryStatus.READ)
    await storage.messages.set_deliveries([read])
    assert await storage.messages.deliveries(message.id) == [read, second_device]


async def test_reddit_relay_statuses_round_trip(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    sender, recipient = conversation.participants
    message = (await make.send(conversation, sender)).message
    for status in (DeliveryStatus.RELAYED_TO_REDDIT, DeliveryStatus.RELAY_FAILED):
        record = DeliveryRecord(message.id, recipient, "reddit", status, T0)
        await storage.messages.set_deliveries([record])
        assert record in await storage.messages.deliveries(message.id)


async def test_set_deliveries_for_unknown_message_raises_not_found(storage: Storage) -> None:
    record = DeliveryRecord(new_id("m-"), "u", "d", DeliveryStatus.PUSHED, T0)
    with pytest.raises(NotFound):
        await storage.messages.set_deliveries([record])


async def test_deliveries_of_unknown_message_are_empty(storage: Storage) -> None:
    assert await storage.messages.deliveries(new_id("m-")) == []


# --- read marks ------------------------------------------------------------------------


async def test_mark_read_returns_newly_covered_messages_of_the_other_oldest_first(
    storage: Storage, make: Factory
) -> None:
    me, friend = await make.user(), await make.user()
    conversation = await make.conversation(me, friend)
    theirs = await make.send_many(conversation, friend.id, 5)
    mine = await make.send(conversation, me.id, at=T0 + timedelta(seconds=2, microseconds=1))
    assert mine.created
    covered = await storage.messages.mark_read(conversation.id, me.id, theirs[2].id)
    assert covered == theirs[:3]
    covered = await storage.messages.mark_read(conversation.id, me.id, theirs[4].id)
    assert covered == theirs[3:]


async def test_mark_read_never_moves_backwards(storage: Storage, make: Factory) -> None:
    me, friend = await make.user(), await make.user()
    conversation = await make.conversation(me, friend)
    theirs = await make.send_many(conversation, friend.id, 3)
    assert await storage.messages.mark_read(conversation.id, me.id, theirs[2].id) == theirs
    assert await storage.messages.mark_read(conversation.id, me.id, theirs[0].id) == []
    assert await storage.messages.mark_read(conversation.id, me.id, theirs[2].id) == []
    later = await make.send(conversation, friend.id, at=T0 + timedelta(minutes=1))
    assert await storage.messages.mark_read(conversation.id, me.id, later.message.id) == [
        later.message
    ]


async def test_mark_read_is_per_user(storage: Storage, make: Factory) -> None:
    me, friend = await make.user(), await make.user()
    conversation = await make.conversation(me, friend)
    mine = await make.send_many(conversation, me.id, 2)
    theirs = await make.send_many(conversation, friend.id, 2, start=T0 + timedelta(minutes=1))
    assert await storage.messages.mark_read(conversation.id, me.id, theirs[1].id) == theirs
    assert await storage.messages.mark_read(conversation.id, friend.id, theirs[1].id) == mine


async def test_mark_read_with_message_of_another_conversation_raises_not_found(
    storage: Storage, make: Factory
) -> None:
    one, two = await make.conversation(), await make.conversation()
    elsewhere = await make.send(two, two.participants[0])
    with pytest.raises(NotFound):
        await storage.messages.mark_read(one.id, one.participants[0], elsewhere.message.id)
    with pytest.raises(NotFound):
        await storage.messages.mark_read(one.id, one.participants[0], new_id("m-"))


# --- concurrency -----------------------------------------------------------------------


async def test_fifty_concurrent_senders_lose_nothing_and_keep_seq_gap_free(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    a, b = conversation.participants
    start = {uid: await storage.events.last_seq(uid) for uid in (a, b)}
    results = await asyncio.gather(
        *(
            make.send(conversation, a if index % 2 else b, at=T0 + timedelta(milliseconds=index))
            for index in range(50)
        )
    )
    assert all(result.created for result in results)
    page = await storage.messages.history(conversation.id, before=None, limit=100)
    assert {m.id for m in page.items} == {r.message.id for r in results}
    for uid in (a, b):
        events = await storage.events.read(uid, after=start[uid], limit=100)
        assert [e.seq for e in events] == list(range(start[uid] + 1, start[uid] + 51))
        assert {e.message.id for e in events if e.message} == {r.message.id for r in results}
        assert await storage.events.last_seq(uid) == start[uid] + 50
        returned = sorted(e.seq for r in results for e in r.events if e.user_id == uid)
        assert returned == list(range(start[uid] + 1, start[uid] + 51))


async def test_concurrent_replays_of_one_client_msg_id_create_one_message(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    sender = conversation.participants[0]
    results = await asyncio.gather(
        *(make.send(conversation, sender, client_msg_id="retry") for _ in range(10))
    )
    assert sum(result.created for result in results) == 1
    assert len({result.message.id for result in results}) == 1


async def test_deliveries_many_matches_deliveries_per_message(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    sender, recipient = conversation.participants
    first = (await make.send(conversation, sender)).message
    second = (await make.send(conversation, recipient)).message
    later = T0 + timedelta(seconds=3)
    await storage.messages.set_deliveries(
        [
            DeliveryRecord(first.id, recipient, "d-2", DeliveryStatus.PUSHED, later),
            DeliveryRecord(first.id, recipient, "d-1", DeliveryStatus.DELIVERED, later),
        ]
    )
    unknown = new_id("m-")
    found = await storage.messages.deliveries_many([second.id, unknown, first.id])
    assert list(found) == [second.id, unknown, first.id]
    assert found[first.id] == await storage.messages.deliveries(first.id)
    assert [r.device_id for r in found[first.id]] == ["d-1", "d-2"]
    assert found[second.id] == await storage.messages.deliveries(second.id)
    assert found[unknown] == []
    assert await storage.messages.deliveries_many([]) == {}
