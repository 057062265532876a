"""The wire codec: JSON <-> ``omninudge_core.wire`` classes, strictly validated.

Theory of operation. ``make_converter()`` builds a cattrs converter whose hooks are
strict (a bool is not an int, an int is not a string, a float is never an int, a
list is required where a sequence is expected), that refuses unknown keys, and that
runs one validator per class after structuring (lengths, ranges, the E2E envelope's
structure). WebSocket frames are tagged unions on ``"type"``.

Decoding runs on a fast converter (``detailed_validation=False``); only when it fails
is the input run again through a detailed converter, whose error tree gives the
precise field path (``envelope.keys[2].wk``). Whatever goes wrong, the caller sees one
``omninudge_core.errors`` ``ProtocolError``: ``InvalidFrame`` (``invalid_json``,
``invalid_frame``, ``unknown_type``, ``missing_field``, ``invalid_field``,
``unexpected_field``), ``PayloadTooLarge`` (``too_large``) or ``BadEnvelope``
(``invalid_envelope``), never a TypeError, KeyError or cattrs exception.

On the wire, times are RFC 3339 UTC strings with millisecond precision and a ``Z``
(``2026-11-24T21:09:13.123Z``) and enums are their values.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

from omninudge_core.errors import BadEnvelope, InvalidFrame, PayloadTooLarge, ProtocolError
from omninudge_core.models import DeliveryStatus, EventKind, StreamEvent
from omninudge_core.validation import (
    _JWK_OPTIONAL,
    _RFC3339,
    ENVELOPE_ALG,
    MAX_AUTOPLAY_S,
    MAX_DEVICE_NAME_CHARS,
    MAX_ENVELOPE_BYTES,
    MAX_ENVELOPE_KEYS,
    MAX_EVENTS_TIMEOUT_S,
    MAX_FRAME_BYTES,
    MAX_ID_CHARS,
    MAX_PAGE_LIMIT,
    MAX_SEQ,
    MAX_SLIDESHOW_MEDIA,
    MAX_TEXT_CHARS,
    MAX_TOKEN_CHARS,
    USERNAME_RE,
    VALIDATORS,
    _invalid,
    _too_large,
    check_jwk,
    envelope_size,
)
from omninudge_core.wire import (
    ClientFrame,
    ErrorFrame,
    ErrorInfo,
    EventsQuery,
    MessageFrame,
    PageQuery,
    PublicJwk,
    ServerFrame,
    WireMessage,
)

__all__ = [
    "ENVELOPE_ALG",
    "MAX_AUTOPLAY_S",
    "MAX_DEVICE_NAME_CHARS",
    "MAX_ENVELOPE_BYTES",
    "MAX_ENVELOPE_KEYS",
    "MAX_FRAME_BYTES",
    "MAX_ID_CHARS",
    "MAX_PAGE_LIMIT",
    "MAX_SEQ",
    "MAX_SLIDESHOW_MEDIA",
    "MAX_TEXT_CHARS",
    "MAX_TOKEN_CHARS",
    "USERNAME_RE",
    "Codec",
    "decode_body",
    "decode_client_frame",
    "decode_events_query",
    "decode_page_query",
    "default_codec",
    "encode",
    "encode_server_frame",
    "envelope_size",
    "format_instant",
    "make_converter",
    "structure_client_frame",
    "unstructure",
    "unstructure_server_frame",
]

T = TypeVar("T")


def _join(prefix: str, field: str | None) -> str:
    if not field:
        return prefix
    return prefix + field if field.startswith("[") else f"{prefix}.{field}"


def _relocated(
    error: ProtocolError, field: str | None, message: str | None = None
) -> ProtocolError:
    """A fresh copy of ``error`` at ``field`` (fresh, because cattrs adds its path notes
    to the exception object itself and a reused one would carry stale notes)."""
    message = error.message if message is None else message
    if isinstance(error, PayloadTooLarge):
        return PayloadTooLarge(message, field=field, limit=error.limit)
    if isinstance(error, BadEnvelope):
        return BadEnvelope(message, field=field)
    if isinstance(error, InvalidFrame):
        return InvalidFrame(message, code=error.code, field=field)
    return error


def _prefixed(error: ProtocolError, prefix: str) -> ProtocolError:
    return _relocated(error, _join(prefix, getattr(error, "field", None)))


def _explain(exc: BaseException) -> ProtocolError:
    """Map an exception raised while structuring (a cattrs error tree from the detailed
    converter, or a leaf) to one ProtocolError whose ``field`` is the path."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, ForbiddenExtraKeysError):
        extra = min(str(k) for k in exc.extra_fields)
        return _invalid("unexpected field", extra, code="unexpected_field")
    if isinstance(exc, ExceptionGroup) and exc.exceptions:
        sub = exc.exceptions[0]
        for note in getattr(sub, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                if isinstance(sub, KeyError):
                    return _invalid("missing field", note.name, code="missing_field")
                return _prefixed(_explain(sub), note.name)
            if isinstance(note, IterableValidationNote):
                return _prefixed(_explain(sub), f"[{note.index}]")
        return _explain(sub)
    if isinstance(exc, RecursionError):
        return _invalid("nested too deeply", code="invalid_frame")
    return _invalid("invalid value")


def _finalize(error: ProtocolError) -> ProtocolError:
    """The error to raise: its message names the field path."""
    field: str | None = getattr(error, "field", None)
    return _relocated(error, field, f"{field}: {error.message}" if field else None)


# --- primitive hooks: strict, never coercing -------------------------------------------------


def _structure_str(value: Any, _: Any) -> str:
    if type(value) is str:
        # isascii() is O(1) in CPython; only non-ASCII text pays for the surrogate check
        # (a lone surrogate cannot be encoded to UTF-8 and would break every encoder).
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid("must be valid Unicode (no lone surrogates)") from None
        return value
    raise _invalid("must be a string")


def _structure_int(value: Any, _: Any) -> int:
    if type(value) is int:
        if 0 <= value <= MAX_SEQ:
            return value
        raise _invalid(f"must be between 0 and {MAX_SEQ}")
    raise _invalid("must be an integer")


def _structure_bool(value: Any, _: Any) -> bool:
    if type(value) is bool:
        return value
    raise _invalid("must be true or false")


def _structure_datetime(value: Any, _: Any) -> datetime:
    if type(value) is not str or _RFC3339.fullmatch(value) is None:
        raise _invalid("must be an RFC 3339 time such as 2026-11-24T21:09:13.123Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid("must be a valid RFC 3339 time") from None
    return parsed.astimezone(UTC)


def format_instant(value: datetime) -> str:
    """An instant as it goes on the wire (module doc): what the converters write."""
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:23] + "Z"


def _structure_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    if type(value) is str:
        try:
            return cls(value)
        except ValueError:
            pass
    allowed = ", ".join(repr(m.value) for m in cls)
    raise _invalid(f"must be one of {allowed}")


def _structure_json_object(value: Any, _: Any) -> dict[str, Any]:
    if type(value) is not dict or not all(type(k) is str for k in value):
        raise _invalid("must be a JSON object")
    return dict(value)


def _is_json_object(t: Any) -> bool:
    return get_origin(t) is Mapping and get_args(t) == (str, Any)


def _is_homogeneous_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_pair(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is not Ellipsis


# --- the converter factory -----------------------------------------------------------------


def _tag(cls: type) -> str:
    tag: str = cls.TYPE  # type: ignore[attr-defined]
    return tag


def make_converter(*, detailed: bool = False) -> cattrs.Converter:
    """A converter for every wire class. ``detailed`` trades speed for error paths
    (cattrs ``detailed_validation``); the Codec uses it only to explain a failure."""
    conv = cattrs.Converter(detailed_validation=detailed, forbid_extra_keys=True)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_unstructure_hook(datetime, format_instant)
    conv.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _structure_enum
    )
    conv.register_structure_hook_func(_is_json_object, _structure_json_object)
    conv.register_unstructure_hook_func(_is_json_object, dict)
    conv.register_structure_hook_factory(
        _is_homogeneous_tuple, lambda t: _make_tuple_hook(conv, t, detailed)
    )
    conv.register_structure_hook_factory(_is_pair, lambda t: _make_pair_hook(conv, t))
    conv.register_unstructure_hook_func(_is_pair, list)
    conv.register_unstructure_hook_factory(
        _is_homogeneous_tuple, lambda t: _make_list_unstructure(conv, t)
    )
    conv.register_structure_hook_factory(attrs.has, lambda t: _make_class_hook(conv, t))
    conv.register_unstructure_hook_factory(attrs.has, lambda t: _make_class_unstructure(conv, t))
    conv.register_structure_hook(PublicJwk, _make_jwk_hook(conv))
    for cls in (ErrorInfo, ErrorFrame):
        conv.register_structure_hook(cls, _make_error_hook(conv, cls))
        conv.register_unstructure_hook(cls, _make_error_unstructure(conv, cls))
    for union in (ClientFrame, ServerFrame):
        configure_tagged_union(union, conv, tag_generator=_tag, tag_name="type")
        _guard_tags(conv, union)
    return conv


def _make_class_hook(conv: cattrs.Converter, cls: type) -> Callable[[Any, Any], Any]:
    generated: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=True
    )
    check = VALIDATORS.get(cls)

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not dict:
            raise _invalid("must be a JSON object")
        obj = generated(value, cls)
        if check is not None:
            check(obj)
        return obj

    return structure


def _make_class_unstructure(conv: cattrs.Converter, cls: type) -> Callable[[Any], Any]:
    # A field whose default is None is optional on the wire: left out when None.
    optional: dict[str, Any] = {
        a.name: override(omit_if_default=True) for a in attrs.fields(cls) if a.default is None
    }
    return make_dict_unstructure_fn(cls, conv, **optional)


def _make_tuple_hook(
    conv: cattrs.Converter, t: Any, detailed: bool
) -> Callable[[Any, Any], tuple[Any, ...]]:
    item_type = get_args(t)[0]
    item = conv.get_structure_hook(item_type)

    def fast(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _invalid("must be a list")
        return tuple([item(v, item_type) for v in value])

    def with_paths(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _invalid("must be a list")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v, item_type))
            except Exception as exc:
                raise _prefixed(_explain(exc), f"[{i}]") from exc
        return tuple(out)

    return with_paths if detailed else fast


def _make_pair_hook(conv: cattrs.Converter, t: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    types = get_args(t)
    hooks = [conv.get_structure_hook(a) for a in types]

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list or len(value) != len(types):
            raise _invalid(f"must be a list of {len(types)} items")
        out = []
        for i, (hook, item_type, v) in enumerate(zip(hooks, types, value, strict=True)):
            try:
                out.append(hook(v, item_type))
            except Exception as exc:
                raise _prefixed(_explain(exc), f"[{i}]") from exc
        return tuple(out)

    return structure


def _make_list_unstructure(conv: cattrs.Converter, t: Any) -> Callable[[Any], list[Any]]:
    item = conv.get_unstructure_hook(get_args(t)[0])
    return lambda value: [item(v) for v in value]


def _make_jwk_hook(conv: cattrs.Converter) -> Callable[[Any, Any], PublicJwk]:
    generated = make_dict_structure_fn(PublicJwk, conv, _cattrs_forbid_extra_keys=True)

    def structure(value: Any, _: Any) -> PublicJwk:
        if type(value) is not dict:
            raise _invalid("must be a JSON Web Key object")
        if not _JWK_OPTIONAL.isdisjoint(value):
            # Web Crypto exports public members we do not keep; accept and drop them.
            value = {k: v for k, v in value.items() if k not in _JWK_OPTIONAL}
        jwk = generated(value, PublicJwk)
        check_jwk(jwk)
        return jwk

    return structure


def _make_error_hook(conv: cattrs.Converter, cls: type) -> Callable[[Any, Any], Any]:
    # Errors carry open-ended details (API.md: ``{code, message, ...details}``).
    fields = attrs.fields(cls)
    known = [a.name for a in fields if a.name != "details"]
    optional = {a.name for a in fields if a.default is not attrs.NOTHING}

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not dict:
            raise _invalid("must be a JSON object")
        args: dict[str, Any] = {}
        for name in known:
            if name in value:
                v = value[name]
                args[name] = None if v is None and name in optional else _structure_str(v, str)
            elif name not in optional:
                raise _invalid("missing field", name, code="missing_field")
        details = {k: v for k, v in value.items() if k not in args}
        if details:
            args["details"] = _structure_json_object(details, None)
        return cls(**args)

    return structure


def _make_error_unstructure(conv: cattrs.Converter, cls: type) -> Callable[[Any], Any]:
    def unstructure(value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"code": value.code, "message": value.message}
        if getattr(value, "ref", None) is not None:
            out["ref"] = value.ref
        for key, detail in (value.details or {}).items():
            out.setdefault(key, detail)
        return out

    return unstructure


def _guard_tags(conv: cattrs.Converter, union: Any) -> None:
    """Check the ``"type"`` tag before cattrs' tagged-union hook looks it up."""
    tagged = conv.get_structure_hook(union)
    tags = frozenset(_tag(cls) for cls in get_args(union))

    def structure(value: Any, t: Any) -> Any:
        if type(value) is not dict:
            raise _invalid("a frame must be a JSON object", code="invalid_frame")
        tag = value.get("type")
        if type(tag) is not str or tag not in tags:
            what = "missing" if tag is None else f"unknown type {str(tag)[:40]!r}"
            raise _invalid(f"{what}; expected one of {sorted(tags)}", "type", "unknown_type")
        return tagged(value, t)

    conv.register_structure_hook_func(lambda t: t == union, structure)


# --- the Codec -----------------------------------------------------------------------------


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse(data: str | bytes | bytearray | memoryview) -> Any:
    if isinstance(data, memoryview | bytearray):
        data = bytes(data)
    if len(data) > MAX_FRAME_BYTES:
        raise PayloadTooLarge(f"more than {MAX_FRAME_BYTES} bytes", limit=MAX_FRAME_BYTES)
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, TypeError, RecursionError) as exc:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors.
        raise _invalid(f"not valid JSON: {exc}"[:200], code="invalid_json") from exc


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Codec:
    """Decode (validate) and encode every wire shape. Build one and share it; it holds
    no mutable state besides the detailed converter it builds on the first failure."""

    def __init__(self) -> None:
        self._fast = make_converter()
        self._detailed: cattrs.Converter | None = None
        self._client_hook = self._fast.get_structure_hook(ClientFrame)
        self._server_hook = self._fast.get_structure_hook(ServerFrame)
        self._server_unhook = self._fast.get_unstructure_hook(ServerFrame)
        self._client_unhook = self._fast.get_unstructure_hook(ClientFrame)

    def _structure(self, obj: Any, cls: Any, hook: Callable[[Any, Any], Any]) -> Any:
        try:
            return hook(obj, cls)
        except Exception as fast_error:
            raise self._failure(obj, cls) from fast_error

    def _failure(self, obj: Any, cls: Any) -> ProtocolError:
        """Run ``obj`` again through the detailed converter to name the failing field."""
        if self._detailed is None:
            self._detailed = make_converter(detailed=True)
        try:
            self._detailed.structure(obj, cls)
        except Exception as exc:
            return _finalize(_explain(exc))
        return _invalid("invalid value", code="invalid_frame")  # pragma: no cover

    # WebSocket frames

    def decode_client_frame(self, data: str | bytes) -> ClientFrame:
        """Parse and validate one client frame. Raises ProtocolError (see module doc)."""
        return self.structure_client_frame(_parse(data))

    def structure_client_frame(self, obj: object) -> ClientFrame:
        """Validate an already parsed client frame (e.g. by orjson)."""
        frame: ClientFrame = self._structure(obj, ClientFrame, self._client_hook)
        return frame

    def decode_server_frame(self, data: str | bytes) -> ServerFrame:
        return self.structure_server_frame(_parse(data))

    def structure_server_frame(self, obj: object) -> ServerFrame:
        frame: ServerFrame = self._structure(obj, ServerFrame, self._server_hook)
        return frame

    def unstructure_server_frame(self, frame: ServerFrame) -> dict[str, Any]:
        out: dict[str, Any] = self._server_unhook(frame)
        return out

    def encode_server_frame(self, frame: ServerFrame) -> bytes:
        return _compact(self._server_unhook(frame))

    def unstructure_client_frame(self, frame: ClientFrame) -> dict[str, Any]:
        out: dict[str, Any] = self._client_unhook(frame)
        return out

    def encode_client_frame(self, frame: ClientFrame) -> bytes:
        return _compact(self._client_unhook(frame))

    # REST bodies and anything else

    def decode_body(self, data: bytes | str | object, cls: type[T]) -> T:
        """Parse (when given bytes or str) and validate a body as ``cls``."""
        obj = _parse(data) if isinstance(data, bytes | str | bytearray | memoryview) else data
        return self.structure(obj, cls)

    def structure(self, obj: object, cls: type[T]) -> T:
        if type(obj) is not dict and attrs.has(cls):
            raise _invalid("the body must be a JSON object", code="invalid_frame")
        result: T = self._structure(obj, cls, self._fast.get_structure_hook(cls))
        return result

    def unstructure(self, obj: Any) -> Any:
        """The JSON-able form of any wire value (frames carry their ``"type"``)."""
        if type(obj) in _CLIENT_TYPES:
            return self._client_unhook(obj)
        if type(obj) in _SERVER_TYPES:
            return self._server_unhook(obj)
        return self._fast.unstructure(obj)

    def encode(self, obj: Any) -> bytes:
        return _compact(self.unstructure(obj))

    # The durable event stream

    def frame_from_event(
        self, event: StreamEvent, *, status: DeliveryStatus = DeliveryStatus.DELIVERED
    ) -> ServerFrame:
        """The server frame for a stream event (``message`` frames get ``status``).

        Raises InvalidFrame when a stored payload does not make a valid frame."""
        if event.kind is EventKind.MESSAGE:
            if event.message is None:
                raise _invalid("message event without its message", code="invalid_frame")
            return MessageFrame(event.seq, WireMessage.from_domain(event.message, status=status))
        obj = dict(event.payload or {})
        obj["type"] = event.kind.value
        obj["seq"] = event.seq
        return self.structure_server_frame(obj)

    def event_payload(self, frame: ServerFrame) -> dict[str, Any]:
        """The stream payload of a durable frame: its body without ``type`` and ``seq``."""
        out = self.unstructure_server_frame(frame)
        out.pop("type", None)
        out.pop("seq", None)
        return out


_CLIENT_TYPES = frozenset(get_args(ClientFrame))
_SERVER_TYPES = frozenset(get_args(ServerFrame))


# --- query strings -------------------------------------------------------------------------


def _query_int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not low <= int(raw) <= high:
        raise _invalid(f"must be an integer between {low} and {high}", name)
    return int(raw)


def decode_page_query(params: Mapping[str, str], *, default_limit: int = 50) -> PageQuery:
    """``?before=<cursor>&limit=<n>``. Raises InvalidFrame (``invalid_field``)."""
    before = params.get("before") or None
    if before is not None and len(before) > MAX_TOKEN_CHARS:
        raise _too_large("before", MAX_TOKEN_CHARS, "characters")
    limit = _query_int(params, "limit", default_limit, 1, MAX_PAGE_LIMIT)
    return PageQuery(before=before, limit=limit)


def decode_events_query(params: Mapping[str, str], *, default_timeout: int = 25) -> EventsQuery:
    """``?since=<seq>&timeout=<s>``. Raises InvalidFrame (``invalid_field``)."""
    since = _query_int(params, "since", 0, 0, MAX_SEQ)
    timeout = _query_int(params, "timeout", default_timeout, 0, MAX_EVENTS_TIMEOUT_S)
    return EventsQuery(since=since, timeout=timeout)


# --- the default codec and module-level shortcuts ---------------------------------------------


@cache
def default_codec() -> Codec:
    """A process-wide Codec, built on first use (never at import)."""
    return Codec()


def decode_client_frame(data: str | bytes) -> ClientFrame:
    return default_codec().decode_client_frame(data)


def structure_client_frame(obj: object) -> ClientFrame:
    return default_codec().structure_client_frame(obj)


def encode_server_frame(frame: ServerFrame) -> bytes:
    return default_codec().encode_server_frame(frame)


def unstructure_server_frame(frame: ServerFrame) -> dict[str, Any]:
    return default_codec().unstructure_server_frame(frame)


def decode_body(data: bytes | str | object, cls: type[T]) -> T:
    return default_codec().decode_body(data, cls)


def unstructure(obj: Any) -> Any:
    return default_codec().unstructure(obj)


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON of any wire value."""
    return default_codec().encode(obj)
