"""``GET /api/openapi.json``: the HTTP part of API.md as OpenAPI 3.1.

Hand-written from one table (``OPERATIONS``); a test checks that it names exactly
the routes the app serves, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from omninudge_server.config import Settings

__all__ = ["OPERATIONS", "openapi_document"]

_JWK = {
    "type": "object",
    "required": ["kty", "crv", "x", "y"],
    "properties": {
        "kty": {"const": "EC"},
        "crv": {"const": "P-256"},
        "x": {"type": "string", "description": "base64url, 32 bytes"},
        "y": {"type": "string", "description": "base64url, 32 bytes"},
    },
}
_ENVELOPE = {
    "type": "object",
    "description": "E2E envelope v1 (API.md); at most 64 KiB",
    "required": ["v", "alg", "sender_device", "epk", "iv", "ct", "keys", "sig"],
    "properties": {
        "v": {"const": 1},
        "alg": {"const": "ECDH-P256+HKDF-SHA256+A256GCM+ES256"},
        "sender_device": {"type": "string"},
        "epk": {"type": "string"},
        "iv": {"type": "string"},
        "ct": {"type": "string"},
        "keys": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["device", "iv", "wk"],
                "properties": {
                    "device": {"type": "string"},
                    "iv": {"type": "string"},
                    "wk": {"type": "string"},
                },
            },
        },
        "sig": {"type": "string"},
    },
}
_SETTINGS = {
    "type": "object",
    "properties": {"read_receipts": {"type": "boolean"}, "presence_visible": {"type": "boolean"}},
}
_USER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "username": {"type": "string"},
        "reddit_id": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "settings": {"$ref": "#/components/schemas/Settings"},
    },
}
_MESSAGE = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "conversation_id": {"type": "string"},
        "sender_id": {"type": "string"},
        "client_msg_id": {"type": "string"},
        "origin": {"enum": ["platform", "reddit"]},
        "envelope": {"$ref": "#/components/schemas/Envelope"},
        "text": {"type": "string"},
        "sent_at": {"type": "string", "format": "date-time"},
        "status": {
            "enum": ["accepted", "pushed", "delivered", "read", "relayed_to_reddit", "relay_failed"]
        },
    },
}
_CONVERSATION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "participants": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["platform", "reddit"]},
        "upgrade_state": {"type": "string"},
        "last_message_at": {"type": ["string", "null"], "format": "date-time"},
        "unread": {"type": "integer"},
    },
}
_DEVICE = {
    "type": "object",
    "properties": {
        "device_id": {"type": "string"},
        "user_id": {"type": "string"},
        "public_key": {"$ref": "#/components/schemas/Jwk"},
        "signing_key": {"$ref": "#/components/schemas/Jwk"},
        "name": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "additionalProperties": True,
        }
    },
}
_SESSION = {
    "type": "object",
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
        "user": {"$ref": "#/components/schemas/User"},
    },
}


_REDDIT_POST = {
    "type": "object",
    "properties": {
        name: {"type": kind}
        for name, kind in (
            ("id", "string"), ("title", "string"), ("author", "string"),
            ("author_on_platform", "boolean"), ("permalink", "string"), ("url", "string"),
            ("thumbnail", ["string", "null"]), ("preview_url", ["string", "null"]),
            ("media_type", "string"), ("over_18", "boolean"), ("score", "integer"),
            ("num_comments", "integer"), ("created_at", "string"),
        )
    },
}  # fmt: skip


_MEDIA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "owner_id": {"type": "string"},
        "kind": {"enum": ["image", "video"]},
        "content_type": {"type": "string"},
        "size": {"type": "integer"},
        "width": {"type": ["integer", "null"]},
        "height": {"type": ["integer", "null"]},
        "url": {"type": "string", "description": "signed; valid until expires_at"},
        "thumbnail_url": {"type": ["string", "null"]},
        "thumbnail_content_type": {"type": ["string", "null"]},
        "thumbnail_status": {"enum": ["ready", "unavailable_no_ffmpeg", "failed"]},
        "expires_at": {"type": "string", "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
_MULTIPART_FILE = {
    "type": "object",
    "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"}},
}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STR = {"type": "string"}
_PAGE_PARAMS = [
    {"name": "before", "in": "query", "schema": _STR},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
]

# (method, path, summary, request body schema, success status, response schema, auth?, params)
OPERATIONS: list[tuple[str, str, str, Any, int, Any, bool, list[dict[str, Any]]]] = [
    ("get", "/health", "Health of the server and its dependencies (503 when unhealthy)",
     None, 200, {"type": "object"}, False, []),
    ("get", "/metrics", "Prometheus metrics (text format)", None, 200, None, False, []),
    ("get", "/api/openapi.json", "This document", None, 200, {"type": "object"}, False, []),
    ("post", "/api/auth/dev-login", "Log in by username (only when dev login is enabled)",
     _obj(["username"], username=_STR), 200, _ref("Session"), False, []),
    ("post", "/api/auth/logout", "Revoke the current token everywhere", None, 204, None, True, []),
    ("get", "/api/me", "The caller's account", None, 200, _ref("User"), True, []),
    ("patch", "/api/me/settings", "Change read receipts / presence visibility",
     _ref("Settings"), 200, _ref("Settings"), True, []),
    ("get", "/api/users/by-name/{username}", "Look a Reddit username up", None, 200,
     _obj(["id", "username", "on_platform"], id={"type": ["string", "null"]}, username=_STR,
          on_platform={"type": "boolean"}), True, []),
    ("get", "/api/users/{user_id}/devices", "A user's devices and public keys", None, 200,
     {"type": "array", "items": _ref("Device")}, True, []),
    ("put", "/api/devices/{device_id}", "Register a device (201), or the same keys again (200)",
     _obj(["public_key", "signing_key", "name"], public_key=_ref("Jwk"),
          signing_key=_ref("Jwk"), name=_STR), 201, _ref("Device"), True, []),
    ("delete", "/api/devices/{device_id}", "Remove one of your devices", None, 204, None, True,
     []),
    ("get", "/api/blocks", "The people you block", None, 200,
     _obj(["blocks"], blocks={"type": "array", "items": _obj(
         ["user_id", "created_at"], user_id=_STR, created_at=_STR)}), True, []),
    ("put", "/api/blocks/{user_id}", "Block a user (idempotent)", None, 204, None, True, []),
    ("delete", "/api/blocks/{user_id}", "Unblock a user (idempotent)", None, 204, None, True, []),
    ("post", "/api/conversations", "The one conversation with a user (201 new, 200 existing)",
     {"type": "object", "properties": {"user_id": _STR, "reddit_username": _STR}}, 201,
     _ref("Conversation"), True, []),
    ("get", "/api/conversations", "Your conversations, newest activity first", None, 200,
     _obj(["conversations", "next_cursor"],
          conversations={"type": "array", "items": _ref("Conversation")},
          next_cursor={"type": ["string", "null"]}), True, _PAGE_PARAMS),
    ("get", "/api/conversations/{conversation_id}/messages", "History, newest first", None, 200,
     _obj(["messages", "next_cursor"], messages={"type": "array", "items": _ref("Message")},
          next_cursor={"type": ["string", "null"]}), True, _PAGE_PARAMS),
    ("post", "/api/conversations/{conversation_id}/read", "Mark read up to a message",
     _obj(["up_to"], up_to=_STR), 204, None, True, []),
    ("post", "/api/messages",
     "Send (201); the same client_msg_id again answers 200; 409 device_mismatch",
     _obj(["conversation_id", "client_msg_id"], conversation_id=_STR, client_msg_id=_STR,
          envelope=_ref("Envelope"), text=_STR), 201,
     _obj(["message"], message=_ref("Message"),
          relay_error={"type": "object", "description": "why Reddit refused a relay"}),
     True, []),
    ("get", "/api/events", "Long-poll: the events the WebSocket pushes", None, 200,
     _obj(["events", "next"], events={"type": "array", "items": {"type": "object"}},
          next={"type": "integer"}), True,
     [{"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
      {"name": "timeout", "in": "query",
       "schema": {"type": "integer", "minimum": 0, "maximum": 30}}]),
    ("get", "/", "The web client (HTML; strict Content-Security-Policy)", None, 200, None,
     False, []),
    ("get", "/manifest.webmanifest", "The web client's app manifest", None, 200,
     {"type": "object"}, False, []),
    ("get", "/static/{name}", "The web client's ES modules, CSS and icons", None, 200, None,
     False, []),
    ("get", "/api/users/{user_id}", "A user's name by id", None, 200,
     _obj(["id", "username", "on_platform"], id=_STR, username=_STR,
          on_platform={"type": "boolean"}), True, []),
    # Reddit (docs/reddit.md): OAuth login, browsing, invitations.
    ("get", "/api/auth/reddit/login", "302 to Reddit's consent page with a signed state",
     None, 302, None, False, [{"name": "return_to", "in": "query", "schema": _STR}]),
    ("get", "/api/auth/reddit/callback",
     "Reddit's redirect (browser flow): log in, set the cookie, 302 to return_to",
     None, 302, None, False, [{"name": "code", "in": "query", "schema": _STR},
                              {"name": "state", "in": "query", "schema": _STR}]),
    ("post", "/api/auth/session", "Finish a Reddit login: 400 invalid_state / state_expired, "
     "403 state_replayed", _obj(["code", "state"], code=_STR, state=_STR), 200,
     _ref("Session"), False, []),
    ("get", "/api/reddit/r/{subreddit}/{sort}",
     "A subreddit listing (sort: hot, new, top, rising), cached 5 min; stale when Reddit is "
     "down", None, 200,
     _obj(["posts", "after", "cached_at", "stale"],
          posts={"type": "array", "items": _ref("RedditPost")},
          after={"type": ["string", "null"]}, cached_at=_STR, stale={"type": "boolean"}),
     True, [{"name": "after", "in": "query", "schema": _STR},
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            {"name": "t", "in": "query",
             "schema": {"enum": ["hour", "day", "week", "month", "year", "all"]}}]),
    ("get", "/invite/{token}", "The invitation landing page (HTML)", None, 200, None, False,
     []),
    # Media (docs/media.md).
    ("post", "/api/media", "Upload an image or video (multipart `file`, streamed): 201; "
     "413 too_large, 415 unsupported_media_type, 400 corrupt_media, 429 rate_limited",
     _MULTIPART_FILE, 201, _ref("Media"), True, []),
    ("get", "/api/media/{media_id}", "Fresh signed URLs (uploader, or a participant of a "
     "conversation it was shared in; 404 otherwise)", None, 200, _ref("Media"), True, []),
    ("put", "/api/media/{media_id}/shares/{conversation_id}", "Share your media with a "
     "conversation you take part in, so its other participant gets URLs (idempotent; 404 "
     "not yours or not your conversation, 403 blocked)", None, 204, None, True, []),
    ("get", "/media/{prefix}/{folder}/{name}", "The bytes of a blob, local-directory store "
     "only (a signed URL: 403 when the signature is bad or expired)", None, 200, None, False,
     [{"name": "exp", "in": "query", "required": True, "schema": {"type": "integer"}},
      {"name": "sig", "in": "query", "required": True, "schema": _STR}]),
]  # fmt: skip


# Answers that are not application/json (checked by tests/drills/test_schemathesis.py).
_ANSWER_TYPES = {"/manifest.webmanifest": "application/manifest+json"}


def _path_params(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": n, "in": "path", "required": True, "schema": _STR} for n in names]


def openapi_document(settings: Settings) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, status, answer, needs_auth, params in OPERATIONS:
        operation: dict[str, Any] = {"summary": summary}
        parameters = _path_params(path) + params
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            media_type = "multipart/form-data" if body is _MULTIPART_FILE else "application/json"
            operation["requestBody"] = {
                "required": True,
                "content": {media_type: {"schema": body}},
            }
        success: dict[str, Any] = {"description": "success"}
        if answer is not None:
            answer_type = _ANSWER_TYPES.get(path, "application/json")
            success["content"] = {answer_type: {"schema": answer}}
        errors: dict[str, Any] = {"application/json": {"schema": _ref("Error")}}
        if path.startswith("/invite/"):  # a person opens it: errors are pages too
            errors["text/html"] = {"schema": {"type": "string"}}
        operation["responses"] = {
            str(status): success,
            "default": {"description": "an API error", "content": errors},
        }
        if needs_auth:
            operation["security"] = [{"bearer": []}, {"cookie": []}]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OmniNudge reference server",
            "version": "0.1.0",
            "description": "End-to-end encrypted 1:1 messaging for Reddit users. "
            "WebSocket frames at /ws are described in docs/api.md and docs/protocol.md.",
        },
        "servers": [{"url": settings.public_url}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "omninudge_session"},
            },
            "schemas": {
                "Jwk": _JWK,
                "Envelope": _ENVELOPE,
                "Settings": _SETTINGS,
                "User": _USER,
                "Message": _MESSAGE,
                "Conversation": _CONVERSATION,
                "Device": _DEVICE,
                "Session": _SESSION,
                "Error": _ERROR,
                "Media": _MEDIA,
                "RedditPost": _REDDIT_POST,
            },
        },
    }
