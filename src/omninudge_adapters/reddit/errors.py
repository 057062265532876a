"""Typed errors of the Reddit adapter (REDDIT.md §8 mapped to ``omninudge_core.errors``).

Every Reddit answer that is not a success becomes one of these (or a plain core port
error with a narrowed ``code``); no httpx exception escapes the adapter.

- ``RedditTokenInvalid`` (``reddit_token_invalid``): 401 + ``error="invalid_token"``
  on the API host. Refresh once, then ask for re-consent.
- ``RedditGrantInvalid`` (``reddit_grant_invalid``): a bad or used code, or a dead
  refresh token, at the token endpoint. The user must log in with Reddit again.
- ``RedditAppRevoked`` (``reddit_app_revoked``): 401/403 at the token endpoint, our
  client credentials were refused. Switch Reddit features off, alert the operator.
- ``RedditInsufficientScope`` (``reddit_insufficient_scope``): 403 +
  ``error="insufficient_scope"``. Re-consent with the missing scope.
- ``RedditRecipientRefused`` (``reddit_recipient_refused``): compose refused by the
  recipient's settings (``NOT_WHITELISTED_BY_USER_MESSAGE``, ``USER_BLOCKED``, ...).
- ``RedditRequestRejected`` (``reddit_rejected``): other ``json.errors`` (``NO_TEXT``,
  ``TOO_LONG``, ``BAD_USERNAME``, ...); ``reddit_code`` says which.
- core ``NotFound``: ``reddit_user_not_found``, ``subreddit_banned``,
  ``subreddit_private``, ``subreddit_quarantined``, ``subreddit_not_found``.
- core ``RateLimited`` (``reddit_rate_limited``; ``reddit_budget_exhausted`` from our own
  budget): a 429 or ``RATELIMIT`` in ``json.errors``, with ``retry_at``.
- core ``Unavailable``: ``reddit_unavailable`` (5xx, network), ``reddit_messaging_unavailable``
  (a redirect on ``/message/*``), ``reddit_bad_response`` (a shape we cannot read).
"""

from __future__ import annotations

from typing import Any

from omninudge_core.errors import AuthenticationFailed, Forbidden, ProtocolError

__all__ = [
    "RedditAppRevoked",
    "RedditGrantInvalid",
    "RedditInsufficientScope",
    "RedditRecipientRefused",
    "RedditRequestRejected",
    "RedditTokenInvalid",
]


class RedditTokenInvalid(AuthenticationFailed):
    """Reddit refused the access token (expired or revoked): refresh it."""

    code = "reddit_token_invalid"


class RedditGrantInvalid(AuthenticationFailed):
    """Reddit refused an authorization code or refresh token: the user must consent again."""

    code = "reddit_grant_invalid"


class RedditAppRevoked(AuthenticationFailed):
    """Reddit refused our client credentials: the app was revoked or suspended (REDDIT.md §0).

    Not the user's fault, so the status hint is 503, not 401.
    """

    code = "reddit_app_revoked"
    status = 503


class RedditInsufficientScope(Forbidden):
    """The token lacks a scope this call needs: consent again with it."""

    code = "reddit_insufficient_scope"


class _WithRedditCode:
    reddit_code: str
    field: str | None

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reddit_code": self.reddit_code}
        if self.field is not None:
            out["field"] = self.field
        return out


class RedditRecipientRefused(_WithRedditCode, Forbidden):
    """The recipient does not take messages from this sender (REDDIT.md §5.1)."""

    code = "reddit_recipient_refused"

    def __init__(self, message: str, *, reddit_code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reddit_code = reddit_code
        self.field = field


class RedditRequestRejected(_WithRedditCode, ProtocolError):
    """Reddit rejected the request's content (``json.errors``); ``reddit_code`` says why."""

    code = "reddit_rejected"
    status = 400

    def __init__(self, message: str, *, reddit_code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reddit_code = reddit_code
        self.field = field
