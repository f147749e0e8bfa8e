"""One valid frame of every client type (wire maps), shared by the protocol tests."""

from __future__ import annotations

from typing import Any

VALID_FRAMES: dict[str, dict[str, Any]] = {
    "send": {"type": "send", "ref": 1, "conv": "c1", "cmid": "m-1", "body": "hello"},
    "receipt": {"type": "receipt", "conv": "c1", "seq": 3, "status": "read"},
    "sync": {"type": "sync", "ref": "s", "convs": {"c1": 0, "c2": 7}},
    "conv.create": {"type": "conv.create", "ref": 2, "kind": "direct", "with": "bob"},
    "conv.add": {"type": "conv.add", "ref": 3, "conv": "g1", "users": ["carol"]},
    "conv.remove": {"type": "conv.remove", "conv": "g1", "users": ["alice"]},
    "convs": {"type": "convs", "ref": 4},
    "history": {"type": "history", "ref": 5, "conv": "c1", "before": 10, "limit": 20},
    "typing": {"type": "typing", "conv": "c1", "state": "start"},
    "presence.sub": {"type": "presence.sub", "users": ["bob", "carol"]},
    "ping": {"type": "ping"},
}

GROUP_CREATE: dict[str, Any] = {
    "type": "conv.create",
    "ref": "g",
    "kind": "group",
    "title": "Friends",
    "members": ["bob", "carol"],
}
