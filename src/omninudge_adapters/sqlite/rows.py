"""Column encodings and named row constructors for the SQLite adapter.

Times are INTEGER microseconds since the Unix epoch: exact for aware UTC datetimes at
microsecond precision, and numerically ordered. JSON columns are TEXT. Cursors are
opaque URL-safe strings: base64 of ``[tag, micros, id]``, the tag telling a history
cursor from a conversation-list cursor.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from omninudge_adapters.rows import (
    envelope_from_mapping,
    envelope_to_mapping,
)
from omninudge_core.models import (
    Block,
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    Device,
    Envelope,
    Invitation,
    Media,
    MediaKind,
    Message,
    Origin,
    RedditTokens,
    UpgradeState,
    User,
    UserSettings,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

"""A keyset position: (epoch microseconds, id)."""


def to_micros(at: datetime) -> int:
    """Raises ValueError for a naive datetime (whose instant is unknown)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("naive datetime: times must be timezone-aware UTC")
    return (at - _EPOCH) // _MICROSECOND


def to_micros_or_none(at: datetime | None) -> int | None:
    return None if at is None else to_micros(at)


def from_micros(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def from_micros_or_none(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


def dump_json(value: Mapping[str, Any] | list[Any]) -> str:
    try:
        # orjson: several times faster on the hot path (every envelope and event payload).
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        # What orjson refuses (an integer beyond 64 bits, a non-str key) the stdlib writes.
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def load_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # e.g. an integer beyond 64 bits, written by the stdlib


# --- models <-> columns ------------------------------------------------------------------


def settings_json(settings: UserSettings) -> str:
    return dump_json(
        {"read_receipts": settings.read_receipts, "presence_visible": settings.presence_visible}
    )


def user_from_row(row: sqlite3.Row) -> User:
    settings = load_json(row["settings"])
    return User(
        id=row["id"],
        username=row["username"],
        created_at=from_micros(row["created_at"]),
        reddit_id=row["reddit_id"],
        on_platform=bool(row["on_platform"]),
        settings=UserSettings(
            read_receipts=bool(settings["read_receipts"]),
            presence_visible=bool(settings["presence_visible"]),
        ),
    )


def device_from_row(row: sqlite3.Row) -> Device:
    return Device(
        user_id=row["user_id"],
        device_id=row["device_id"],
        public_key=load_json(row["public_key"]),
        signing_key=load_json(row["signing_key"]),
        name=row["name"],
        created_at=from_micros(row["created_at"]),
    )


def block_from_row(row: sqlite3.Row) -> Block:
    return Block(
        blocker_id=row["blocker_id"],
        blocked_id=row["blocked_id"],
        created_at=from_micros(row["created_at"]),
    )


def conversation_from_row(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        participants=(row["user_a"], row["user_b"]),
        kind=ConversationKind(row["kind"]),
        created_at=from_micros(row["created_at"]),
        upgrade_state=UpgradeState(row["upgrade_state"]),
        last_message_at=from_micros_or_none(row["last_message_at"]),
    )


def envelope_json(envelope: Envelope) -> str:
    return dump_json(envelope_to_mapping(envelope))


def envelope_from_json(text: str) -> Envelope:
    return envelope_from_mapping(load_json(text))


MESSAGE_COLUMNS = ", ".join(
    f"m.{name} AS m_{name}"
    for name in (
        "id",
        "conversation_id",
        "sender_id",
        "client_msg_id",
        "origin",
        "sent_at",
        "envelope",
        "text",
        "reddit_fullname",
    )
)
"""Select list for ``messages m``; ``message_from_row`` reads these ``m_``-prefixed names."""


def message_params(message: Message) -> tuple[object, ...]:
    """Parameters for ``INSERT INTO messages (MESSAGE_INSERT_COLUMNS)``."""
    return (
        message.id,
        message.conversation_id,
        message.sender_id,
        message.client_msg_id,
        message.origin.value,
        to_micros(message.sent_at),
        None if message.envelope is None else envelope_json(message.envelope),
        message.text,
        message.reddit_fullname,
    )


MESSAGE_INSERT = (
    "INSERT INTO messages (id, conversation_id, sender_id, client_msg_id, origin, sent_at,"
    " envelope, text, reddit_fullname) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def message_from_row(row: sqlite3.Row) -> Message:
    envelope = row["m_envelope"]
    return Message(
        id=row["m_id"],
        conversation_id=row["m_conversation_id"],
        sender_id=row["m_sender_id"],
        client_msg_id=row["m_client_msg_id"],
        origin=Origin(row["m_origin"]),
        sent_at=from_micros(row["m_sent_at"]),
        envelope=None if envelope is None else envelope_from_json(envelope),
        text=row["m_text"],
        reddit_fullname=row["m_reddit_fullname"],
    )


def delivery_from_row(row: sqlite3.Row) -> DeliveryRecord:
    return DeliveryRecord(
        message_id=row["message_id"],
        recipient_id=row["recipient_id"],
        device_id=row["device_id"],
        status=DeliveryStatus(row["status"]),
        updated_at=from_micros(row["updated_at"]),
    )


def media_from_row(row: sqlite3.Row) -> Media:
    return Media(
        id=row["id"],
        owner_id=row["owner_id"],
        kind=MediaKind(row["kind"]),
        content_type=row["content_type"],
        size=row["size"],
        blob_key=row["blob_key"],
        created_at=from_micros(row["created_at"]),
        width=row["width"],
        height=row["height"],
        thumbnail_key=row["thumbnail_key"],
        thumbnail_content_type=row["thumbnail_content_type"],
    )


def invitation_from_row(row: sqlite3.Row) -> Invitation:
    return Invitation(
        token=row["token"],
        conversation_id=row["conversation_id"],
        inviter_id=row["inviter_id"],
        reddit_username=row["reddit_username"],
        created_at=from_micros(row["created_at"]),
        accepted_at=from_micros_or_none(row["accepted_at"]),
    )


def tokens_from_row(row: sqlite3.Row) -> RedditTokens:
    access = row["access_token_ciphertext"]
    return RedditTokens(
        user_id=row["user_id"],
        refresh_token_ciphertext=bytes(row["refresh_token_ciphertext"]),
        scope=row["scope"],
        updated_at=from_micros(row["updated_at"]),
        access_token_ciphertext=None if access is None else bytes(access),
        access_expires_at=from_micros_or_none(row["access_expires_at"]),
    )


def placeholders(count: int) -> str:
    """``?, ?, ...`` for an IN list."""
    return ", ".join("?" * count)
