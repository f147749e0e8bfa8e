"""Subprotocol negotiation and the two encodings: msgpack (binary frames) and JSON (text frames)."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack

from ._errors import LocalProtocolError, RemoteProtocolError
from ._frames import ConvSummary, Msg, ServerEvent

SUBPROTOCOL_MSGPACK: Final = "parley.v1.msgpack"
SUBPROTOCOL_JSON: Final = "parley.v1.json"
#: The subprotocols this node speaks, in order of preference.
SUBPROTOCOLS: Final = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """Pick the subprotocol for a handshake that offered ``offered``.

    Returns ``"parley.v1.msgpack"`` if offered, else ``"parley.v1.json"`` if offered, or ``None``
    when nothing was offered: the server then answers without a ``Sec-WebSocket-Protocol`` header
    and speaks json (a :class:`ClientConnection` built with ``None`` does so).

    Raises:
        RemoteProtocolError: only unknown subprotocols were offered (``http_status`` 400).
    """
    if not offered:
        return None
    names = {name.strip() for name in offered}
    for name in SUBPROTOCOLS:
        if name in names:
            return name
    shown = ", ".join(sorted(names))[:200]
    raise RemoteProtocolError(
        f"none of the offered subprotocols is supported ({shown}); "
        f"use {SUBPROTOCOL_MSGPACK} or {SUBPROTOCOL_JSON}",
        http_status=400,
    )


class Undecodable(Exception):
    """A frame could not be decoded into a map (→ ``error bad_request``)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_frame(binary: bool, data: bytes | str) -> dict[Any, Any]:
    """Decode one frame: msgpack if ``binary``, else JSON. The result is a map.

    Raises:
        Undecodable: wrong frame kind for the subprotocol, malformed data, or not a map.
    """
    if binary:
        if not isinstance(data, bytes):
            raise Undecodable(f"{SUBPROTOCOL_MSGPACK} frames must be binary")
        try:
            value = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
            raise Undecodable(f"not a msgpack value: {exc}") from None
    else:
        if not isinstance(data, str):
            raise Undecodable(f"{SUBPROTOCOL_JSON} frames must be text")
        try:
            value = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise Undecodable(f"not a JSON value: {exc}") from None
    if not isinstance(value, dict):
        raise Undecodable("a frame must be a map")
    return value


def _plain(value: object, binary: bool) -> object:
    if isinstance(value, Msg | ConvSummary):
        return _to_wire(value, binary)
    if isinstance(value, tuple | list):
        return [_plain(item, binary) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item, binary) for key, item in value.items()}
    if isinstance(value, bytes) and not binary:
        raise LocalProtocolError("bytes can only be sent over msgpack")
    return value


def _to_wire(event: ServerEvent | ConvSummary, binary: bool) -> dict[str, object]:
    wire: dict[str, object] = {}
    if isinstance(event, ServerEvent):
        wire["type"] = event.TYPE
        optional, names = event.OPTIONAL, event.WIRE_NAMES
    else:
        optional, names = frozenset(), {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if value is None and f.name in optional:
            continue
        if isinstance(value, bytes) and not binary and isinstance(event, Msg):
            # JSON has no bytes: a bytes body travels base64-encoded under its own name.
            wire["body_b64"] = base64.b64encode(value).decode("ascii")
            continue
        wire[names.get(f.name, f.name)] = _plain(value, binary)
    return wire


def event_to_wire(event: ServerEvent, *, binary: bool) -> dict[str, object]:
    """The wire map of ``event``: ``type`` first, wire field names, absent optionals omitted.

    With ``binary`` False (json), a ``bytes`` message body is put base64-encoded under
    ``body_b64`` in place of ``body``.

    Raises:
        LocalProtocolError: json cannot carry a ``bytes`` value anywhere else.
    """
    if not isinstance(event, ServerEvent) or type(event) is ServerEvent:
        raise LocalProtocolError(f"not a server event: {event!r}")
    return _to_wire(event, binary)


def encode_event(event: ServerEvent, *, binary: bool) -> bytes | str:
    """Encode ``event``: msgpack ``bytes`` if ``binary``, else compact JSON ``str``.

    Raises:
        LocalProtocolError: ``event`` is not a server event or holds a value the encoding cannot
            carry.
    """
    wire = event_to_wire(event, binary=binary)
    try:
        if binary:
            packed: bytes = msgpack.packb(wire, use_bin_type=True)
            return packed
        return json.dumps(wire, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {event.TYPE}: {exc}") from exc
