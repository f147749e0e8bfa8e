"""The admin endpoint's wire format, sans-IO: newline-delimited JSON requests in, replies out.

A request is one line (at most :data:`MAX_LINE` bytes, newline included) holding a JSON object::

    {"id": 1, "op": "info", "args": {"ref": "conv:c1"}, "token": "..."}

``id`` is an int or a string of at most 64 characters, echoed in every reply line; ``op`` one of
:data:`OPS`; ``args`` an object whose keys and types :data:`SCHEMAS` fixes (unknown keys are an
error); ``token`` a string, needed on TCP only. Replies::

    {"id": 1, "ok": true, "result": ...}
    {"id": 1, "ok": false, "error": {"code": "not_found", "message": "..."}}
    {"id": 1, "event": ...}              (streamed ops: top, trace; zero or more)
    {"id": 1, "ok": true, "done": true}  (the end of a stream)

Nothing here touches a socket or a clock: :func:`parse_request` turns bytes into a
:class:`Request` or raises :class:`AdminRequestError`, and :func:`encode` turns a reply into bytes.
See docs/inspector.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

#: Longest request line accepted, in bytes (newline included).
MAX_LINE: Final = 65_536
#: Longest string ``id``, token, name or reason accepted, in characters.
MAX_ID: Final = 64
MAX_TOKEN: Final = 256
MAX_NAME: Final = 256

ErrorCode = Literal["not_found", "refused", "bad_request", "unauthorized"]

#: Read-only ops, always allowed.
READ_OPS: Final = frozenset(
    {"tree", "top", "info", "stats", "trace", "chaos.status", "chaos.failpoints"}
)
#: Ops that change the node: on TCP only with ``[admin] allow_destructive``.
DESTRUCTIVE_OPS: Final = frozenset(
    {
        "kill",
        "restart",
        "suspend",
        "resume",
        "chaos.kill",
        "chaos.start",
        "chaos.stop",
        "chaos.havoc",
        "chaos.storm",
        "chaos.failpoint",
    }
)
OPS: Final = READ_OPS | DESTRUCTIVE_OPS
#: Ops whose reply is a stream of events ended by ``done``.
STREAMED_OPS: Final = frozenset({"top", "trace"})

SORT_KEYS: Final = ("mailbox", "rate", "memory", "restarts")
#: What the chaos monkey kills by kind (``gateway._chaos_targets.KINDS``).
CHAOS_KINDS: Final = ("connection", "session", "conversation", "storage", "presence", "supervisor")
#: The storage failpoints (``storage.FAILPOINTS``).
FAILPOINT_NAMES: Final = ("storage.after_commit", "storage.after_reply")
#: Most kills one ``chaos.kill`` or ``chaos.storm`` makes.
MAX_KILLS: Final = 10_000


class AdminRequestError(Exception):
    """A request the endpoint will not serve; the reply carries ``code`` and the message.

    ``id`` is the request's id when it could be read (None otherwise).
    """

    def __init__(self, code: ErrorCode, message: str, id: int | str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.id = id


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of an op: its kind, whether it is required, its default and bounds.

    Kinds: ``ref`` (a pid >= 1 or a registered name), ``int``, ``number``, ``str``, ``id`` (a
    child id: int or string), ``choice`` (one of ``choices``), ``choices`` (a non-empty list of
    them). ``lo``/``hi`` bound numbers (inclusive; ``lo_open``: exclusive) and string lengths.
    """

    kind: Literal["ref", "int", "number", "str", "id", "choice", "choices"]
    required: bool = False
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    lo_open: bool = False


#: Every op's arguments (the documented schema; docs/inspector.md lists the same).
SCHEMAS: Final[dict[str, dict[str, Arg]]] = {
    "tree": {
        "depth": Arg("int", lo=0, hi=64, nullable=True),
        "top": Arg("int", default=5, lo=1, hi=100),
    },
    "top": {
        "sort": Arg("choice", default="mailbox", choices=SORT_KEYS),
        "interval": Arg("number", default=1.0, lo=0.1, hi=60.0),
        "window": Arg("number", default=5.0, lo=0.1, hi=600.0),
        "n": Arg("int", default=20, lo=1, hi=200),
        "count": Arg("int", lo=1, hi=1_000_000, nullable=True),
    },
    "info": {"ref": Arg("ref", required=True)},
    "stats": {},
    "kill": {
        "ref": Arg("ref", required=True),
        "reason": Arg("str", default="kill", lo=1, hi=MAX_NAME),
    },
    "restart": {
        "supervisor": Arg("ref", required=True),
        "child": Arg("id", required=True),
    },
    "suspend": {"ref": Arg("ref", required=True)},
    "resume": {"ref": Arg("ref", required=True)},
    "trace": {
        "ref": Arg("ref", required=True),
        "count": Arg("int", required=True, lo=1, hi=10_000),
        "rate": Arg("number", default=100.0, lo=0.01, hi=1_000.0),
    },
    "chaos.kill": {
        "kind": Arg("choice", required=True, choices=CHAOS_KINDS),
        "count": Arg("int", default=1, lo=1, hi=MAX_KILLS),
        "seed": Arg("int", nullable=True),
        "wait": Arg("number", default=5.0, lo=0.0, hi=600.0),
    },
    "chaos.start": {
        "seed": Arg("int", nullable=True),
        "rate": Arg("number", required=True, lo=0.0, hi=50.0, lo_open=True),
        "kinds": Arg("choices", default=CHAOS_KINDS, choices=CHAOS_KINDS),
        "duration": Arg("number", lo=0.0, hi=1e9, lo_open=True, nullable=True),
    },
    "chaos.stop": {},
    "chaos.status": {},
    "chaos.havoc": {
        "supervisor": Arg("ref", required=True),
        "seed": Arg("int", nullable=True),
        "wait": Arg("number", default=5.0, lo=0.0, hi=600.0),
    },
    "chaos.storm": {
        "supervisor": Arg("ref", required=True),
        "child": Arg("id", nullable=True),
        "kills": Arg("int", required=True, lo=1, hi=MAX_KILLS),
        "wait": Arg("number", default=10.0, lo=0.0, hi=600.0),
    },
    "chaos.failpoint": {
        "name": Arg("choice", required=True, choices=FAILPOINT_NAMES),
        "count": Arg("int", default=1, lo=0, hi=1_000_000),
    },
    "chaos.failpoints": {},
}


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request: ``args`` holds every argument of the op, defaults filled in."""

    id: int | str
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    token: str | None = None

    @property
    def destructive(self) -> bool:
        return self.op in DESTRUCTIVE_OPS


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arg(op: str, key: str, spec: Arg, value: object) -> object:
    where = f"{op}: {key!r}"
    if value is None:
        if spec.nullable:
            return None
        raise ValueError(f"{where} may not be null")
    if spec.kind == "ref":
        if _is_int(value):
            assert isinstance(value, int)
            if value < 1:
                raise ValueError(f"{where}: a pid is >= 1")
            return value
        if isinstance(value, str) and 0 < len(value) <= MAX_NAME:
            return value
        raise ValueError(f"{where}: expected a pid (int >= 1) or a registered name (string)")
    if spec.kind == "id":
        if _is_int(value) or (isinstance(value, str) and 0 < len(value) <= MAX_NAME):
            return value
        raise ValueError(f"{where}: expected a child id (int or string)")
    if spec.kind == "choice":
        if value not in spec.choices:
            raise ValueError(f"{where}: expected one of {', '.join(spec.choices)}")
        return value
    if spec.kind == "choices":
        if not isinstance(value, list) or not value:
            raise ValueError(f"{where}: expected a non-empty list of {', '.join(spec.choices)}")
        for item in value:
            if item not in spec.choices:
                raise ValueError(f"{where}: {item!r} is not one of {', '.join(spec.choices)}")
        return tuple(dict.fromkeys(value))
    if spec.kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string")
        size: float = len(value)
    elif spec.kind == "int":
        if not _is_int(value):
            raise ValueError(f"{where}: expected an integer")
        assert isinstance(value, int)
        size = value
    else:
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError(f"{where}: expected a finite number")
        assert isinstance(value, int | float)
        size = value
        value = float(value)
    below = spec.lo is not None and (size <= spec.lo if spec.lo_open else size < spec.lo)
    if below or (spec.hi is not None and size > spec.hi):
        unit = " characters" if spec.kind == "str" else ""
        bracket = "(" if spec.lo_open else "["
        raise ValueError(f"{where}: out of range {bracket}{spec.lo:g}, {spec.hi:g}]{unit}")
    return value


def validate_args(op: str, args: object) -> dict[str, Any]:
    """``args`` checked against ``SCHEMAS[op]``, defaults filled in.

    Raises:
        ValueError: not an object, an unknown or missing key, a wrong type, out of range.
    """
    if not isinstance(args, dict):
        raise ValueError(f"{op}: 'args' must be an object")
    schema = SCHEMAS[op]
    unknown = sorted(set(args) - set(schema))
    if unknown:
        raise ValueError(f"{op}: unknown argument(s) {', '.join(map(repr, unknown))}")
    result: dict[str, Any] = {}
    for key, spec in schema.items():
        if key not in args:
            if spec.required:
                raise ValueError(f"{op}: missing argument {key!r}")
            result[key] = spec.default
            continue
        result[key] = _check_arg(op, key, spec, args[key])
    if op == "top" and result["window"] < result["interval"]:
        raise ValueError("top: 'window' must be >= 'interval'")
    return result


def parse_request(line: bytes) -> Request:
    """One request line (with or without its newline) → :class:`Request`.

    Raises:
        AdminRequestError: ``bad_request`` for anything malformed (too long, not UTF-8 JSON, not
            an object, a bad id, an unknown op, bad args); ``id`` is set when it could be read.
    """
    if len(line) > MAX_LINE:
        raise AdminRequestError("bad_request", f"request longer than {MAX_LINE} bytes")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdminRequestError("bad_request", f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise AdminRequestError("bad_request", "a request is a JSON object")
    rid = message.get("id")
    if not (_is_int(rid) or (isinstance(rid, str) and 0 < len(rid) <= MAX_ID)):
        raise AdminRequestError("bad_request", "'id' must be an int or a string of 1-64 chars")
    assert isinstance(rid, int | str)
    unknown = sorted(set(message) - {"id", "op", "args", "token"})
    if unknown:
        raise AdminRequestError("bad_request", f"unknown field(s) {', '.join(unknown)}", rid)
    op = message.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise AdminRequestError(
            "bad_request", f"unknown op {op!r}; expected one of {', '.join(sorted(OPS))}", rid
        )
    token = message.get("token")
    if token is not None and not (isinstance(token, str) and len(token) <= MAX_TOKEN):
        raise AdminRequestError("bad_request", "'token' must be a string", rid)
    try:
        args = validate_args(op, message.get("args", {}))
    except ValueError as exc:
        raise AdminRequestError("bad_request", str(exc), rid) from None
    return Request(rid, op, args, token)


def encode(reply: dict[str, Any]) -> bytes:
    """A reply object as one line of compact JSON (non-JSON values via ``repr``)."""
    return (json.dumps(reply, separators=(",", ":"), default=repr) + "\n").encode()


def ok(rid: int | str | None, result: Any) -> bytes:
    """``{"id", "ok": true, "result"}`` as a line."""
    return encode({"id": rid, "ok": True, "result": result})


def error(rid: int | str | None, code: ErrorCode, message: str) -> bytes:
    """``{"id", "ok": false, "error": {"code", "message"}}`` as a line."""
    return encode({"id": rid, "ok": False, "error": {"code": code, "message": message}})


def event(rid: int | str, payload: Any) -> bytes:
    """One streamed ``{"id", "event"}`` line."""
    return encode({"id": rid, "event": payload})


def done(rid: int | str) -> bytes:
    """The line that ends a stream."""
    return encode({"id": rid, "ok": True, "done": True})


class LineBuffer:
    """Splits a byte stream into lines of at most ``limit`` bytes, sans-IO.

    ``feed(data)`` returns the complete lines now available, each ``bytes`` without its
    newline, or None in place of a line that was too long (its bytes are discarded up to the
    next newline, so the stream stays usable). Holds at most ``limit`` bytes.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes | bytearray) -> list[bytes | None]:
        lines: list[bytes | None] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            elif len(self._buffer) + end - start + 1 > self.limit:
                lines.append(None)
            else:
                self._buffer += data[start:end]
                lines.append(bytes(self._buffer))
            self._buffer.clear()
            start = end + 1
        rest = len(data) - start
        if self._discarding:
            pass
        elif len(self._buffer) + rest >= self.limit:
            self._buffer.clear()
            self._discarding = True
            lines.append(None)
        else:
            self._buffer += data[start:]
        return lines
