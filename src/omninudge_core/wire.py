"""Every shape that crosses the wire (API.md), as frozen attrs classes.

WebSocket frames are tagged unions on ``"type"`` (the tag lives in the codec, not
here: see ``TYPE``); REST request and response bodies are plain objects. The E2E
envelope is the domain's own ``models.Envelope`` (one definition for the whole
project). Named constructors (``from_domain``) turn domain models into wire shapes
so the server stays thin. Validation and (de)serialization live in
``omninudge_core.codec``.

A field whose default is ``None`` is optional on the wire: it is left out when it
is ``None``. A field without a default is always present (``null`` when ``None``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, TypeAlias

import attrs

from omninudge_core.errors import OmniNudgeError
from omninudge_core.models import (
    Conversation,
    ConversationKind,
    DeliveryStatus,
    Device,
    Envelope,
    Jwk,
    Message,
    Origin,
    UpgradeState,
    User,
    UserSettings,
    WrappedKey,
)
from omninudge_core.ports import ConversationView, Page

__all__ = [
    "AckFrame",
    "AuthFrame",
    "ClientFrame",
    "ConversationsPage",
    "CreateConversationBody",
    "DevLoginBody",
    "DevicePutBody",
    "Envelope",
    "ErrorBody",
    "ErrorFrame",
    "ErrorInfo",
    "EventsPage",
    "EventsQuery",
    "HelloFrame",
    "MessageAnswer",
    "MessageFrame",
    "MessagesPage",
    "NavAction",
    "PageQuery",
    "PingFrame",
    "PongFrame",
    "PostMessageBody",
    "PresenceFrame",
    "PublicJwk",
    "ReadBody",
    "ReadFrame",
    "ReceiptFrame",
    "ReceiptStatus",
    "SendFrame",
    "SentFrame",
    "ServerFrame",
    "SessionAnswer",
    "SessionBody",
    "SettingsPatchBody",
    "SlideshowFrame",
    "SlideshowNavFrame",
    "SlideshowStartFrame",
    "SlideshowStopFrame",
    "TypingFrame",
    "TypingNoticeFrame",
    "UpgradeFrame",
    "UserLookup",
    "WireConversation",
    "WireDevice",
    "WireMe",
    "WireMessage",
    "WrappedKey",
]


class NavAction(enum.Enum):
    NEXT = "next"
    PREV = "prev"
    GOTO = "goto"
    PAUSE = "pause"
    RESUME = "resume"


class ReceiptStatus(enum.Enum):
    DELIVERED = "delivered"
    READ = "read"
    # The outcome of relaying to a Reddit-only recipient (delivery's Reddit route).
    RELAYED_TO_REDDIT = "relayed_to_reddit"
    RELAY_FAILED = "relay_failed"


@attrs.frozen
class PublicJwk:
    """A public EC P-256 JSON Web Key. The codec accepts and drops the optional public
    members Web Crypto adds (``ext``, ``key_ops``, ``alg``, ``use``, ``kid``) and
    refuses anything else, above all a private ``d``."""

    kty: str
    crv: str
    x: str
    y: str

    @classmethod
    def from_mapping(cls, jwk: Jwk) -> PublicJwk:
        return cls(kty=jwk["kty"], crv=jwk["crv"], x=jwk["x"], y=jwk["y"])

    def to_mapping(self) -> dict[str, str]:
        """The domain form (``models.Jwk``)."""
        return {"kty": self.kty, "crv": self.crv, "x": self.x, "y": self.y}


# --- WebSocket: client -> server ---------------------------------------------------------


@attrs.frozen
class AuthFrame:
    TYPE: ClassVar[str] = "auth"
    token: str
    resume_from: int | None = None


@attrs.frozen
class AckFrame:
    TYPE: ClassVar[str] = "ack"
    seq: int


@attrs.frozen
class SendFrame:
    """Exactly one of ``envelope`` (platform recipient) and ``text`` (Reddit-only)."""

    TYPE: ClassVar[str] = "send"
    conversation_id: str
    client_msg_id: str
    envelope: Envelope | None = None
    text: str | None = None


@attrs.frozen
class TypingFrame:
    TYPE: ClassVar[str] = "typing"
    conversation_id: str


@attrs.frozen
class ReadFrame:
    TYPE: ClassVar[str] = "read"
    conversation_id: str
    up_to: str


@attrs.frozen
class SlideshowStartFrame:
    TYPE: ClassVar[str] = "slideshow_start"
    conversation_id: str
    media_ids: tuple[str, ...]
    autoplay_s: int | None = None


@attrs.frozen
class SlideshowNavFrame:
    """``goto`` carries exactly one of ``index`` and ``media_id``; other actions neither."""

    TYPE: ClassVar[str] = "slideshow_nav"
    conversation_id: str
    action: NavAction
    base_version: int
    index: int | None = None
    media_id: str | None = None


@attrs.frozen
class SlideshowStopFrame:
    TYPE: ClassVar[str] = "slideshow_stop"
    conversation_id: str


@attrs.frozen
class PingFrame:
    TYPE: ClassVar[str] = "ping"


ClientFrame: TypeAlias = (
    AuthFrame
    | AckFrame
    | SendFrame
    | TypingFrame
    | ReadFrame
    | SlideshowStartFrame
    | SlideshowNavFrame
    | SlideshowStopFrame
    | PingFrame
)

# --- REST response shapes (also carried inside server frames) ----------------------------


@attrs.frozen
class WireMessage:
    """API.md Message. ``status`` is the delivery status as the viewer should see it."""

    id: str
    conversation_id: str
    sender_id: str
    client_msg_id: str
    origin: Origin
    sent_at: datetime
    status: DeliveryStatus
    envelope: Envelope | None = None
    text: str | None = None

    @classmethod
    def from_domain(cls, message: Message, *, status: DeliveryStatus) -> WireMessage:
        return cls(
            id=message.id,
            conversation_id=message.conversation_id,
            sender_id=message.sender_id,
            client_msg_id=message.client_msg_id,
            origin=message.origin,
            sent_at=message.sent_at,
            status=status,
            envelope=message.envelope,
            text=message.text,
        )


@attrs.frozen
class WireConversation:
    id: str
    participants: tuple[str, str]
    kind: ConversationKind
    upgrade_state: UpgradeState
    last_message_at: datetime | None
    unread: int

    @classmethod
    def from_domain(cls, conversation: Conversation, *, unread: int = 0) -> WireConversation:
        return cls(
            id=conversation.id,
            participants=conversation.participants,
            kind=conversation.kind,
            upgrade_state=conversation.upgrade_state,
            last_message_at=conversation.last_message_at,
            unread=unread,
        )

    @classmethod
    def from_view(cls, view: ConversationView) -> WireConversation:
        return cls.from_domain(view.conversation, unread=view.unread)


@attrs.frozen
class WireMe:
    """``GET /api/me`` and the ``user`` of a login answer."""

    id: str
    username: str
    reddit_id: str | None
    created_at: datetime
    settings: UserSettings

    @classmethod
    def from_domain(cls, user: User) -> WireMe:
        return cls(
            id=user.id,
            username=user.username,
            reddit_id=user.reddit_id,
            created_at=user.created_at,
            settings=user.settings,
        )


@attrs.frozen
class UserLookup:
    """``GET /api/users/by-name/{username}``: ``id`` is null for someone never seen."""

    id: str | None
    username: str
    on_platform: bool

    @classmethod
    def from_domain(cls, user: User | None, *, username: str) -> UserLookup:
        if user is None:
            return cls(id=None, username=username, on_platform=False)
        return cls(id=user.id, username=user.username, on_platform=user.on_platform)


@attrs.frozen
class WireDevice:
    device_id: str
    user_id: str
    public_key: PublicJwk
    signing_key: PublicJwk
    name: str
    created_at: datetime

    @classmethod
    def from_domain(cls, device: Device) -> WireDevice:
        return cls(
            device_id=device.device_id,
            user_id=device.user_id,
            public_key=PublicJwk.from_mapping(device.public_key),
            signing_key=PublicJwk.from_mapping(device.signing_key),
            name=device.name,
            created_at=device.created_at,
        )


@attrs.frozen
class SessionAnswer:
    """``POST /api/auth/session`` and ``/api/auth/dev-login``."""

    access_token: str
    expires_in: int
    user: WireMe
    token_type: str = "Bearer"


@attrs.frozen
class MessageAnswer:
    """``POST /api/messages``: ``{"message": {...}}``."""

    message: WireMessage


@attrs.frozen
class MessagesPage:
    messages: tuple[WireMessage, ...]
    next_cursor: str | None


@attrs.frozen
class ConversationsPage:
    conversations: tuple[WireConversation, ...]
    next_cursor: str | None

    @classmethod
    def from_page(cls, page: Page[ConversationView]) -> ConversationsPage:
        return cls(
            conversations=tuple(WireConversation.from_view(v) for v in page.items),
            next_cursor=page.next_cursor,
        )


@attrs.frozen
class ErrorInfo:
    """``details`` are flattened into the object on the wire (``missing``, ``field``...)."""

    code: str
    message: str
    details: Mapping[str, Any] | None = None


@attrs.frozen
class ErrorBody:
    """``{"error": {"code", "message", ...details}}``."""

    error: ErrorInfo

    @classmethod
    def from_error(cls, error: OmniNudgeError) -> ErrorBody:
        return cls(ErrorInfo(error.code, error.message, error.details() or None))


# --- WebSocket: server -> client ---------------------------------------------------------


@attrs.frozen
class HelloFrame:
    TYPE: ClassVar[str] = "hello"
    user_id: str
    resume_from: int


@attrs.frozen
class MessageFrame:
    TYPE: ClassVar[str] = "message"
    seq: int
    message: WireMessage


@attrs.frozen
class SentFrame:
    """The answer to ``send``: the message as committed."""

    TYPE: ClassVar[str] = "sent"
    client_msg_id: str
    message: WireMessage


@attrs.frozen
class ReceiptFrame:
    TYPE: ClassVar[str] = "receipt"
    seq: int
    message_id: str
    user_id: str
    status: ReceiptStatus


@attrs.frozen
class TypingNoticeFrame:
    """``typing`` from the server: ``user_id`` is typing in ``conversation_id``."""

    TYPE: ClassVar[str] = "typing"
    conversation_id: str
    user_id: str


@attrs.frozen
class PresenceFrame:
    """``online`` is null when presence is unknown (e.g. Redis is down)."""

    TYPE: ClassVar[str] = "presence"
    user_id: str
    online: bool | None
    last_seen: datetime | None


@attrs.frozen
class SlideshowFrame:
    """The slideshow state (a JSON object owned by ``slideshow``); ``seq`` is set when
    the frame comes from the durable stream."""

    TYPE: ClassVar[str] = "slideshow"
    conversation_id: str
    state: Mapping[str, Any]
    seq: int | None = None


@attrs.frozen
class UpgradeFrame:
    """Upgrade notice: a Reddit conversation moved on in its migration."""

    TYPE: ClassVar[str] = "upgrade"
    seq: int
    conversation_id: str
    upgrade_state: UpgradeState


@attrs.frozen
class ErrorFrame:
    """``ref`` names the client frame the error answers (e.g. its ``client_msg_id``);
    ``details`` are flattened into the frame on the wire."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    ref: str | None = None
    details: Mapping[str, Any] | None = None

    @classmethod
    def from_error(cls, error: OmniNudgeError, *, ref: str | None = None) -> ErrorFrame:
        return cls(error.code, error.message, ref=ref, details=error.details() or None)


@attrs.frozen
class PongFrame:
    TYPE: ClassVar[str] = "pong"


ServerFrame: TypeAlias = (
    HelloFrame
    | MessageFrame
    | SentFrame
    | ReceiptFrame
    | TypingNoticeFrame
    | PresenceFrame
    | SlideshowFrame
    | UpgradeFrame
    | ErrorFrame
    | PongFrame
)


@attrs.frozen
class EventsPage:
    """``GET /api/events``: the same frames the WebSocket pushes, and the next ``since``."""

    events: tuple[ServerFrame, ...]
    next: int


# --- REST request bodies -----------------------------------------------------------------


@attrs.frozen
class DevLoginBody:
    username: str


@attrs.frozen
class SessionBody:
    code: str
    state: str


@attrs.frozen
class SettingsPatchBody:
    read_receipts: bool | None = None
    presence_visible: bool | None = None

    def apply(self, settings: UserSettings) -> UserSettings:
        """The settings with this patch applied (absent fields unchanged)."""
        changes: dict[str, bool] = {}
        if self.read_receipts is not None:
            changes["read_receipts"] = self.read_receipts
        if self.presence_visible is not None:
            changes["presence_visible"] = self.presence_visible
        return attrs.evolve(settings, **changes)


@attrs.frozen
class DevicePutBody:
    public_key: PublicJwk
    signing_key: PublicJwk
    name: str


@attrs.frozen
class CreateConversationBody:
    """Exactly one of ``user_id`` and ``reddit_username``."""

    user_id: str | None = None
    reddit_username: str | None = None


@attrs.frozen
class PostMessageBody:
    """Exactly one of ``envelope`` and ``text`` (as ``SendFrame``)."""

    conversation_id: str
    client_msg_id: str
    envelope: Envelope | None = None
    text: str | None = None


@attrs.frozen
class ReadBody:
    up_to: str


# --- query strings -----------------------------------------------------------------------


@attrs.frozen
class PageQuery:
    """``?before=<cursor>&limit=<n>`` (keyset pagination, ``limit`` in 1..100)."""

    before: str | None
    limit: int


@attrs.frozen
class EventsQuery:
    """``GET /api/events?since=<seq>&timeout=<s>`` (long poll, ``timeout`` in 0..30)."""

    since: int
    timeout: int
