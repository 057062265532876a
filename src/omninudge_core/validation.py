"""Limits and per-class validators of the wire shapes (API.md; docs/protocol.md).

The codec (``omninudge_core.codec``) structures a frame or body strictly and then runs
the validator registered here for its class: lengths, ranges, id alphabets and the
E2E envelope's structure. Each validator raises an ``omninudge_core.errors``
``ProtocolError`` naming the field relative to the object being checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import attrs

from omninudge_core.errors import BadEnvelope, InvalidFrame, PayloadTooLarge
from omninudge_core.models import Envelope
from omninudge_core.wire import (
    AuthFrame,
    CreateConversationBody,
    DevicePutBody,
    DevLoginBody,
    NavAction,
    PostMessageBody,
    PublicJwk,
    ReadBody,
    ReadFrame,
    SendFrame,
    SessionBody,
    SlideshowNavFrame,
    SlideshowStartFrame,
    SlideshowStopFrame,
    TypingFrame,
)

# Limits (API.md; docs/protocol.md lists them all).
MAX_ENVELOPE_BYTES = 65536
MAX_TEXT_CHARS = 10000
MAX_SLIDESHOW_MEDIA = 100
MAX_ID_CHARS = 128
ID_RE = re.compile(r"[A-Za-z0-9_.:-]+")
MAX_TOKEN_CHARS = 4096
MAX_DEVICE_NAME_CHARS = 100
MAX_ENVELOPE_KEYS = 64
MAX_AUTOPLAY_S = 3600
MAX_PAGE_LIMIT = 100
MAX_EVENTS_TIMEOUT_S = 30
MAX_SEQ = 2**63 - 1  # stream positions are PostgreSQL bigints
# A whole frame or body: the largest legal one (a 64 KiB envelope, or 10,000 characters
# of text escaped as \\uXXXX) fits with room to spare; anything bigger is not parsed.
MAX_FRAME_BYTES = 256 * 1024
ENVELOPE_ALG = "ECDH-P256+HKDF-SHA256+A256GCM+ES256"
# Reddit's username rule.
USERNAME_RE = re.compile(r"[A-Za-z0-9_-]{3,20}")

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# Unpadded base64url lengths of the envelope's fixed-size fields.
_EPK_CHARS = 87  # 65 bytes: 0x04 || X || Y
_IV_CHARS = 16  # 12 bytes
_WK_CHARS = 64  # 48 bytes: 32-byte key + 16-byte GCM tag
_SIG_CHARS = 86  # 64 bytes: r || s
_JWK_COORD_CHARS = 43  # 32 bytes
_CT_MIN_CHARS = 22  # 16 bytes: at least the GCM tag
_JWK_OPTIONAL = frozenset({"ext", "key_ops", "alg", "use", "kid"})
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


# --- errors --------------------------------------------------------------------------------


def _invalid(message: str, field: str | None = None, code: str = "invalid_field") -> InvalidFrame:
    return InvalidFrame(message, code=code, field=field)


def _bad_envelope(message: str, field: str) -> BadEnvelope:
    return BadEnvelope(message, field=field)


def _too_large(field: str, limit: int, unit: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"more than {limit} {unit}", field=field, limit=limit)


# --- per-class validators (run after structuring; ``field`` is relative to the object) ---


def _check_id(value: str, field: str) -> None:
    if not value:
        raise _invalid("must not be empty", field)
    if len(value) > MAX_ID_CHARS:
        raise _too_large(field, MAX_ID_CHARS, "characters")
    # Ids are joined with "|" in the envelope's AAD and signature input (API.md), so
    # an id with "|" (or control characters) could be read two ways: refuse it here.
    if ID_RE.fullmatch(value) is None:
        raise _invalid("may only contain A-Z a-z 0-9 _ . : -", field)


def _check_token(value: str, field: str) -> None:
    if not value:
        raise _invalid("must not be empty", field)
    if len(value) > MAX_TOKEN_CHARS:
        raise _too_large(field, MAX_TOKEN_CHARS, "characters")


def _check_username(value: str, field: str) -> None:
    if USERNAME_RE.fullmatch(value) is None:
        raise _invalid("must be a Reddit username (3-20 of A-Z a-z 0-9 _ -)", field)


def _check_text(value: str, field: str) -> None:
    if not value:
        raise _invalid("must not be empty", field)
    if len(value) > MAX_TEXT_CHARS:
        raise _too_large(field, MAX_TEXT_CHARS, "characters")


def _check_content(envelope: Envelope | None, text: str | None) -> None:
    if envelope is None and text is None:
        raise _invalid("missing field (envelope or text)", "envelope", code="missing_field")
    if envelope is not None and text is not None:
        raise _invalid("carries both envelope and text; send exactly one", "text")
    if text is not None:
        _check_text(text, "text")


def _check_b64(value: str, field: str, chars: int | None = None) -> None:
    if chars is not None and len(value) != chars:
        raise _bad_envelope(f"must be {chars} base64url characters (no padding)", field)
    if len(value) % 4 == 1 or _B64URL.fullmatch(value) is None:
        raise _bad_envelope("must be base64url without padding", field)


def _plain(text: str) -> bool:
    """True when ``text`` serializes to JSON as itself between quotes (one byte a char)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


# The compact JSON of an envelope around its variable parts (see ``envelope_size``).
_ENVELOPE_FRAME_BYTES = len(
    json.dumps(
        {"v": 1, "alg": ENVELOPE_ALG, "sender_device": "", "epk": "", "iv": "", "ct": "",
         "keys": [], "sig": ""},
        separators=(",", ":"),
    )
)  # fmt: skip
_KEY_FRAME_BYTES = len('{"device":"","iv":"","wk":""}')


def envelope_size(envelope: Envelope) -> int:
    """The UTF-8 size of the envelope's compact JSON, as the codec would encode it."""
    if _plain(envelope.sender_device) and all(_plain(k.device) for k in envelope.keys):
        size = _ENVELOPE_FRAME_BYTES + len(envelope.sender_device) + len(envelope.epk)
        size += len(envelope.iv) + len(envelope.ct) + len(envelope.sig)
        for key in envelope.keys:
            size += _KEY_FRAME_BYTES + len(key.device) + len(key.iv) + len(key.wk)
        return size + max(len(envelope.keys) - 1, 0)  # the commas between keys
    compact = json.dumps(attrs.asdict(envelope), separators=(",", ":"), ensure_ascii=False)
    return len(compact.encode("utf-8"))


def _check_envelope(env: Envelope) -> None:
    # API.md "E2E envelope (v1)": the server checks structure and sizes only.
    if env.v != 1:
        raise _bad_envelope("unsupported version (must be 1)", "v")
    if env.alg != ENVELOPE_ALG:
        raise _bad_envelope(f"must be {ENVELOPE_ALG!r}", "alg")
    _check_id(env.sender_device, "sender_device")
    _check_b64(env.epk, "epk", _EPK_CHARS)
    if not env.epk.startswith("B") or env.epk[1] > "P" or env.epk[1] < "A":
        # The first byte of an uncompressed point is 0x04: base64url "B" then A-P.
        raise _bad_envelope("must be an uncompressed P-256 point (0x04 || X || Y)", "epk")
    _check_b64(env.iv, "iv", _IV_CHARS)
    _check_b64(env.ct, "ct")
    if len(env.ct) < _CT_MIN_CHARS:
        raise _bad_envelope("must be at least 16 bytes (the GCM tag)", "ct")
    _check_b64(env.sig, "sig", _SIG_CHARS)
    if not env.keys:
        raise _bad_envelope("must wrap the content key for at least one device", "keys")
    if len(env.keys) > MAX_ENVELOPE_KEYS:
        raise _bad_envelope(f"more than {MAX_ENVELOPE_KEYS} entries", "keys")
    seen: set[str] = set()
    for i, key in enumerate(env.keys):
        _check_id(key.device, f"keys[{i}].device")
        _check_b64(key.iv, f"keys[{i}].iv", _IV_CHARS)
        _check_b64(key.wk, f"keys[{i}].wk", _WK_CHARS)
        if key.device in seen:
            raise _bad_envelope("device appears twice", f"keys[{i}].device")
        seen.add(key.device)
    if len(env.ct) > MAX_ENVELOPE_BYTES or envelope_size(env) > MAX_ENVELOPE_BYTES:
        raise PayloadTooLarge(
            f"envelope larger than {MAX_ENVELOPE_BYTES} bytes", limit=MAX_ENVELOPE_BYTES
        )


def check_jwk(jwk: PublicJwk) -> None:
    if jwk.kty != "EC":
        raise _invalid('must be "EC"', "kty")
    if jwk.crv != "P-256":
        raise _invalid('must be "P-256"', "crv")
    for name, coord in (("x", jwk.x), ("y", jwk.y)):
        if len(coord) != _JWK_COORD_CHARS or _B64URL.fullmatch(coord) is None:
            raise _invalid("must be 32 bytes of base64url without padding", name)


def _check_nav(frame: SlideshowNavFrame) -> None:
    _check_id(frame.conversation_id, "conversation_id")
    if frame.action is NavAction.GOTO:
        if (frame.index is None) == (frame.media_id is None):
            raise _invalid("goto takes exactly one of index and media_id", "index")
    elif frame.index is not None or frame.media_id is not None:
        raise _invalid(f"{frame.action.value} takes no index or media_id", "index")
    if frame.media_id is not None:
        _check_id(frame.media_id, "media_id")


def _check_slideshow_start(frame: SlideshowStartFrame) -> None:
    _check_id(frame.conversation_id, "conversation_id")
    if not frame.media_ids:
        raise _invalid("must name at least one media", "media_ids")
    if len(frame.media_ids) > MAX_SLIDESHOW_MEDIA:
        raise _too_large("media_ids", MAX_SLIDESHOW_MEDIA, "items")
    for i, media_id in enumerate(frame.media_ids):
        _check_id(media_id, f"media_ids[{i}]")
    if frame.autoplay_s is not None and not 1 <= frame.autoplay_s <= MAX_AUTOPLAY_S:
        raise _invalid(f"must be between 1 and {MAX_AUTOPLAY_S} seconds", "autoplay_s")


def _check_auth(frame: AuthFrame) -> None:
    _check_token(frame.token, "token")


def _check_send(frame: SendFrame | PostMessageBody) -> None:
    _check_id(frame.conversation_id, "conversation_id")
    _check_id(frame.client_msg_id, "client_msg_id")
    _check_content(frame.envelope, frame.text)


def _check_conversation_only(frame: TypingFrame | SlideshowStopFrame) -> None:
    _check_id(frame.conversation_id, "conversation_id")


def _check_read_frame(frame: ReadFrame) -> None:
    _check_id(frame.conversation_id, "conversation_id")
    _check_id(frame.up_to, "up_to")


def _check_read_body(body: ReadBody) -> None:
    _check_id(body.up_to, "up_to")


def _check_dev_login(body: DevLoginBody) -> None:
    _check_username(body.username, "username")


def _check_session(body: SessionBody) -> None:
    _check_token(body.code, "code")
    _check_token(body.state, "state")


def _check_device_put(body: DevicePutBody) -> None:
    if len(body.name) > MAX_DEVICE_NAME_CHARS:
        raise _too_large("name", MAX_DEVICE_NAME_CHARS, "characters")


def _check_create_conversation(body: CreateConversationBody) -> None:
    if body.user_id is None and body.reddit_username is None:
        raise _invalid("missing field (user_id or reddit_username)", "user_id", "missing_field")
    if body.user_id is not None and body.reddit_username is not None:
        raise _invalid("give exactly one of user_id and reddit_username", "reddit_username")
    if body.user_id is not None:
        _check_id(body.user_id, "user_id")
    if body.reddit_username is not None:
        _check_username(body.reddit_username, "reddit_username")


VALIDATORS: dict[type, Callable[[Any], None]] = {
    Envelope: _check_envelope,
    PublicJwk: check_jwk,
    AuthFrame: _check_auth,
    SendFrame: _check_send,
    TypingFrame: _check_conversation_only,
    ReadFrame: _check_read_frame,
    SlideshowStartFrame: _check_slideshow_start,
    SlideshowNavFrame: _check_nav,
    SlideshowStopFrame: _check_conversation_only,
    DevLoginBody: _check_dev_login,
    SessionBody: _check_session,
    DevicePutBody: _check_device_put,
    CreateConversationBody: _check_create_conversation,
    PostMessageBody: _check_send,
    ReadBody: _check_read_body,
}
