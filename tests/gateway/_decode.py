"""Decode server frames back into events (for tests only: the node never decodes its own)."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack

from gateway import (
    ConvInfo,
    ConvsReply,
    ConvSummary,
    ErrorCode,
    HistoryReply,
    Msg,
    ServerEvent,
)
from gateway._frames import SERVER_EVENTS

_BY_TYPE = {cls.TYPE: cls for cls in SERVER_EVENTS}


def _msg(wire: dict[str, Any]) -> Msg:
    wire = dict(wire)
    assert wire.pop("type") == "msg"
    if "body_b64" in wire:
        assert "body" not in wire
        wire["body"] = base64.b64decode(wire.pop("body_b64"), validate=True)
    wire["from_user"] = wire.pop("from")
    return Msg(**wire)


def event_from_wire(wire: dict[str, Any]) -> ServerEvent:
    """Build the server event a wire map describes (strictly: unknown fields fail)."""
    cls = _BY_TYPE[wire["type"]]
    if cls is Msg:
        return _msg(wire)
    fields = {k: v for k, v in wire.items() if k != "type"}
    if cls is ConvsReply:
        fields["convs"] = tuple(
            ConvSummary(**{**c, "members": tuple(c["members"]), "admins": tuple(c["admins"])})
            for c in fields["convs"]
        )
    elif cls is HistoryReply:
        fields["messages"] = tuple(_msg(m) for m in fields["messages"])
    elif cls is ConvInfo:
        fields["members"] = tuple(fields["members"])
        fields["admins"] = tuple(fields["admins"])
    elif "code" in fields:
        fields["code"] = ErrorCode(fields["code"])
    return cls(**fields)


def decode_server_frame(data: bytes | str) -> ServerEvent:
    """Decode one encoded server frame: ``bytes`` as msgpack, ``str`` as JSON."""
    wire = msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else json.loads(data)
    assert isinstance(wire, dict)
    assert next(iter(wire)) == "type"
    return event_from_wire(wire)
