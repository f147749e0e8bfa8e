"""The client's side of the codec: request maps out, server frames in.

The node's codec (:mod:`gateway._codec`) encodes server events and decodes client frames; a
client needs the opposite. Decoding here is tolerant where the contract says so (unknown fields
are ignored, unknown frame types are skipped) and strict about what a client relies on (required
fields present, values of the right types), so a misbehaving server is noticed at once.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, Union

import msgpack

from ._client_errors import ServerProtocolError
from ._errors import LocalProtocolError
from ._frames import SERVER_EVENTS, ConvSummary, Msg, ServerEvent

_BY_TYPE: Final[Mapping[str, type[ServerEvent]]] = {cls.TYPE: cls for cls in SERVER_EVENTS}


class _Bad(Exception):
    """A value does not have the type its field needs (internal; becomes ServerProtocolError)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    wire: str
    hint: Any
    required: bool


_FIELDS: dict[type[Any], tuple[_Field, ...]] = {}


def _fields(cls: type[Any]) -> tuple[_Field, ...]:
    known = _FIELDS.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    wire_names: Mapping[str, str] = getattr(cls, "WIRE_NAMES", {})
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        nullable = type(None) in typing.get_args(hint)
        out.append(
            _Field(f.name, wire_names.get(f.name, f.name), hint, not (has_default or nullable))
        )
    _FIELDS[cls] = result = tuple(out)
    return result


def _convert(value: object, hint: Any, where: str) -> object:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = typing.get_args(hint)
        if value is None and type(None) in arms:
            return None
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, where)
            except _Bad:
                continue
        raise _Bad(f"{where}: unexpected {type(value).__name__} {_show(value)}")
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise _Bad(f"{where}: must be a list")
        return tuple(_convert(item, item_hint, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is Mapping:
        key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            raise _Bad(f"{where}: must be a map")
        return {
            _convert(k, key_hint, where): _convert(v, value_hint, f"{where}.{k}")
            for k, v in value.items()
        }
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise _Bad(f"{where}: unknown value {_show(value)}") from None
    if hint is Msg or hint is ConvSummary:
        if not isinstance(value, dict):
            raise _Bad(f"{where}: must be a map")
        return _record(hint, value, where)
    if hint is float:
        if type(value) in (int, float):
            return float(typing.cast(float, value))
        raise _Bad(f"{where}: must be a number")
    if hint is int:
        if type(value) is int:
            return value
        raise _Bad(f"{where}: must be an integer")
    if hint in (str, bytes, bool):
        if type(value) is hint:
            return value
        raise _Bad(f"{where}: must be {hint.__name__}")
    raise TypeError(f"no decoder for {hint!r}")  # pragma: no cover - a new field type


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _record(cls: type[Any], wire: Mapping[Any, Any], where: str) -> Any:
    if cls is Msg and "body" not in wire and "body_b64" in wire:
        encoded = wire["body_b64"]
        try:
            if not isinstance(encoded, str):
                raise ValueError("not a string")
            body = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raise _Bad(f"{where}.body_b64: not base64") from None
        wire = {**wire, "body": body}
    values: dict[str, object] = {}
    for field in _fields(cls):
        if field.wire not in wire:
            if field.required:
                raise _Bad(f"{where}: missing {field.wire!r}")
            continue
        values[field.name] = _convert(wire[field.wire], field.hint, f"{where}.{field.wire}")
    return cls(**values)


def event_from_wire(wire: Mapping[Any, Any]) -> ServerEvent | None:
    """The server event a decoded frame map describes, or ``None`` for an unknown ``type``.

    Unknown fields are ignored (the contract allows the server to add optional ones). ``msg``
    bodies sent as ``body_b64`` (json) come back as ``bytes``; lists become tuples; ``heartbeat``
    and ``retry_after`` become ``float``.

    Raises:
        ServerProtocolError: ``type`` is missing, or a required field is missing or mistyped.
    """
    kind = wire.get("type")
    if not isinstance(kind, str):
        raise ServerProtocolError("a server frame has no string 'type'")
    cls = _BY_TYPE.get(kind)
    if cls is None:
        return None
    try:
        event: ServerEvent = _record(cls, wire, kind)
    except _Bad as exc:
        raise ServerProtocolError(f"bad {kind!r} frame from the server: {exc}") from None
    return event


def decode_server_frame(data: bytes | str, *, binary: bool) -> ServerEvent | None:
    """Decode one WebSocket message from the server: msgpack if ``binary``, else JSON.

    Returns:
        The event, or ``None`` for a frame of a type this client does not know (skipped).

    Raises:
        ServerProtocolError: the message is of the wrong kind for the subprotocol (text under
            msgpack, binary under json), does not decode to a map, or is not a valid frame.
    """
    value: object
    if binary:
        if not isinstance(data, bytes):
            raise ServerProtocolError("a text frame under parley.v1.msgpack")
        try:
            value = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
            raise ServerProtocolError(f"a server frame is not msgpack: {exc}") from None
    else:
        if not isinstance(data, str):
            raise ServerProtocolError("a binary frame under parley.v1.json")
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ServerProtocolError(f"a server frame is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ServerProtocolError("a server frame is not a map")
    return event_from_wire(value)


def encode_request(frame: Mapping[str, object], *, binary: bool) -> bytes | str:
    """Encode a client request map; entries whose value is ``None`` are left out.

    Returns:
        msgpack ``bytes`` if ``binary``, else compact JSON ``str``.

    Raises:
        LocalProtocolError: a ``bytes`` value over json (bodies as bytes need msgpack), or a value
            neither encoding can carry.
    """
    wire = {key: value for key, value in frame.items() if value is not None}
    try:
        if binary:
            packed: bytes = msgpack.packb(wire, use_bin_type=True)
            return packed
        return json.dumps(wire, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, OverflowError) as exc:
        if not binary and any(isinstance(v, bytes) for v in wire.values()):
            raise LocalProtocolError(
                "a bytes body can only be sent over parley.v1.msgpack"
            ) from None
        raise LocalProtocolError(f"cannot encode {wire.get('type')!r}: {exc}") from exc
