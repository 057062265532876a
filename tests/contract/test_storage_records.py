"""Storage contract: media metadata and access, invitations, migration states, Reddit
tokens, ping."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from omninudge_core.errors import Conflict, NotFound
from omninudge_core.migration import is_finished
from omninudge_core.models import (
    ConversationKind,
    Invitation,
    Media,
    MediaKind,
    RedditTokens,
    UpgradeState,
)
from omninudge_core.ports import Storage
from tests.contract.conftest import T0, Factory, new_id


def media_of(owner_id: str, *, full: bool = True) -> Media:
    media_id = new_id("media-")
    if not full:
        return Media(
            id=media_id,
            owner_id=owner_id,
            kind=MediaKind.VIDEO,
            content_type="video/mp4",
            size=1,
            blob_key=f"videos/{owner_id}/{media_id}.mp4",
            created_at=T0,
        )
    return Media(
        id=media_id,
        owner_id=owner_id,
        kind=MediaKind.IMAGE,
        content_type="image/png",
        size=123_456,
        blob_key=f"images/{owner_id}/1_{media_id}.png",
        created_at=T0,
        width=640,
        height=480,
        thumbnail_key=f"images/thumbnails/{media_id}_thumb.webp",
        thumbnail_content_type="image/webp",
    )


# --- media -----------------------------------------------------------------------------


async def test_media_round_trips(storage: Storage, make: Factory) -> None:
    owner = await make.user()
    for media in (media_of(owner.id), media_of(owner.id, full=False)):
        await storage.media.create(media)
        assert await storage.media.get(media.id) == media


async def test_media_id_is_unique(storage: Storage, make: Factory) -> None:
    owner = await make.user()
    media = media_of(owner.id)
    await storage.media.create(media)
    with pytest.raises(Conflict):
        await storage.media.create(attrs.evolve(media, size=1))
    assert await storage.media.get(media.id) == media


async def test_get_unknown_media_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.media.get(new_id("media-"))


async def test_media_access_uploader_and_participants_of_shared_conversations(
    storage: Storage, make: Factory
) -> None:
    owner, friend, stranger = await make.user(), await make.user(), await make.user()
    media = media_of(owner.id)
    await storage.media.create(media)
    assert await storage.media.can_access(media.id, owner.id)
    assert not await storage.media.can_access(media.id, friend.id)
    conversation = await make.conversation(owner, friend)
    await storage.media.share(media.id, conversation.id)
    await storage.media.share(media.id, conversation.id)  # idempotent
    assert await storage.media.can_access(media.id, friend.id)
    assert not await storage.media.can_access(media.id, stranger.id)
    assert not await storage.media.can_access(new_id("media-"), owner.id)


async def test_share_unknown_media_or_conversation_raises_not_found(
    storage: Storage, make: Factory
) -> None:
    owner = await make.user()
    conversation = await make.conversation(owner)
    media = media_of(owner.id)
    await storage.media.create(media)
    with pytest.raises(NotFound):
        await storage.media.share(new_id("media-"), conversation.id)
    with pytest.raises(NotFound):
        await storage.media.share(media.id, new_id("c-"))


async def test_deleted_media_is_gone_with_its_shares(storage: Storage, make: Factory) -> None:
    owner, friend = await make.user(), await make.user()
    conversation = await make.conversation(owner, friend)
    media = media_of(owner.id)
    await storage.media.create(media)
    await storage.media.share(media.id, conversation.id)
    await storage.media.delete(media.id)
    await storage.media.delete(media.id)  # idempotent
    with pytest.raises(NotFound):
        await storage.media.get(media.id)
    assert not await storage.media.can_access(media.id, owner.id)
    assert not await storage.media.can_access(media.id, friend.id)


# --- invitations -----------------------------------------------------------------------


async def test_invitation_accepts_once(storage: Storage, make: Factory) -> None:
    inviter = await make.user()
    conversation = await make.conversation(inviter, kind=ConversationKind.REDDIT)
    invitation = Invitation(
        token=new_id("tok-"),
        conversation_id=conversation.id,
        inviter_id=inviter.id,
        reddit_username="Someone_On_Reddit",
        created_at=T0,
    )
    await storage.invitations.create(invitation)
    assert await storage.invitations.get(invitation.token) == invitation
    first_at = T0 + timedelta(hours=1)
    accepted = await storage.invitations.accept(invitation.token, first_at)
    assert accepted == attrs.evolve(invitation, accepted_at=first_at)
    again = await storage.invitations.accept(invitation.token, first_at + timedelta(hours=1))
    assert again.accepted_at == first_at
    assert (await storage.invitations.get(invitation.token)).accepted_at == first_at


async def test_invitation_token_is_unique(storage: Storage, make: Factory) -> None:
    inviter = await make.user()
    conversation = await make.conversation(inviter)
    invitation = Invitation(new_id("tok-"), conversation.id, inviter.id, "someone", T0)
    await storage.invitations.create(invitation)
    with pytest.raises(Conflict):
        await storage.invitations.create(invitation)


async def test_unknown_invitation_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.invitations.get(new_id("tok-"))
    with pytest.raises(NotFound):
        await storage.invitations.accept(new_id("tok-"), T0)


# --- migration states ------------------------------------------------------------------


async def test_migration_state_saves_loads_and_overwrites(storage: Storage, make: Factory) -> None:
    conversation = await make.conversation(upgrade_state=UpgradeState.IMPORTING)
    assert await storage.migrations.load(conversation.id) is None
    state = {"state": "importing", "cursor": {"box": "inbox", "after": "t4_9"}, "seen": [1, 2]}
    await storage.migrations.save(conversation.id, state)
    assert await storage.migrations.load(conversation.id) == state
    moved = {"state": "importing", "cursor": {"box": "sent", "after": None}, "seen": []}
    await storage.migrations.save(conversation.id, moved)
    assert await storage.migrations.load(conversation.id) == moved


async def test_save_migration_of_unknown_conversation_raises_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.migrations.save(new_id("c-"), {"state": "invited"})


async def test_unfinished_lists_migrations_until_a_final_state_is_saved(
    storage: Storage, make: Factory
) -> None:
    """Finality is the core's ``migration.is_finished`` of the saved state, not the
    conversation's upgrade_state (the shell sets that to UPGRADED before it persists
    the final state: a crash in between must leave the migration to resume)."""
    running = await make.conversation(upgrade_state=UpgradeState.INVITED)
    crashed = await make.conversation(upgrade_state=UpgradeState.IMPORTING)
    never_saved = await make.conversation(upgrade_state=UpgradeState.REDDIT_ONLY)
    invited = {"v": 1, "state": "invited"}
    storing = {"v": 1, "state": "storing"}
    upgraded = {"v": 1, "state": "upgraded"}
    assert not is_finished(storing)
    assert is_finished(upgraded)
    await storage.migrations.save(running.id, invited)
    await storage.migrations.save(crashed.id, storing)
    await storage.conversations.set_upgrade_state(crashed.id, UpgradeState.UPGRADED)
    unfinished = await storage.migrations.unfinished()
    assert running.id in unfinished
    assert crashed.id in unfinished
    assert never_saved.id not in unfinished
    assert unfinished == sorted(unfinished)
    await storage.migrations.save(crashed.id, upgraded)
    unfinished = await storage.migrations.unfinished()
    assert running.id in unfinished
    assert crashed.id not in unfinished


# --- Reddit tokens ---------------------------------------------------------------------


async def test_reddit_tokens_put_get_replace_delete(storage: Storage, make: Factory) -> None:
    user = await make.user()
    assert await storage.reddit_tokens.get(user.id) is None
    tokens = RedditTokens(
        user_id=user.id,
        refresh_token_ciphertext=bytes(range(256)),
        scope="identity read privatemessages history",
        updated_at=T0,
    )
    await storage.reddit_tokens.put(tokens)
    assert await storage.reddit_tokens.get(user.id) == tokens
    refreshed = attrs.evolve(
        tokens,
        access_token_ciphertext=b"\x00access\xff",
        access_expires_at=T0 + timedelta(hours=1),
        updated_at=T0 + timedelta(minutes=1),
    )
    await storage.reddit_tokens.put(refreshed)
    assert await storage.reddit_tokens.get(user.id) == refreshed
    await storage.reddit_tokens.delete(user.id)
    await storage.reddit_tokens.delete(user.id)  # idempotent
    assert await storage.reddit_tokens.get(user.id) is None


# --- health ----------------------------------------------------------------------------


async def test_ping_answers(storage: Storage) -> None:
    assert await storage.ping() is None
