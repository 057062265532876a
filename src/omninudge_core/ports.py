"""Ports: what the core needs from the outside world, as ``typing.Protocol``s.

Adapters implement these structurally (no inheritance from the core). Every port
has an in-memory adapter (``omninudge_adapters.memory``) and one contract suite in
``tests/contract`` that runs unchanged against every adapter of it.

Errors: adapters raise only ``omninudge_core.errors`` port errors (``NotFound``,
``Conflict``, ``Unavailable``, ``RateLimited``); driver exceptions are chained with
``raise … from exc`` and never escape.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

import attrs

from omninudge_core.models import (
    Block,
    Conversation,
    ConversationId,
    DeliveryRecord,
    Device,
    DeviceId,
    EventKind,
    Instant,
    Invitation,
    Media,
    MediaId,
    Message,
    MessageId,
    RedditMessage,
    RedditTokens,
    StreamEvent,
    UpgradeState,
    User,
    UserId,
)

__all__ = [
    "Appended",
    "BlobStore",
    "BlockStore",
    "Cache",
    "ConversationStore",
    "ConversationView",
    "DeviceStore",
    "EventStore",
    "FanOut",
    "ImageProcessor",
    "InvitationStore",
    "MediaStore",
    "MessageStore",
    "MigrationStore",
    "NewEvent",
    "Page",
    "Presence",
    "PresenceInfo",
    "ProcessedImage",
    "RateLimiter",
    "RateVerdict",
    "RedditClient",
    "RedditGrant",
    "RedditIdentity",
    "RedditListing",
    "RedditMessagePage",
    "RedditPost",
    "RedditProfile",
    "RedditQuota",
    "RedditTokenStore",
    "Revocations",
    "SignedUrl",
    "Storage",
    "Subscription",
    "UserStore",
]

T = TypeVar("T")


@attrs.frozen
class Page(Generic[T]):
    """One page of a keyset-paginated listing; ``next_cursor`` is opaque."""

    items: tuple[T, ...]
    next_cursor: str | None = None


# --- the relational stores (SQLite embedded, PostgreSQL production) ---------------------


class UserStore(Protocol):
    async def create(self, user: User) -> User:
        """Insert a user. Raises Conflict if the username (case-insensitive) or
        reddit_id is taken."""
        ...

    async def get(self, user_id: UserId) -> User:
        """Raises NotFound."""
        ...

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        """The users that exist among ``user_ids``; missing ones are left out."""
        ...

    async def by_username(self, username: str) -> User | None:
        """Case-insensitive lookup (Reddit usernames are case-insensitive)."""
        ...

    async def by_usernames(self, usernames: Sequence[str]) -> dict[str, User]:
        """One batched lookup; keys are the lower-cased usernames that were found."""
        ...

    async def by_reddit_id(self, reddit_id: str) -> User | None: ...

    async def update(self, user: User) -> User:
        """Replace username, reddit_id, on_platform and settings of an existing user.
        Raises NotFound, or Conflict on a taken username/reddit_id."""
        ...


class DeviceStore(Protocol):
    async def put(self, device: Device) -> tuple[Device, bool]:
        """Register a device; returns (device, created). Registering the same keys
        again returns the stored device with created=False. Raises Conflict when the
        device id exists with other keys or belongs to another user."""
        ...

    async def for_user(self, user_id: UserId) -> list[Device]:
        """The user's current devices, oldest first."""
        ...

    async def for_users(self, user_ids: Sequence[UserId]) -> dict[UserId, list[Device]]:
        """Current devices of several users in one call (every asked user is a key)."""
        ...

    async def delete(self, user_id: UserId, device_id: DeviceId) -> None:
        """Raises NotFound if the user has no such device."""
        ...


class BlockStore(Protocol):
    async def put(self, block: Block) -> None:
        """Idempotent."""
        ...

    async def delete(self, blocker_id: UserId, blocked_id: UserId) -> None:
        """Idempotent."""
        ...

    async def blocked_by(self, blocker_id: UserId) -> list[Block]: ...

    async def between(self, a: UserId, b: UserId) -> bool:
        """True if either user blocks the other."""
        ...


@attrs.frozen
class ConversationView:
    """A conversation as one participant sees it in their list."""

    conversation: Conversation
    unread: int


class ConversationStore(Protocol):
    async def get_or_create(self, conversation: Conversation) -> tuple[Conversation, bool]:
        """The one conversation of ``conversation.participants``: the existing one
        (created=False) or the given one, inserted (created=True). Race-safe."""
        ...

    async def get(self, conversation_id: ConversationId) -> Conversation:
        """Raises NotFound."""
        ...

    async def for_pair(self, a: UserId, b: UserId) -> Conversation | None: ...

    async def list_for_user(
        self, user_id: UserId, *, before: str | None, limit: int
    ) -> Page[ConversationView]:
        """Newest activity first (last_message_at, then created_at), keyset on an
        opaque cursor. Raises InvalidFrame(code="invalid_cursor") for a bad cursor."""
        ...

    async def set_upgrade_state(
        self, conversation_id: ConversationId, state: UpgradeState
    ) -> Conversation:
        """Raises NotFound."""
        ...


@attrs.frozen
class Appended:
    """Result of ``MessageStore.append``: ``created`` is False for a replayed
    ``client_msg_id`` (then nothing was written and ``events`` is empty)."""

    message: Message
    created: bool
    events: tuple[StreamEvent, ...] = ()


@attrs.frozen
class NewEvent:
    """An event to append to a user's stream; the store assigns ``seq``."""

    user_id: UserId
    kind: EventKind
    payload: Mapping[str, object] | None = None
    message_id: MessageId | None = None


class MessageStore(Protocol):
    async def append(
        self,
        message: Message,
        deliveries: Sequence[DeliveryRecord],
        notify: Sequence[UserId],
    ) -> Appended:
        """In ONE transaction: insert the message, its delivery rows, a MESSAGE event
        in the stream of each user in ``notify`` (gap-free per-user ``seq``), and bump
        the conversation's last_message_at. When (sender_id, client_msg_id) exists,
        write nothing and return the original with created=False. Returns only after
        the commit is durable."""
        ...

    async def get(self, message_id: MessageId) -> Message:
        """Raises NotFound."""
        ...

    async def history(
        self, conversation_id: ConversationId, *, before: str | None, limit: int
    ) -> Page[Message]:
        """Newest first by (sent_at, id), keyset on an opaque cursor."""
        ...

    async def import_reddit(
        self, conversation_id: ConversationId, messages: Sequence[Message]
    ) -> int:
        """Insert Reddit-origin messages, skipping any whose ``reddit_fullname`` is
        already in the conversation; one transaction; returns how many were new."""
        ...

    async def set_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        """Upsert delivery rows (message_id, device_id); the core decides whether a
        change is legal, the store only persists it."""
        ...

    async def deliveries(self, message_id: MessageId) -> list[DeliveryRecord]: ...

    async def deliveries_many(
        self, message_ids: Sequence[MessageId]
    ) -> dict[MessageId, list[DeliveryRecord]]:
        """``deliveries`` of several messages in one read (an ack batch); every id given
        is a key, an unknown message maps to an empty list."""
        ...

    async def mark_read(
        self, conversation_id: ConversationId, user_id: UserId, up_to: MessageId
    ) -> list[Message]:
        """Move the user's read mark forward to ``up_to`` (never backwards) and
        return the other participant's messages newly covered by it, oldest first.
        Raises NotFound if ``up_to`` is not a message of the conversation."""
        ...


class EventStore(Protocol):
    async def append(self, events: Sequence[NewEvent]) -> list[StreamEvent]:
        """Append in one transaction; ``seq`` is per user, gap-free and strictly
        increasing; returned in the order given."""
        ...

    async def read(self, user_id: UserId, *, after: int, limit: int) -> list[StreamEvent]:
        """Events with seq > after, ascending, MESSAGE events with their message."""
        ...

    async def last_seq(self, user_id: UserId) -> int:
        """0 for a user with no events."""
        ...


class MediaStore(Protocol):
    async def create(self, media: Media) -> None: ...

    async def get(self, media_id: MediaId) -> Media:
        """Raises NotFound."""
        ...

    async def delete(self, media_id: MediaId) -> None: ...

    async def share(self, media_id: MediaId, conversation_id: ConversationId) -> None:
        """Record that the media was shared in a conversation (idempotent)."""
        ...

    async def can_access(self, media_id: MediaId, user_id: UserId) -> bool:
        """True for the uploader and the participants of a conversation it was shared in."""
        ...


class InvitationStore(Protocol):
    async def create(self, invitation: Invitation) -> None: ...

    async def get(self, token: str) -> Invitation:
        """Raises NotFound."""
        ...

    async def accept(self, token: str, at: Instant) -> Invitation:
        """Set accepted_at once (later calls return the first acceptance)."""
        ...


class MigrationStore(Protocol):
    """Persists migration machine states (see ``omninudge_core.migration``), encoded
    by the core codec as JSON mappings, so that an import resumes after a crash."""

    async def save(self, conversation_id: ConversationId, state: Mapping[str, object]) -> None: ...

    async def load(self, conversation_id: ConversationId) -> Mapping[str, object] | None: ...

    async def unfinished(self) -> list[ConversationId]:
        """Conversations whose migration has not reached a final state."""
        ...


class RedditTokenStore(Protocol):
    async def put(self, tokens: RedditTokens) -> None: ...

    async def get(self, user_id: UserId) -> RedditTokens | None: ...

    async def delete(self, user_id: UserId) -> None: ...


class Storage(Protocol):
    """The relational stores of one backend, sharing its connections."""

    @property
    def users(self) -> UserStore: ...

    @property
    def devices(self) -> DeviceStore: ...

    @property
    def blocks(self) -> BlockStore: ...

    @property
    def conversations(self) -> ConversationStore: ...

    @property
    def messages(self) -> MessageStore: ...

    @property
    def events(self) -> EventStore: ...

    @property
    def media(self) -> MediaStore: ...

    @property
    def invitations(self) -> InvitationStore: ...

    @property
    def migrations(self) -> MigrationStore: ...

    @property
    def reddit_tokens(self) -> RedditTokenStore: ...

    async def ping(self) -> None:
        """Raises Unavailable when the backend does not answer."""
        ...


# --- shared fast state (in-process embedded, Redis production) --------------------------


@attrs.frozen
class PresenceInfo:
    """``online`` is None when presence is unknown (e.g. Redis is down)."""

    online: bool | None
    last_seen: Instant | None = None


class Presence(Protocol):
    async def heartbeat(self, user_id: UserId, connection_id: str, ttl_s: float) -> None:
        """Mark one connection of the user alive for ``ttl_s`` seconds."""
        ...

    async def disconnected(self, user_id: UserId, connection_id: str) -> None: ...

    async def status(self, user_ids: Sequence[UserId]) -> dict[UserId, PresenceInfo]: ...


class Revocations(Protocol):
    async def revoke(self, jti: str, until: Instant) -> None:
        """Remember a revoked token id until its expiry (then it is dead anyway)."""
        ...

    async def is_revoked(self, jti: str) -> bool: ...


@attrs.frozen
class RateVerdict:
    allowed: bool
    retry_after_s: float = 0.0
    remaining: float = 0.0


class RateLimiter(Protocol):
    async def hit(
        self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0
    ) -> RateVerdict:
        """Take ``cost`` tokens from the bucket ``key`` (atomic across processes for
        shared adapters). Uses ``omninudge_core.policies.ratelimit`` semantics."""
        ...


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...


class Subscription(Protocol):
    async def close(self) -> None: ...


class FanOut(Protocol):
    """Best-effort notification of a user's live connections, wherever they are.

    Durability comes from the event stream, not from here: a lost notice is
    recovered by resume."""

    async def subscribe(
        self, user_id: UserId, listener: Callable[[bytes], Awaitable[None] | None]
    ) -> Subscription:
        """Call ``listener`` with every payload published to ``user_id`` until closed."""
        ...

    async def publish(self, user_id: UserId, payload: bytes) -> None: ...


# --- media blobs --------------------------------------------------------------------------


@attrs.frozen
class SignedUrl:
    url: str
    expires_at: Instant


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes | AsyncIterable[bytes], *, content_type: str) -> int:
        """Store the bytes under ``key``; returns the size. All or nothing."""
        ...

    async def get(self, key: str) -> bytes:
        """Raises NotFound."""
        ...

    async def delete(self, key: str) -> None:
        """Idempotent."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def signed_url(self, key: str, *, expires_in_s: int) -> SignedUrl: ...


# --- Reddit --------------------------------------------------------------------------------


@attrs.frozen
class RedditGrant:
    """Tokens from Reddit's token endpoint (REDDIT.md §2.2–2.3)."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None


@attrs.frozen
class RedditIdentity:
    """``GET /api/v1/me``: ``id`` is base36 without ``t2_``."""

    id: str
    name: str
    created_utc: float
    icon_img: str | None = None


@attrs.frozen
class RedditPost:
    """A ``t3`` listing child normalised to the API.md post shape."""

    id: str
    title: str
    author: str
    permalink: str
    url: str
    thumbnail: str | None
    media_type: str  # image | video | gallery | link | self
    over_18: bool
    score: int
    num_comments: int
    created_utc: float
    preview_url: str | None = None  # largest preview image, HTML entities unescaped


@attrs.frozen
class RedditProfile:
    """``GET /user/{name}/about``: who a Reddit recipient is and whether they take PMs.

    ``accept_pms`` is None when Reddit does not say (e.g. a suspended account)."""

    name: str
    id: str | None
    created_utc: float | None
    accept_pms: bool | None = None
    is_suspended: bool = False


@attrs.frozen
class RedditListing:
    posts: tuple[RedditPost, ...]
    after: str | None


@attrs.frozen
class RedditMessagePage:
    messages: tuple[RedditMessage, ...]
    after: str | None


@attrs.frozen
class RedditQuota:
    """``X-Ratelimit-*`` as last seen; fed to ``policies.reddit_budget``."""

    used: float | None
    remaining: float | None
    reset_s: float | None


class RedditClient(Protocol):
    """Reddit's OAuth and API hosts. Errors map to NotFound (unknown/banned/private
    subreddit or user), RateLimited (429, with Retry-After), Unavailable (5xx,
    network), AuthenticationFailed (invalid token / revoked app)."""

    def authorize_url(self, *, state: str, scopes: Sequence[str]) -> str: ...

    async def exchange_code(self, code: str) -> RedditGrant: ...

    async def refresh(self, refresh_token: str) -> RedditGrant: ...

    async def revoke(self, token: str, *, hint: str) -> None: ...

    async def me(self, access_token: str) -> RedditIdentity: ...

    async def listing(
        self,
        access_token: str,
        *,
        subreddit: str,
        sort: str,
        after: str | None,
        limit: int,
        t: str | None,
    ) -> RedditListing: ...

    async def compose(self, access_token: str, *, to: str, subject: str, text: str) -> None: ...

    async def reply(self, access_token: str, *, thing_id: str, text: str) -> RedditMessage:
        """Reply inside an existing thread (``/api/comment`` on a ``t4_``); returns the
        new message, which Reddit reports (unlike ``compose``)."""
        ...

    async def user_about(self, access_token: str, name: str) -> RedditProfile:
        """Raises NotFound for an unknown user."""
        ...

    async def messages(
        self, access_token: str, *, box: str, after: str | None, limit: int
    ) -> RedditMessagePage:
        """``box`` is ``inbox`` or ``sent``."""
        ...


# --- image processing ----------------------------------------------------------------------


@attrs.frozen
class ProcessedImage:
    """A decoded, auto-oriented image re-encoded without metadata, and its thumbnail."""

    data: bytes
    content_type: str
    width: int
    height: int
    animated: bool
    thumbnail: bytes
    thumbnail_content_type: str


class ImageProcessor(Protocol):
    async def process(self, data: bytes, *, max_pixels: int, thumbnail_px: int) -> ProcessedImage:
        """Raises PayloadTooLarge for a decompression bomb, UnsupportedMediaType or
        InvalidFrame(code="corrupt_media") for what cannot be decoded."""
        ...
