"""JSON in and out of the WebSocket with orjson: ``decode_client_frame`` (the codec's
decoder, with a fast path for the frequent frames) and ``dumps`` (a frame dict to
text). Whatever orjson refuses takes the core codec's path, so clients see the same
errors as everywhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from omninudge_core import codec, wire
from omninudge_core.errors import ProtocolError

__all__ = ["decode_client_frame", "dumps"]


def dumps(obj: Mapping[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def decode_client_frame(data: str | bytes) -> wire.ClientFrame:
    """``codec.decode_client_frame`` with orjson's parser. Raises ProtocolError.
    Anything orjson refuses (bad JSON, NaN), and any frame that fails validation, takes
    the codec's own path, so the error a client sees is the same (orjson reads an
    integer beyond 64 bits as a float, which would otherwise change the message)."""
    if len(data) <= codec.MAX_FRAME_BYTES:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            if type(parsed) is dict and len(parsed) == 2 and parsed.get("type") == "ack":
                # The most frequent frame, checked as the codec would (exactly these
                # two keys, seq an int in range); anything else goes the codec's way.
                seq = parsed.get("seq")
                if type(seq) is int and 0 <= seq <= codec.MAX_SEQ:
                    return wire.AckFrame(seq)
            try:
                return codec.structure_client_frame(parsed)
            except ProtocolError:
                pass  # rare: explained below, by the same parser as everywhere else
    return codec.decode_client_frame(data)
