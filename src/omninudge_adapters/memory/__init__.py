"""In-process adapters for every port: the embedded single-process deployment runs on
these (with SQLite for the relational stores when data must outlive the process).

They are products, not test doubles: concurrency-safe under asyncio, bounded where
memory could grow, and held to the same contract suites as Redis, PostgreSQL or S3.
"""

from omninudge_adapters.memory.blobs import (
    MemoryBlobStore,
    media_signature,
    verify_media_signature,
)
from omninudge_adapters.memory.cache import MemoryCache
from omninudge_adapters.memory.fanout import MemoryFanOut, MemorySubscription
from omninudge_adapters.memory.presence import MemoryPresence
from omninudge_adapters.memory.ratelimit import MemoryRateLimiter
from omninudge_adapters.memory.revocations import MemoryRevocations
from omninudge_adapters.memory.storage import MemoryStorage, open_memory_storage

__all__ = [
    "MemoryBlobStore",
    "MemoryCache",
    "MemoryFanOut",
    "MemoryPresence",
    "MemoryRateLimiter",
    "MemoryRevocations",
    "MemoryStorage",
    "MemorySubscription",
    "media_signature",
    "open_memory_storage",
    "verify_media_signature",
]
