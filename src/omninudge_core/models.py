"""The domain model: frozen attrs classes, changed with ``attrs.evolve``.

Times are timezone-aware UTC ``datetime`` values handed in by the shell (the core
never reads a clock). Ids are strings created by the shell (the core never draws
randomness). Serialization lives in ``omninudge_core.codec``, not here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import TypeAlias

import attrs

__all__ = [
    "Block",
    "Conversation",
    "ConversationKind",
    "DeliveryRecord",
    "DeliveryStatus",
    "Device",
    "Envelope",
    "EventKind",
    "Instant",
    "Invitation",
    "Jwk",
    "Media",
    "MediaKind",
    "Message",
    "Origin",
    "RedditMessage",
    "RedditTokens",
    "StreamEvent",
    "UpgradeState",
    "User",
    "UserSettings",
    "WrappedKey",
    "pair_key",
]

Instant: TypeAlias = datetime
"""A timezone-aware UTC time handed in by the shell."""

UserId: TypeAlias = str
DeviceId: TypeAlias = str
ConversationId: TypeAlias = str
MessageId: TypeAlias = str
MediaId: TypeAlias = str

Jwk: TypeAlias = Mapping[str, str]
"""A public JSON Web Key (EC P-256: ``kty``, ``crv``, ``x``, ``y``)."""


# --- users, devices, blocks ------------------------------------------------------------


@attrs.frozen
class UserSettings:
    read_receipts: bool = True
    presence_visible: bool = True


@attrs.frozen
class User:
    """A person. ``on_platform`` is False for a Reddit-only person we have messaged
    through Reddit (a placeholder that becomes a full account when they join)."""

    id: UserId
    username: str
    created_at: Instant
    reddit_id: str | None = None
    on_platform: bool = True
    settings: UserSettings = UserSettings()


@attrs.frozen
class Device:
    """One of a user's devices with its public keys (ECDH to receive, ECDSA to sign)."""

    user_id: UserId
    device_id: DeviceId
    public_key: Jwk
    signing_key: Jwk
    name: str
    created_at: Instant


@attrs.frozen
class Block:
    blocker_id: UserId
    blocked_id: UserId
    created_at: Instant


# --- conversations and messages --------------------------------------------------------


class ConversationKind(enum.Enum):
    PLATFORM = "platform"
    REDDIT = "reddit"


class UpgradeState(enum.Enum):
    """Where a conversation with a Reddit-only person stands (see ``migration``)."""

    NONE = "none"  # both people were on the platform from the start
    REDDIT_ONLY = "reddit_only"
    INVITED = "invited"
    JOINED = "joined"
    IMPORTING = "importing"
    UPGRADED = "upgraded"


def pair_key(a: UserId, b: UserId) -> tuple[UserId, UserId]:
    """The canonical (sorted) participant pair: one conversation per pair."""
    return (a, b) if a <= b else (b, a)


def _as_pair(participants: tuple[UserId, UserId]) -> tuple[UserId, UserId]:
    return pair_key(*participants)


@attrs.frozen
class Conversation:
    id: ConversationId
    participants: tuple[UserId, UserId] = attrs.field(converter=_as_pair)
    kind: ConversationKind
    created_at: Instant
    upgrade_state: UpgradeState = UpgradeState.NONE
    last_message_at: Instant | None = None

    def other(self, user_id: UserId) -> UserId:
        """The participant who is not ``user_id``."""
        a, b = self.participants
        return b if user_id == a else a

    def has(self, user_id: UserId) -> bool:
        return user_id in self.participants


class Origin(enum.Enum):
    PLATFORM = "platform"  # end-to-end encrypted envelope
    REDDIT = "reddit"  # plaintext relayed through, or imported from, Reddit


@attrs.frozen
class WrappedKey:
    """The content key wrapped for one device (API.md envelope v1 ``keys[]``)."""

    device: DeviceId
    iv: str
    wk: str


@attrs.frozen
class Envelope:
    """An opaque E2E envelope (API.md v1). The server checks structure only."""

    v: int
    alg: str
    sender_device: DeviceId
    epk: str
    iv: str
    ct: str
    keys: tuple[WrappedKey, ...]
    sig: str

    def devices(self) -> frozenset[DeviceId]:
        return frozenset(k.device for k in self.keys)


@attrs.frozen
class Message:
    """A platform message carries an ``envelope``; a Reddit one carries ``text``."""

    id: MessageId
    conversation_id: ConversationId
    sender_id: UserId
    client_msg_id: str
    origin: Origin
    sent_at: Instant
    envelope: Envelope | None = None
    text: str | None = None
    reddit_fullname: str | None = None  # ``t4_…`` for relayed or imported messages


class DeliveryStatus(enum.Enum):
    """Per message, per recipient device. Order matters: see ``delivery.RANK``."""

    ACCEPTED = "accepted"
    PUSHED = "pushed"
    DELIVERED = "delivered"
    READ = "read"
    RELAYED_TO_REDDIT = "relayed_to_reddit"
    RELAY_FAILED = "relay_failed"


@attrs.frozen
class DeliveryRecord:
    """Delivery of one message to one recipient device (``device_id`` is ``"reddit"``
    for a Reddit-only recipient)."""

    message_id: MessageId
    recipient_id: UserId
    device_id: DeviceId
    status: DeliveryStatus
    updated_at: Instant


# --- the per-user event stream ---------------------------------------------------------


class EventKind(enum.Enum):
    """Events that must survive a disconnect carry a ``seq`` (API.md)."""

    MESSAGE = "message"
    RECEIPT = "receipt"
    SLIDESHOW = "slideshow"
    UPGRADE = "upgrade"


@attrs.frozen
class StreamEvent:
    """One entry of a user's durable event stream, in ``seq`` order.

    A ``MESSAGE`` event references its message (resolved by the store on read, so
    an envelope is stored once, not once per stream); other kinds carry a JSON
    ``payload`` (the frame body without ``type`` and ``seq``).
    """

    user_id: UserId
    seq: int
    kind: EventKind
    created_at: Instant
    message: Message | None = None
    payload: Mapping[str, object] | None = None


# --- media -------------------------------------------------------------------------------


class MediaKind(enum.Enum):
    IMAGE = "image"
    VIDEO = "video"


@attrs.frozen
class Media:
    id: MediaId
    owner_id: UserId
    kind: MediaKind
    content_type: str
    size: int
    blob_key: str
    created_at: Instant
    width: int | None = None
    height: int | None = None
    thumbnail_key: str | None = None
    thumbnail_content_type: str | None = None


# --- Reddit ------------------------------------------------------------------------------


@attrs.frozen
class RedditMessage:
    """A private message as Reddit lists it (a ``t4`` thing), normalised."""

    fullname: str  # "t4_…": the deduplication key of an import
    author: str | None  # None for deleted or system messages
    dest: str
    body: str
    created_utc: float
    subject: str = ""


@attrs.frozen
class Invitation:
    """An invitation link sent to a Reddit-only person through Reddit."""

    token: str
    conversation_id: ConversationId
    inviter_id: UserId
    reddit_username: str
    created_at: Instant
    accepted_at: Instant | None = None


@attrs.frozen
class RedditTokens:
    """A user's Reddit OAuth tokens. The refresh token is stored encrypted with a
    server key (``refresh_token_ciphertext``); the core never sees it in clear."""

    user_id: UserId
    refresh_token_ciphertext: bytes
    scope: str
    updated_at: Instant
    access_token_ciphertext: bytes | None = None
    access_expires_at: Instant | None = None
