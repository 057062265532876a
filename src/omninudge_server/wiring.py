"""The composition root: Settings -> adapters, in one async context manager.

``open_services(settings)`` is entered by the app's lifespan (never at import) and
closes everything on exit. Forty lines of explicit wiring, no container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import cast

import attrs

from omninudge_core.models import Conversation, ConversationKind
from omninudge_core.ports import FanOut, Presence, RateLimiter, Revocations, Storage
from omninudge_server.auth import TokenService, load_or_create_secret
from omninudge_server.config import Settings
from omninudge_server.media import MediaBackends, open_media
from omninudge_server.reddit_feature import RedditFeature, open_reddit
from omninudge_server.shared_state import SharedState, open_shared_state

__all__ = [
    "KnownConversations",
    "Services",
    "migrate",
    "open_services",
    "open_storage",
    "preflight",
    "utcnow",
]

logger = logging.getLogger("omninudge.server")


def utcnow() -> datetime:
    """The shell's clock (the core never reads one)."""
    return datetime.now(UTC)


def new_id() -> str:
    """Random, URL-safe, 128-bit ids for users, conversations and messages."""
    return secrets.token_hex(16)


class KnownConversations:
    """PLATFORM conversations this process has read, by id, so that the send, ack and
    read paths need not read them again. Safe without invalidation: no port changes a
    conversation's participants or kind. Its other fields (``last_message_at``,
    ``upgrade_state``) do change, so only ``id``, ``participants`` and ``kind`` of an
    entry may be used. Bounded: when full, the oldest quarter is dropped."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._by_id: dict[str, Conversation] = {}

    def get(self, conversation_id: str) -> Conversation | None:
        return self._by_id.get(conversation_id)

    def add(self, conversation: Conversation) -> None:
        if conversation.kind is not ConversationKind.PLATFORM:
            return
        if len(self._by_id) >= self._limit:
            # dicts keep insertion order: drop the oldest quarter at once.
            for conversation_id in list(self._by_id)[: max(1, self._limit // 4)]:
                del self._by_id[conversation_id]
        self._by_id[conversation.id] = conversation


@attrs.define
class Services:
    """Everything a handler may use. Built once per process by ``open_services``."""

    settings: Settings
    storage: Storage
    presence: Presence
    revocations: Revocations
    rate_limiter: RateLimiter
    fanout: FanOut
    tokens: TokenService
    started_at: datetime
    clock: Callable[[], datetime] = utcnow
    new_id: Callable[[], str] = new_id
    delivery_locks: list[asyncio.Lock] = attrs.field(
        factory=lambda: [asyncio.Lock() for _ in range(64)]
    )
    known_conversations: KnownConversations = attrs.field(factory=KnownConversations)
    # Presence, revocations, limits, cache and fan-out: in process or in Redis.
    shared: SharedState | None = None
    reddit: RedditFeature | None = None  # None: no Reddit app configured
    media: MediaBackends | None = None  # blob store, image processor (media.open_media)

    @property
    def redis_mode(self) -> str:
        return "in-process" if self.settings.redis_url is None else "redis"


@contextlib.asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """The relational storage chosen by ``DATABASE_URL`` (migrations applied on open)."""
    kind = settings.database_kind
    if kind == "postgres":
        from omninudge_adapters.postgres import open_postgres_storage

        async with open_postgres_storage(
            settings.database_url,
            group_commit=settings.group_commit,
            connect_timeout_s=settings.database_timeout_s,  # database down: 503 fast
        ) as postgres:
            yield cast(Storage, postgres)
    elif kind == "sqlite":
        from omninudge_adapters.sqlite import open_sqlite_storage

        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        async with open_sqlite_storage(
            settings.sqlite_path, group_commit=settings.group_commit
        ) as sqlite:
            yield cast(Storage, sqlite)
    else:
        from omninudge_adapters.memory.storage import open_memory_storage

        async with open_memory_storage() as memory:
            # Protocol attributes are invariant for mypy; the adapters match structurally.
            yield cast(Storage, memory)


async def preflight(settings: Settings) -> None:
    """Open the storage once (applying migrations) and ping it, so that a database
    that is down stops ``omninudge serve`` with one line instead of a lifespan
    traceback. Raises Unavailable (or another PortError)."""
    async with open_storage(settings) as storage:
        await storage.ping()


async def migrate(settings: Settings) -> list[int]:
    """Apply schema migrations for ``DATABASE_URL``; returns the versions applied."""
    kind = settings.database_kind
    if kind == "postgres":
        from omninudge_adapters.postgres import migrate_postgres

        return list(await migrate_postgres(settings.database_url))
    if kind == "sqlite":
        from omninudge_adapters.sqlite import migrate_sqlite

        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return list(await migrate_sqlite(settings.sqlite_path))
    return []


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, *, clock: Callable[[], datetime] = utcnow
) -> AsyncIterator[Services]:
    """Build every adapter from ``settings``; close them all on exit."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = settings.jwt_secret or load_or_create_secret(settings.jwt_secret_path)
    async with (
        open_storage(settings) as storage,
        open_shared_state(settings, storage.events) as shared,
        open_media(settings, secret) as media,
    ):
        services = Services(
            settings=settings,
            storage=storage,
            presence=shared.presence,
            revocations=shared.revocations,
            rate_limiter=shared.rate_limiter,
            fanout=shared.fanout,
            shared=shared,
            media=media,
            tokens=TokenService(secret, ttl_s=settings.token_ttl_s),
            started_at=clock(),
            clock=clock,
        )
        logger.info(
            "services ready: database=%s presence/fan-out=%s",
            settings.database_kind,
            services.redis_mode,
        )
        async with open_reddit(services, secret) as services.reddit:
            yield services
