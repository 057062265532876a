"""Row <-> model conversions for the PostgreSQL adapter (named constructors, no ``**row``).

Rows come back as tuples in the column order of the ``*_COLUMNS`` constants below;
every query that builds a model selects exactly those columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omninudge_adapters.rows import envelope_from_mapping, envelope_to_mapping
from omninudge_core.models import (
    Block,
    Conversation,
    ConversationKind,
    DeliveryRecord,
    DeliveryStatus,
    Device,
    EventKind,
    Invitation,
    Media,
    MediaKind,
    Message,
    Origin,
    RedditTokens,
    StreamEvent,
    UpgradeState,
    User,
    UserSettings,
)

Row = Sequence[Any]

USER_COLUMNS = "id, username, reddit_id, on_platform, settings, created_at"
DEVICE_COLUMNS = "user_id, device_id, public_key, signing_key, name, created_at"
CONVERSATION_COLUMNS = "id, user_a, user_b, kind, upgrade_state, created_at, last_message_at"
MESSAGE_COLUMNS = (
    "id, conversation_id, sender_id, client_msg_id, origin, sent_at, envelope, body,"
    " reddit_fullname"
)
DELIVERY_COLUMNS = "message_id, recipient_id, device_id, status, updated_at"
MEDIA_COLUMNS = (
    "id, owner_id, kind, content_type, size, blob_key, created_at, width, height,"
    " thumbnail_key, thumbnail_content_type"
)
INVITATION_COLUMNS = "token, conversation_id, inviter_id, reddit_username, created_at, accepted_at"
TOKEN_COLUMNS = (
    "user_id, refresh_token_ciphertext, scope, updated_at, access_token_ciphertext,"
    " access_expires_at"
)


def prefixed(columns: str, alias: str) -> str:
    """``"a, b"`` -> ``"m.a, m.b"`` for queries that join."""
    return ", ".join(f"{alias}.{name.strip()}" for name in columns.split(","))


def settings_to_json(settings: UserSettings) -> dict[str, bool]:
    return {
        "read_receipts": settings.read_receipts,
        "presence_visible": settings.presence_visible,
    }


def user_from_row(row: Row) -> User:
    user_id, username, reddit_id, on_platform, settings, created_at = row
    return User(
        id=user_id,
        username=username,
        created_at=created_at,
        reddit_id=reddit_id,
        on_platform=on_platform,
        settings=UserSettings(
            read_receipts=bool(settings.get("read_receipts", True)),
            presence_visible=bool(settings.get("presence_visible", True)),
        ),
    )


def device_from_row(row: Row) -> Device:
    user_id, device_id, public_key, signing_key, name, created_at = row
    return Device(
        user_id=user_id,
        device_id=device_id,
        public_key=dict(public_key),
        signing_key=dict(signing_key),
        name=name,
        created_at=created_at,
    )


def block_from_row(row: Row) -> Block:
    blocker_id, blocked_id, created_at = row
    return Block(blocker_id=blocker_id, blocked_id=blocked_id, created_at=created_at)


def conversation_from_row(row: Row) -> Conversation:
    conversation_id, user_a, user_b, kind, upgrade_state, created_at, last_message_at = row
    return Conversation(
        id=conversation_id,
        participants=(user_a, user_b),
        kind=ConversationKind(kind),
        created_at=created_at,
        upgrade_state=UpgradeState(upgrade_state),
        last_message_at=last_message_at,
    )


envelope_to_json = envelope_to_mapping
envelope_from_json = envelope_from_mapping


def message_params(message: Message) -> tuple[Any, ...]:
    """Parameters in ``MESSAGE_COLUMNS`` order (the envelope as a JSON-ready dict)."""
    return (
        message.id,
        message.conversation_id,
        message.sender_id,
        message.client_msg_id,
        message.origin.value,
        message.sent_at,
        None if message.envelope is None else envelope_to_json(message.envelope),
        message.text,
        message.reddit_fullname,
    )


def message_from_row(row: Row) -> Message:
    (
        message_id,
        conversation_id,
        sender_id,
        client_msg_id,
        origin,
        sent_at,
        envelope,
        body,
        reddit_fullname,
    ) = row
    return Message(
        id=message_id,
        conversation_id=conversation_id,
        sender_id=sender_id,
        client_msg_id=client_msg_id,
        origin=Origin(origin),
        sent_at=sent_at,
        envelope=None if envelope is None else envelope_from_json(envelope),
        text=body,
        reddit_fullname=reddit_fullname,
    )


def delivery_from_row(row: Row) -> DeliveryRecord:
    message_id, recipient_id, device_id, status, updated_at = row
    return DeliveryRecord(
        message_id=message_id,
        recipient_id=recipient_id,
        device_id=device_id,
        status=DeliveryStatus(status),
        updated_at=updated_at,
    )


def event_from_row(row: Row, message: Message | None) -> StreamEvent:
    """``row`` is (user_id, seq, kind, payload, created_at)."""
    user_id, seq, kind, payload, created_at = row
    return StreamEvent(
        user_id=user_id,
        seq=seq,
        kind=EventKind(kind),
        created_at=created_at,
        message=message,
        payload=payload,
    )


def media_from_row(row: Row) -> Media:
    (
        media_id,
        owner_id,
        kind,
        content_type,
        size,
        blob_key,
        created_at,
        width,
        height,
        thumbnail_key,
        thumbnail_content_type,
    ) = row
    return Media(
        id=media_id,
        owner_id=owner_id,
        kind=MediaKind(kind),
        content_type=content_type,
        size=size,
        blob_key=blob_key,
        created_at=created_at,
        width=width,
        height=height,
        thumbnail_key=thumbnail_key,
        thumbnail_content_type=thumbnail_content_type,
    )


def invitation_from_row(row: Row) -> Invitation:
    token, conversation_id, inviter_id, reddit_username, created_at, accepted_at = row
    return Invitation(
        token=token,
        conversation_id=conversation_id,
        inviter_id=inviter_id,
        reddit_username=reddit_username,
        created_at=created_at,
        accepted_at=accepted_at,
    )


def tokens_from_row(row: Row) -> RedditTokens:
    user_id, refresh, scope, updated_at, access, access_expires_at = row
    return RedditTokens(
        user_id=user_id,
        refresh_token_ciphertext=bytes(refresh),
        scope=scope,
        updated_at=updated_at,
        access_token_ciphertext=None if access is None else bytes(access),
        access_expires_at=access_expires_at,
    )
