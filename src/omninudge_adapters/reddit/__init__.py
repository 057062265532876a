"""Reddit adapter: ``HttpxRedditClient`` (the ``RedditClient`` port over httpx), the
pure mapping of Reddit's JSON (``parsing``), OAuth helpers, the budget gate, token
encryption at rest, and a stand-in server (``omninudge_adapters.reddit.testing``,
imported on demand). See docs/reddit.md.
"""

from omninudge_adapters.reddit.client import HttpxRedditClient, open_reddit_client
from omninudge_adapters.reddit.errors import (
    RedditAppRevoked,
    RedditGrantInvalid,
    RedditInsufficientScope,
    RedditRecipientRefused,
    RedditRequestRejected,
    RedditTokenInvalid,
)
from omninudge_adapters.reddit.oauth import (
    DEFAULT_SCOPES,
    authorize_url,
    sign_state,
    user_agent,
    verify_state,
)
from omninudge_adapters.reddit.pacing import BudgetGate, RedditBudgetHook
from omninudge_adapters.reddit.tokens import TokenCipher, TokenDecryptionFailed

__all__ = [
    "DEFAULT_SCOPES",
    "BudgetGate",
    "HttpxRedditClient",
    "RedditAppRevoked",
    "RedditBudgetHook",
    "RedditGrantInvalid",
    "RedditInsufficientScope",
    "RedditRecipientRefused",
    "RedditRequestRejected",
    "RedditTokenInvalid",
    "TokenCipher",
    "TokenDecryptionFailed",
    "authorize_url",
    "open_reddit_client",
    "sign_state",
    "user_agent",
    "verify_state",
]
