"""A user's Reddit tokens: stored encrypted, refreshed on expiry or refusal.

``RedditAccess(services, feature).call(user_id, work)`` runs ``work(access_token)`` as
the user. The access token is refreshed a minute before it expires, and once more when
Reddit calls it invalid (REDDIT.md §2.3, §3); a dead refresh token means the user must
log in with Reddit again (``RedditLoginRequired``, code ``reddit_reconsent_required``).
Refresh tokens may rotate, so one refresh at a time runs per user in a process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from omninudge_adapters.reddit import RedditGrantInvalid, RedditTokenInvalid
from omninudge_core.errors import Forbidden
from omninudge_core.models import RedditTokens
from omninudge_core.ports import RedditGrant
from omninudge_server.reddit_feature import RedditFeature

if TYPE_CHECKING:
    from omninudge_server.wiring import Services

__all__ = ["RedditAccess", "RedditLoginRequired"]

logger = logging.getLogger("omninudge.reddit")

T = TypeVar("T")

REFRESH_MARGIN = timedelta(seconds=60)  # refresh an access token this long before expiry


class RedditLoginRequired(Forbidden):
    """The caller has no usable Reddit token: log in with Reddit (again)."""

    code = "reddit_login_required"


class RedditAccess:
    """A user's Reddit access token, refreshed on expiry or refusal (REDDIT.md §2.3)."""

    def __init__(self, services: Services, feature: RedditFeature) -> None:
        self._services = services
        self._feature = feature

    async def store_grant(self, user_id: str, grant: RedditGrant) -> None:
        """Keep a fresh grant, encrypted; the refresh token may have rotated."""
        feature, now = self._feature, self._services.clock()
        refresh = grant.refresh_token
        if refresh is None:
            old = await self._services.storage.reddit_tokens.get(user_id)
            refresh_blob = old.refresh_token_ciphertext if old is not None else b""
        else:
            refresh_blob = feature.seal(user_id, refresh)
        await self._services.storage.reddit_tokens.put(
            RedditTokens(
                user_id=user_id,
                refresh_token_ciphertext=refresh_blob,
                scope=grant.scope,
                updated_at=now,
                access_token_ciphertext=feature.seal(user_id, grant.access_token),
                access_expires_at=now + timedelta(seconds=grant.expires_in),
            )
        )

    async def has_token(self, user_id: str) -> bool:
        return await self._services.storage.reddit_tokens.get(user_id) is not None

    async def call(self, user_id: str, work: Callable[[str], Awaitable[T]]) -> T:
        """Run ``work(access_token)`` as the user; on ``invalid_token`` refresh once and
        retry. Raises RedditLoginRequired when the user has no usable grant,
        Unavailable(code="reddit_app_revoked"), and whatever ``work`` raises."""
        feature = self._feature
        token = await self._access_token(user_id, force_refresh=False)
        try:
            return await feature.guarded(lambda: work(token))
        except RedditTokenInvalid:
            pass
        token = await self._access_token(user_id, force_refresh=True)
        try:
            return await feature.guarded(lambda: work(token))
        except RedditTokenInvalid as exc:
            raise RedditLoginRequired(
                "Reddit refused your token; log in with Reddit again",
                code="reddit_reconsent_required",
            ) from exc

    async def revoke(self, user_id: str) -> None:
        """Revoke the user's refresh token at Reddit (best effort) and forget it."""
        stored = await self._services.storage.reddit_tokens.get(user_id)
        if stored is None:
            return
        await self._services.storage.reddit_tokens.delete(user_id)
        if not stored.refresh_token_ciphertext:
            return
        try:
            refresh = self._feature.cipher.decrypt(stored.refresh_token_ciphertext, context=user_id)
            await self._feature.guarded(lambda: self._feature.client.revoke(refresh))
        except Exception:  # best effort: our own session is already gone
            logger.warning("could not revoke the Reddit token of %s", user_id, exc_info=True)

    async def _access_token(self, user_id: str, *, force_refresh: bool) -> str:
        lock = self._feature.refresh_locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            stored = await self._services.storage.reddit_tokens.get(user_id)
            if stored is None:
                raise RedditLoginRequired("log in with Reddit to use Reddit features")
            cipher, now = self._feature.cipher, self._services.clock()
            fresh = (
                stored.access_token_ciphertext is not None
                and stored.access_expires_at is not None
                and stored.access_expires_at - REFRESH_MARGIN > now
            )
            if fresh and not force_refresh:
                assert stored.access_token_ciphertext is not None
                return cipher.decrypt(stored.access_token_ciphertext, context=user_id)
            if not stored.refresh_token_ciphertext:
                raise RedditLoginRequired(
                    "your Reddit session expired; log in with Reddit again",
                    code="reddit_reconsent_required",
                )
            refresh = cipher.decrypt(stored.refresh_token_ciphertext, context=user_id)
            try:
                grant = await self._feature.guarded(lambda: self._feature.client.refresh(refresh))
            except RedditGrantInvalid as exc:
                await self._services.storage.reddit_tokens.delete(user_id)
                raise RedditLoginRequired(
                    "Reddit no longer accepts your login; log in with Reddit again",
                    code="reddit_reconsent_required",
                ) from exc
            await self.store_grant(user_id, grant)
            return grant.access_token
