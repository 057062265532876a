"""Pieces every storage adapter shares: the envelope as a JSON mapping, and the opaque
keyset cursor over ``(epoch microseconds, id)`` positions.

Cursors are base64url of ``[tag, micros, id]``; the ``tag`` (``c`` conversations, ``m``
messages) keeps a cursor of one listing from being used on another. Clients treat them
as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from omninudge_core.errors import InvalidFrame
from omninudge_core.models import Envelope, WrappedKey

__all__ = ["Key", "decode_cursor", "encode_cursor", "envelope_from_mapping", "envelope_to_mapping"]

Key = tuple[int, str]
"""A keyset position: (epoch microseconds, id)."""


def envelope_to_mapping(envelope: Envelope) -> dict[str, Any]:
    """The API.md v1 JSON object of an envelope."""
    return {
        "v": envelope.v,
        "alg": envelope.alg,
        "sender_device": envelope.sender_device,
        "epk": envelope.epk,
        "iv": envelope.iv,
        "ct": envelope.ct,
        "keys": [{"device": k.device, "iv": k.iv, "wk": k.wk} for k in envelope.keys],
        "sig": envelope.sig,
    }


def envelope_from_mapping(obj: Mapping[str, Any]) -> Envelope:
    """The envelope of a stored JSON object (written by ``envelope_to_mapping``)."""
    return Envelope(
        v=obj["v"],
        alg=obj["alg"],
        sender_device=obj["sender_device"],
        epk=obj["epk"],
        iv=obj["iv"],
        ct=obj["ct"],
        keys=tuple(WrappedKey(device=k["device"], iv=k["iv"], wk=k["wk"]) for k in obj["keys"]),
        sig=obj["sig"],
    )


def encode_cursor(tag: str, key: Key) -> str:
    raw = json.dumps([tag, key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(tag: str, cursor: str) -> Key:
    """Raises InvalidFrame(code="invalid_cursor") for anything ``encode_cursor(tag, …)``
    did not make."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidFrame("malformed cursor", code="invalid_cursor", field="before") from exc
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != tag
        or type(value[1]) is not int
        or not isinstance(value[2], str)
    ):
        raise InvalidFrame("malformed cursor", code="invalid_cursor", field="before")
    return (value[1], value[2])
