"""One small tree of errors for the whole project.

Two families, by whose fault it was (h11's LocalProtocolError / RemoteProtocolError idea):

- ``ProtocolError``: the peer sent something we refuse (bad frame, stale command,
  illegal transition, not allowed). It carries a machine-readable ``code`` from
  API.md and *hints* (``status`` for HTTP, ``close_code`` when the WebSocket must
  close); the server turns hints into responses in one place and never acts here.
- ``PortError``: what adapters raise. Every driver exception (sqlite3, psycopg,
  redis, botocore, httpx) is mapped at the adapter boundary with ``raise ... from exc``.

Both families carry ``code``/``status`` so one mapper handles both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

__all__ = [
    "AuthenticationFailed",
    "BadEnvelope",
    "Blocked",
    "Conflict",
    "DeviceMismatch",
    "Forbidden",
    "IllegalTransition",
    "InvalidFrame",
    "NotFound",
    "OmniNudgeError",
    "PayloadTooLarge",
    "PortError",
    "ProtocolError",
    "RateLimited",
    "StaleCommand",
    "Unavailable",
    "UnsupportedMediaType",
]


class OmniNudgeError(Exception):
    """Base of every error this project raises on purpose."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            # An instance may narrow the class code (e.g. ``missing_field``).
            self.code = code  # type: ignore[misc]

    def details(self) -> dict[str, Any]:
        """Extra machine-readable fields added to the API error body."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


# --- the peer's fault -----------------------------------------------------------------


class ProtocolError(OmniNudgeError):
    """The peer sent something we refuse. ``close_code`` is set only when the
    WebSocket must be closed rather than answered with an ``error`` frame."""

    code = "invalid_request"
    status = 400
    close_code: int | None = None

    def __init__(
        self, message: str, *, code: str | None = None, close_code: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        if close_code is not None:
            self.close_code = close_code


class InvalidFrame(ProtocolError):
    """A body or frame that does not parse or validate.

    Codes: ``invalid_json``, ``invalid_frame``, ``unknown_type``, ``missing_field``,
    ``invalid_field``, ``unexpected_field``.
    """

    code = "invalid_frame"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field

    def details(self) -> dict[str, Any]:
        return {"field": self.field} if self.field is not None else {}


class PayloadTooLarge(ProtocolError):
    """A value over its documented limit (envelope 64 KiB, text 10,000 chars, ...)."""

    code = "too_large"
    status = 413

    def __init__(self, message: str, *, field: str | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.limit = limit

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.field is not None:
            out["field"] = self.field
        if self.limit is not None:
            out["limit"] = self.limit
        return out


class UnsupportedMediaType(ProtocolError):
    code = "unsupported_media_type"
    status = 415


class BadEnvelope(ProtocolError):
    """An E2E envelope whose structure is wrong (the server cannot check more)."""

    code = "invalid_envelope"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field

    def details(self) -> dict[str, Any]:
        return {"field": self.field} if self.field is not None else {}


class AuthenticationFailed(ProtocolError):
    """Missing, expired, tampered or revoked credentials."""

    code = "unauthenticated"
    status = 401
    close_code = 4401


class Forbidden(ProtocolError):
    """Authenticated, but not allowed to touch this (not a participant, not the owner)."""

    code = "forbidden"
    status = 403


class Blocked(Forbidden):
    """A block between the two users forbids this action."""

    code = "blocked"


class IllegalTransition(ProtocolError):
    """The event is not in the state machine's transition table for the current state."""

    code = "illegal_transition"
    status = 409

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: {event} is not allowed in state {state}")
        self.machine = machine
        self.state = state
        self.event = event


class StaleCommand(ProtocolError):
    """A versioned command based on an old version; carries the current state so the
    client can re-sync."""

    code = "stale_command"
    status = 409

    def __init__(self, message: str, *, current: object, current_version: int) -> None:
        super().__init__(message)
        self.current = current
        self.current_version = current_version


class DeviceMismatch(ProtocolError):
    """The envelope's wrapped keys do not cover exactly the current devices (API.md)."""

    code = "device_mismatch"
    status = 409

    def __init__(self, missing: list[str], stale: list[str]) -> None:
        super().__init__("the envelope's keys do not match the current devices")
        self.missing = sorted(missing)
        self.stale = sorted(stale)

    def details(self) -> dict[str, Any]:
        return {"missing": self.missing, "stale": self.stale}


# --- what adapters raise --------------------------------------------------------------


class PortError(OmniNudgeError):
    """Raised by adapters; driver exceptions are chained with ``from``."""

    code = "port_error"
    status = 500


class NotFound(PortError):
    code = "not_found"
    status = 404


class Conflict(PortError):
    """A uniqueness or state constraint refused the write; nothing was written."""

    code = "conflict"
    status = 409


class Unavailable(PortError):
    """A dependency (database, Redis, S3, Reddit) is down or timed out."""

    code = "unavailable"
    status = 503


class RateLimited(PortError):
    """Too many requests; ``retry_at`` is when a retry may succeed."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_at: datetime, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_at = retry_at

    def retry_after_seconds(self, now: datetime) -> int:
        """Whole seconds to put in ``Retry-After`` (at least 1)."""
        return max(1, int((self.retry_at - now).total_seconds() + 0.999))
