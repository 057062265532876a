"""Opaque keyset cursors: base64url of ``"<tag>|<iso time>|<id>"``.

Clients treat them as opaque; the store decodes them back to the (time, id) position
after which the next page starts. A cursor that does not decode is the client's
fault: ``InvalidFrame(code="invalid_cursor")`` - so is a cursor of another listing
(the ``tag``: ``c`` conversations, ``m`` messages).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from omninudge_core.errors import InvalidFrame

__all__ = ["decode_cursor", "encode_cursor"]


def encode_cursor(tag: str, at: datetime, item_id: str) -> str:
    raw = f"{tag}|{at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(tag: str, cursor: str) -> tuple[datetime, str]:
    """Raises InvalidFrame(code="invalid_cursor") for anything ``encode_cursor(tag, ...)``
    did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
        found_tag, _, rest = raw.partition("|")
        at_text, separator, item_id = rest.partition("|")
        at = datetime.fromisoformat(at_text)
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise _invalid() from exc
    if found_tag != tag or not separator or not item_id or at.tzinfo is None:
        raise _invalid()
    return at, item_id


def _invalid() -> InvalidFrame:
    return InvalidFrame("the cursor is not valid", code="invalid_cursor", field="before")
