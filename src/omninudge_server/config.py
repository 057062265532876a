"""Configuration: environment variables (DESIGN.md table) -> one frozen ``Settings``.

This is the ONLY module that reads ``os.environ``. Everything else receives a
``Settings``. A bad configuration raises ``ConfigError`` with one human line; the
CLI prints it and exits with status 2 (never a traceback).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

__all__ = ["ConfigError", "Settings", "load_settings"]

# A HS256 key shorter than the hash output is weak (RFC 7518 §3.2).
MIN_JWT_SECRET_BYTES = 32

_REDDIT_VARS = (
    "REDDIT_CLIENT_ID",
    "REDDIT_CLIENT_SECRET",
    "REDDIT_REDIRECT_URI",
    "REDDIT_USER_AGENT",
)
# S3 bucket naming rules (lower case, digits, dots, hyphens; 3 to 63 characters).
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


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
    redis_prefix: str = "omninudge:"  # every Redis key and channel starts with it
    reddit_auth_base: str = "https://www.reddit.com"
    reddit_api_base: str = "https://oauth.reddit.com"
    # The Reddit app (all four set, or none: no Reddit features). See docs/reddit.md.
    reddit_client_id: str | None = None
    reddit_client_secret: str = ""
    reddit_redirect_uri: str = ""
    reddit_user_agent: str = ""
    reddit_rpm: int = 100  # API calls per budget window, shared by every process
    reddit_budget_window_s: float = 60.0
    reddit_max_wait_s: float = 10.0  # a request waits this long for budget, then 429
    token_ttl_s: int = 7 * 24 * 3600
    # WebSocket limits (API.md: auth within 10 s, ping every 30 s).
    ws_auth_timeout_s: float = 10.0
    ws_ping_interval_s: float = 30.0
    ws_max_frame_bytes: int = 128 * 1024
    ws_max_in_flight: int = 256
    # Per-connection flood guard (session.SessionLimits): frames per second and burst.
    ws_frames_per_second: float = 10.0
    ws_frame_burst: float = 30.0
    ws_max_connections_per_user: int = 20  # per process; more are closed with 4429
    ws_send_timeout_s: float = 10.0  # a socket unwritable this long: closed, 4413
    database_timeout_s: float = 3.0  # wait for a PostgreSQL connection, then 503
    max_body_bytes: int = 256 * 1024
    # Per-user message budget: a burst for a paste of messages, a sustained human rate.
    send_rate_per_s: float = 10.0
    send_burst: float = 50.0
    events_max_timeout_s: float = 30.0
    # Concurrent message appends share one transaction (docs/performance.md).
    group_commit: bool = True
    # Media (docs/media.md): S3 when s3_bucket is set, else <data_dir>/media.
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    max_image_bytes: int = 20 * 1024 * 1024
    max_video_bytes: int = 200 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    media_workers: int = 2  # threads decoding images at once
    media_url_ttl_s: int = 3600
    upload_rate_per_s: float = 0.5
    upload_burst: float = 30.0

    @property
    def reddit_configured(self) -> bool:
        return self.reddit_client_id is not None

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


def _positive_int(name: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) <= 0:
        raise ConfigError(f"{name} must be a positive integer (got {value!r})")
    return int(value)


def _media_settings(get: Callable[[str], str | None]) -> dict[str, Any]:
    """The media fields of Settings (docs/configuration.md, docs/media.md)."""
    bucket = get("S3_BUCKET")
    if bucket is not None and not _S3_BUCKET.fullmatch(bucket):
        raise ConfigError(f"S3_BUCKET is not a valid bucket name (got {bucket!r})")
    endpoint = get("S3_ENDPOINT_URL")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"S3_ENDPOINT_URL must be an http(s) URL (got {endpoint!r})")
    return {
        "s3_bucket": bucket,
        "s3_endpoint_url": endpoint,
        "s3_region": get("S3_REGION"),
        "aws_access_key_id": get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": get("AWS_SECRET_ACCESS_KEY"),
        "max_image_bytes": _positive_int(
            "OMNINUDGE_MAX_IMAGE_BYTES", get("OMNINUDGE_MAX_IMAGE_BYTES"), 20 * 1024 * 1024
        ),
        "max_video_bytes": _positive_int(
            "OMNINUDGE_MAX_VIDEO_BYTES", get("OMNINUDGE_MAX_VIDEO_BYTES"), 200 * 1024 * 1024
        ),
        "max_image_pixels": _positive_int(
            "OMNINUDGE_MAX_IMAGE_PIXELS", get("OMNINUDGE_MAX_IMAGE_PIXELS"), 50_000_000
        ),
        "media_workers": _positive_int(
            "OMNINUDGE_MEDIA_WORKERS", get("OMNINUDGE_MEDIA_WORKERS"), 2
        ),
    }


def _limit_settings(get: Callable[[str], str | None]) -> dict[str, Any]:
    """Send budget and WebSocket limits (docs/reliability.md)."""

    def positive_float(name: str, default: float) -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value < float("inf"):
            raise ConfigError(f"{name} must be a positive number (got {raw!r})")
        return value

    return {
        "send_rate_per_s": positive_float("OMNINUDGE_SEND_RATE", 10.0),
        "send_burst": positive_float("OMNINUDGE_SEND_BURST", 50.0),
        "ws_send_timeout_s": positive_float("OMNINUDGE_WS_SEND_TIMEOUT_S", 10.0),
        "database_timeout_s": positive_float("OMNINUDGE_DATABASE_TIMEOUT_S", 3.0),
        "ws_max_connections_per_user": _positive_int(
            "OMNINUDGE_WS_MAX_CONNECTIONS_PER_USER",
            get("OMNINUDGE_WS_MAX_CONNECTIONS_PER_USER"),
            20,
        ),
    }


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

    redis_url = get("REDIS_URL")
    if redis_url is not None and urlsplit(redis_url).scheme not in _REDIS_SCHEMES:
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    redis_prefix = get("OMNINUDGE_REDIS_PREFIX") or "omninudge:"
    media = _media_settings(get)
    reddit_missing = [name for name in _REDDIT_VARS if get(name) is None]
    if 0 < len(reddit_missing) < len(_REDDIT_VARS):
        raise ConfigError(f"{reddit_missing[0]} is missing: set all of {', '.join(_REDDIT_VARS)}")
    reddit_configured = not reddit_missing
    reddit_rpm_raw = get("OMNINUDGE_REDDIT_RPM") or "100"
    if not (reddit_rpm_raw.isdigit() and 2 <= int(reddit_rpm_raw) <= 100_000):
        raise ConfigError(f"OMNINUDGE_REDDIT_RPM must be an integer >= 2 (got {reddit_rpm_raw!r})")

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

    group_commit_raw = get("OMNINUDGE_GROUP_COMMIT")
    group_commit = group_commit_raw is None or _flag("OMNINUDGE_GROUP_COMMIT", group_commit_raw)

    dev_login_raw = get("OMNINUDGE_DEV_LOGIN")
    # Dev login is on by default only because no Reddit app is configured (DESIGN.md).
    dev_login = (
        not reddit_configured
        if dev_login_raw is None
        else _flag("OMNINUDGE_DEV_LOGIN", dev_login_raw)
    )

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
        group_commit=group_commit,
        **media,
        **_limit_settings(get),
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        reddit_auth_base=get("REDDIT_AUTH_BASE") or "https://www.reddit.com",
        reddit_api_base=get("REDDIT_API_BASE") or "https://oauth.reddit.com",
        reddit_client_id=get("REDDIT_CLIENT_ID"),
        reddit_client_secret=get("REDDIT_CLIENT_SECRET") or "",
        reddit_redirect_uri=get("REDDIT_REDIRECT_URI") or "",
        reddit_user_agent=get("REDDIT_USER_AGENT") or "",
        reddit_rpm=int(reddit_rpm_raw),
    )
