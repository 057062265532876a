"""Blocking rules (API.md "Users, devices, blocks").

A block is directional (blocker -> blocked) but its effect is mutual: a block in
*either* direction forbids messaging, typing indicators, presence and driving a shared
slideshow between the two people. Existing history stays readable to both; a block
never deletes anything. Presence is further hidden by the subject's own
``presence_visible`` setting, and read receipts by the reader's ``read_receipts``.

The block relation is a set of ``(blocker_id, blocked_id)`` pairs, as the shell loads it
from ``BlockStore`` (or builds it from ``Block`` models with ``relation_from``).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import TypeAlias

from omninudge_core.errors import Blocked
from omninudge_core.models import Block, UserId, UserSettings

__all__ = [
    "BlockRelation",
    "blocked_between",
    "ensure_may_drive_slideshow",
    "ensure_may_message",
    "may_drive_slideshow",
    "may_message",
    "may_read_history",
    "may_see_presence",
    "may_see_typing",
    "relation_from",
    "sends_read_receipt",
]

BlockRelation: TypeAlias = AbstractSet[tuple[UserId, UserId]]
"""``(blocker_id, blocked_id)`` pairs."""


def relation_from(blocks: Iterable[Block]) -> frozenset[tuple[UserId, UserId]]:
    """The block relation of some ``Block`` records."""
    return frozenset((b.blocker_id, b.blocked_id) for b in blocks)


def blocked_between(blocks: BlockRelation, a: UserId, b: UserId) -> bool:
    """True when either user blocks the other."""
    return (a, b) in blocks or (b, a) in blocks


def may_message(blocks: BlockRelation, sender: UserId, recipient: UserId) -> bool:
    """A message may be sent unless a block stands between the two, in either direction."""
    return not blocked_between(blocks, sender, recipient)


def may_see_typing(blocks: BlockRelation, viewer: UserId, typist: UserId) -> bool:
    """Typing indicators follow the messaging rule: no block in either direction."""
    return not blocked_between(blocks, viewer, typist)


def may_see_presence(
    blocks: BlockRelation,
    viewer: UserId,
    subject: UserId,
    subject_settings: UserSettings,
) -> bool:
    """Whether ``viewer`` may learn ``subject``'s online status and last seen.

    Everyone sees their own presence. Otherwise the subject must show presence
    (``presence_visible``) and no block may stand between the two.
    """
    if viewer == subject:
        return True
    return subject_settings.presence_visible and not blocked_between(blocks, viewer, subject)


def may_drive_slideshow(blocks: BlockRelation, actor: UserId, other: UserId) -> bool:
    """A participant may start or navigate a shared slideshow unless a block stands
    between them and the other participant (the slideshow machine checks membership)."""
    return not blocked_between(blocks, actor, other)


def may_read_history(blocks: BlockRelation, reader: UserId, other: UserId) -> bool:
    """History stays: a block never hides messages already exchanged."""
    del blocks, reader, other  # deliberately independent of blocks
    return True


def sends_read_receipt(
    blocks: BlockRelation, reader: UserId, reader_settings: UserSettings, sender: UserId
) -> bool:
    """A read receipt goes to the sender only when the reader has receipts enabled and
    no block stands between them (a receipt is a live signal, like presence)."""
    return reader_settings.read_receipts and not blocked_between(blocks, reader, sender)


def ensure_may_message(blocks: BlockRelation, sender: UserId, recipient: UserId) -> None:
    """Raises Blocked when a block forbids ``sender`` messaging ``recipient``."""
    if not may_message(blocks, sender, recipient):
        raise Blocked("a block between these users forbids messaging")


def ensure_may_drive_slideshow(blocks: BlockRelation, actor: UserId, other: UserId) -> None:
    """Raises Blocked when a block forbids ``actor`` driving a slideshow with ``other``."""
    if not may_drive_slideshow(blocks, actor, other):
        raise Blocked("a block between these users forbids the shared slideshow")
