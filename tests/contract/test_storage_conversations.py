"""Storage contract: conversations, listing with unread counts, read marks, upgrade state.

Listing order (every backend): newest activity first, where activity is
``last_message_at`` or, for a conversation without messages, ``created_at``; ties by
id descending.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from omninudge_core.errors import Conflict, InvalidFrame, NotFound
from omninudge_core.models import Conversation, ConversationKind, UpgradeState
from omninudge_core.ports import Storage
from tests.contract.conftest import T0, Factory, new_id


async def test_get_or_create_inserts_once_per_pair(storage: Storage, make: Factory) -> None:
    a, b = await make.user(), await make.user()
    first = Conversation(
        id=new_id("c-"), participants=(a.id, b.id), kind=ConversationKind.PLATFORM, created_at=T0
    )
    assert await storage.conversations.get_or_create(first) == (first, True)
    reversed_pair = Conversation(
        id=new_id("c-"), participants=(b.id, a.id), kind=ConversationKind.REDDIT, created_at=T0
    )
    assert await storage.conversations.get_or_create(reversed_pair) == (first, False)
    assert await storage.conversations.get(first.id) == first
    assert await storage.conversations.for_pair(b.id, a.id) == first


async def test_concurrent_get_or_create_yields_one_conversation(
    storage: Storage, make: Factory
) -> None:
    a, b = await make.user(), await make.user()
    candidates = [
        Conversation(
            id=new_id("c-"),
            participants=(a.id, b.id),
            kind=ConversationKind.PLATFORM,
            created_at=T0,
        )
        for _ in range(10)
    ]
    results = await asyncio.gather(*(storage.conversations.get_or_create(c) for c in candidates))
    assert len({conversation.id for conversation, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_conversation_id_of_another_pair_conflicts(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation()
    c, d = await make.user(), await make.user()
    clash = Conversation(
        id=conversation.id,
        participants=(c.id, d.id),
        kind=ConversationKind.PLATFORM,
        created_at=T0,
    )
    with pytest.raises(Conflict):
        await storage.conversations.get_or_create(clash)


async def test_get_unknown_conversation_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.conversations.get(new_id("c-"))


async def test_for_pair_without_conversation_is_none(storage: Storage, make: Factory) -> None:
    a, b = await make.user(), await make.user()
    assert await storage.conversations.for_pair(a.id, b.id) is None


async def test_upgrade_state_walks_every_state(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation(
        kind=ConversationKind.REDDIT, upgrade_state=UpgradeState.REDDIT_ONLY
    )
    assert (await storage.conversations.get(conversation.id)).upgrade_state is (
        UpgradeState.REDDIT_ONLY
    )
    for state in (
        UpgradeState.INVITED,
        UpgradeState.JOINED,
        UpgradeState.IMPORTING,
        UpgradeState.UPGRADED,
    ):
        updated = await storage.conversations.set_upgrade_state(conversation.id, state)
        assert updated.upgrade_state is state
        assert await storage.conversations.get(conversation.id) == updated
    assert updated.kind is ConversationKind.REDDIT


async def test_set_upgrade_state_of_unknown_conversation_raises_not_found(
    storage: Storage,
) -> None:
    with pytest.raises(NotFound):
        await storage.conversations.set_upgrade_state(new_id("c-"), UpgradeState.INVITED)


async def test_append_bumps_last_message_at_but_never_backwards(
    storage: Storage, make: Factory
) -> None:
    conversation = await make.conversation()
    sender = conversation.participants[0]
    assert conversation.last_message_at is None
    await make.send(conversation, sender, at=T0 + timedelta(minutes=2))
    await make.send(conversation, sender, at=T0 + timedelta(minutes=1))
    stored = await storage.conversations.get(conversation.id)
    assert stored.last_message_at == T0 + timedelta(minutes=2)


async def test_list_for_user_orders_by_newest_activity(storage: Storage, make: Factory) -> None:
    me = await make.user()
    quiet_old = await make.conversation(me, at=T0)
    quiet_new = await make.conversation(me, at=T0 + timedelta(hours=2))
    busy = await make.conversation(me, at=T0 - timedelta(days=1))
    await make.send(busy, busy.other(me.id), at=T0 + timedelta(hours=1))
    page = await storage.conversations.list_for_user(me.id, before=None, limit=10)
    assert [view.conversation.id for view in page.items] == [quiet_new.id, busy.id, quiet_old.id]
    assert page.next_cursor is None


async def test_list_for_user_only_lists_own_conversations(storage: Storage, make: Factory) -> None:
    me, stranger = await make.user(), await make.user()
    await make.conversation(stranger)
    assert (await storage.conversations.list_for_user(me.id, before=None, limit=10)).items == ()


async def test_list_for_user_pages_without_gaps_or_repeats(storage: Storage, make: Factory) -> None:
    me = await make.user()
    made = []
    for index in range(7):
        made.append(await make.conversation(me, at=T0 + timedelta(seconds=index % 3)))
    # Ties on activity are broken by id, descending.
    expected = sorted(made, key=lambda c: (c.created_at, c.id), reverse=True)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await storage.conversations.list_for_user(me.id, before=cursor, limit=3)
        seen.extend(view.conversation.id for view in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [c.id for c in expected]


async def test_list_for_user_with_exact_page_has_no_next_cursor(
    storage: Storage, make: Factory
) -> None:
    me = await make.user()
    for _ in range(2):
        await make.conversation(me)
    page = await storage.conversations.list_for_user(me.id, before=None, limit=2)
    assert len(page.items) == 2
    assert page.next_cursor is None


@pytest.mark.parametrize("cursor", ["", "not a cursor", "!!!!", "eyJhIjoxfQ", "W10"])
async def test_list_for_user_rejects_malformed_cursor(
    storage: Storage, make: Factory, cursor: str
) -> None:
    me = await make.user()
    with pytest.raises(InvalidFrame) as caught:
        await storage.conversations.list_for_user(me.id, before=cursor, limit=5)
    assert caught.value.code == "invalid_cursor"


async def test_unread_counts_messages_from_the_other_after_the_read_mark(
    storage: Storage, make: Factory
) -> None:
    me, friend = await make.user(), await make.user()
    conversation = await make.conversation(me, friend)
    theirs = await make.send_many(conversation, friend.id, 4)
    await make.send(conversation, me.id, at=T0 + timedelta(minutes=5))

    async def unread(user_id: str) -> int:
        page = await storage.conversations.list_for_user(user_id, before=None, limit=50)
        (view,) = [v for v in page.items if v.conversation.id == conversation.id]
        return view.unread

    assert await unread(me.id) == 4
    assert await unread(friend.id) == 1
    await storage.messages.mark_read(conversation.id, me.id, theirs[1].id)
    assert await unread(me.id) == 2
    await storage.messages.mark_read(conversation.id, me.id, theirs[3].id)
    assert await unread(me.id) == 0
    assert await unread(friend.id) == 1
