"""Configuration: environment variables (DESIGN.md table) -> one frozen ``Settings``.

This is the ONLY module that reads ``os.environ``. Everything else receives a
``Settings``. A bad configuration raises ``ConfigError`` with one human line; the
CLI prints it and exits with status 2 (never a traceback).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import attrs

__all__ = ["ConfigError", "Settings", "load_settings"]

# A HS256 key shorter than the hash output is weak (RFC 7518 §3.2).
MIN_JWT_SECRET_BYTES = 32

_REDDIT_VARS = ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_REDIRECT_URI")
_S3_VARS = ("S3_BUCKET",)


class ConfigError(Exception):
    """The configuration cannot work; the message is one line for the operator."""


@attrs.frozen
class Settings:
    """Everything the server needs to start, resolved and validated.

    ``database_url`` is always set (the SQLite default in the data directory is
    resolved here). ``memory://`` is accepted for tests and demos: nothing survives
    a restart.
    """

    data_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    jwt_secret: str | None = None  # None: generated once into <data_dir>/jwt-secret
    dev_login: bool = True
    redis_url: str | None = None
    reddit_auth_base: str = "https://www.reddit.com"
    reddit_api_base: str = "https://oauth.reddit.com"
    token_ttl_s: int = 7 * 24 * 3600
    # WebSocket limits (API.md: auth within 10 s, ping every 30 s).
    ws_auth_timeout_s: float = 10.0
    ws_ping_interval_s: float = 30.0
    ws_max_frame_bytes: int = 128 * 1024
    ws_max_in_flight: int = 256
    max_body_bytes: int = 256 * 1024
    # Per-user message budget: a burst for a paste of messages, a sustained human rate.
    send_rate_per_s: float = 10.0
    send_burst: float = 50.0
    events_max_timeout_s: float = 30.0

    @property
    def database_kind(self) -> str:
        """``sqlite``, ``postgres`` or ``memory``."""
        return _database_kind(self.database_url)

    @property
    def sqlite_path(self) -> Path:
        """The file of a ``sqlite:///path`` URL (``sqlite:////abs/path`` is absolute)."""
        return Path(self.database_url[len("sqlite:///") :])

    @property
    def jwt_secret_path(self) -> Path:
        return self.data_dir / "jwt-secret"


def _database_kind(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    if scheme == "sqlite":
        return "sqlite"
    if scheme == "memory":
        return "memory"
    raise ConfigError(
        f"DATABASE_URL must start with postgresql://, sqlite:/// or memory:// (got {scheme!r})"
    )


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (got {value!r})")


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    data_dir: str | Path = "./omninudge-data",
) -> Settings:
    """Build Settings from the environment (``os.environ`` unless given) and CLI options.

    Raises ConfigError with a one-line explanation.
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else None

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535 (got {port})")
    directory = Path(data_dir).expanduser().resolve()

    # Later issues wire these adapters; until then refuse rather than silently ignore.
    if get("REDIS_URL") is not None:
        raise ConfigError("REDIS_URL is set but Redis is not supported yet: unset it")
    for name in _S3_VARS:
        if get(name) is not None:
            raise ConfigError(f"{name} is set but S3 media storage is not supported yet: unset it")
    reddit_set = [name for name in _REDDIT_VARS if get(name) is not None]
    if reddit_set:
        raise ConfigError(
            f"{reddit_set[0]} is set but Reddit login is not supported yet: unset REDDIT_*"
        )

    database_url = get("DATABASE_URL") or f"sqlite:///{directory / 'omninudge.db'}"
    kind = _database_kind(database_url)
    if kind == "sqlite" and not database_url.startswith("sqlite:///"):
        raise ConfigError("DATABASE_URL for SQLite must look like sqlite:///path/to/file.db")
    if kind == "sqlite" and database_url == "sqlite:///":
        raise ConfigError("DATABASE_URL sqlite:/// needs a file path")

    jwt_secret = get("OMNINUDGE_JWT_SECRET")
    if kind == "postgres" and jwt_secret is None:
        raise ConfigError(
            "OMNINUDGE_JWT_SECRET is required when DATABASE_URL is PostgreSQL "
            "(every instance must share it)"
        )
    if jwt_secret is not None and len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(f"OMNINUDGE_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes")

    dev_login_raw = get("OMNINUDGE_DEV_LOGIN")
    # Dev login is on by default only because no Reddit app is configured (DESIGN.md).
    dev_login = True if dev_login_raw is None else _flag("OMNINUDGE_DEV_LOGIN", dev_login_raw)

    public_url = get("OMNINUDGE_PUBLIC_URL") or f"http://{host}:{port}"
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"OMNINUDGE_PUBLIC_URL must be an http(s) URL (got {public_url!r})")

    return Settings(
        data_dir=directory,
        database_url=database_url,
        host=host,
        port=port,
        public_url=public_url.rstrip("/"),
        jwt_secret=jwt_secret,
        dev_login=dev_login,
        redis_url=None,
        reddit_auth_base=get("REDDIT_AUTH_BASE") or "https://www.reddit.com",
        reddit_api_base=get("REDDIT_API_BASE") or "https://oauth.reddit.com",
    )
