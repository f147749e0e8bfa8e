"""Validation of decoded client frames, written as data: a table of frame type → field rules.

:data:`FRAME_SPECS` maps every client ``type`` to a :class:`FrameSpec`: for each field its wire
name, whether it is required, its check, and the event attribute it fills. ``conv.create`` is
split on its ``kind`` into :data:`CONV_CREATE_SPECS`. Tests read these tables.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ._frames import (
    ClientEvent,
    ConvAdd,
    ConvCreateDirect,
    ConvCreateGroup,
    ConvRemove,
    ConvsList,
    History,
    Ping,
    PresenceSub,
    Receipt,
    Send,
    Sync,
    Typing,
)

#: User and device ids: 1-64 characters of ``[A-Za-z0-9_.-]``.
ID_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: Conversation ids (assigned by the server, opaque to clients): 1-64 characters of
#: ``[A-Za-z0-9_.:-]``.
CONV_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
#: Message kinds: 1-32 characters of ``[A-Za-z0-9_.-]``.
KIND_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
#: Largest ``seq``/``before`` accepted (sequence numbers are stored as signed 64-bit integers).
MAX_SEQ: Final = 2**63 - 1
#: Longest ``ref`` (as a string, or an int's decimal digits and sign), ``cmid`` and group title.
MAX_REF_CHARS: Final = 64
MAX_CMID_CHARS: Final = 64
MAX_TITLE_CHARS: Final = 256
RECEIPT_STATUSES: Final = frozenset({"delivered", "read"})
TYPING_STATES: Final = frozenset({"start", "stop"})


@dataclass(frozen=True, slots=True)
class Limits:
    """The protocol's limits for one connection.

    Attributes:
        max_frame: largest frame accepted, in bytes (text frames: UTF-8 bytes); above it → 1009.
        max_body: largest ``send`` body, in bytes; above it → ``error too_large``.
        max_group: most users one ``conv.create``/``conv.add``/``conv.remove``/``presence.sub``
            may name; above it → ``error too_large``.
        bad_frames: consecutive bad frames that close the connection with 1008.
        history_limit_default: ``history`` ``limit`` when absent.
        history_limit_max: ``history`` ``limit`` is clamped to this.

    Raises:
        ValueError: a limit is not a positive int, or the history default exceeds its maximum.
    """

    max_frame: int = 65536
    max_body: int = 16384
    max_group: int = 1024
    bad_frames: int = 10
    history_limit_default: int = 50
    history_limit_max: int = 200

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, not {value!r}")
        if self.history_limit_default > self.history_limit_max:
            raise ValueError("Limits.history_limit_default must not exceed history_limit_max")


class Invalid(Exception):
    """A field failed its check (→ ``error bad_request``)."""


class TooLarge(Invalid):
    """A field is over a size limit (→ ``error too_large``)."""


#: A field check: takes the decoded value and the limits, returns the value to store.
Check = Callable[[object, Limits], object]


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass; it is not a number here


def _utf8_ok(value: str) -> bool:
    # JSON may carry lone surrogates; they cannot be stored or re-encoded.
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_ref(value: object, limits: Limits) -> object:
    """``ref``: a string of at most 64 characters, or an int of at most 64 characters."""
    if isinstance(value, str):
        if len(value) <= MAX_REF_CHARS and _utf8_ok(value):
            return value
    elif (
        isinstance(value, int)
        and _is_int(value)
        # Compare magnitudes first: str() of a huge int is slow (and limited).
        and abs(value) < 10**MAX_REF_CHARS
        and len(str(value)) <= MAX_REF_CHARS
    ):
        return value
    raise Invalid("must be a string or an integer of at most 64 characters")


def check_user_id(value: object, limits: Limits) -> object:
    """A user id: 1-64 characters of ``[A-Za-z0-9_.-]``."""
    if isinstance(value, str) and ID_RE.fullmatch(value):
        return value
    raise Invalid("must be a user id: 1-64 characters of [A-Za-z0-9_.-]")


def check_conv_id(value: object, limits: Limits) -> object:
    """A conversation id: 1-64 characters of ``[A-Za-z0-9_.:-]``."""
    if isinstance(value, str) and CONV_ID_RE.fullmatch(value):
        return value
    raise Invalid("must be a conversation id: 1-64 characters of [A-Za-z0-9_.:-]")


def check_cmid(value: object, limits: Limits) -> object:
    """``cmid``: a string of 1-64 characters."""
    if isinstance(value, str) and 1 <= len(value) <= MAX_CMID_CHARS and _utf8_ok(value):
        return value
    raise Invalid("must be a string of 1-64 characters")


def check_kind(value: object, limits: Limits) -> object:
    """A message ``kind``: 1-32 characters of ``[A-Za-z0-9_.-]``."""
    if isinstance(value, str) and KIND_RE.fullmatch(value):
        return value
    raise Invalid("must be 1-32 characters of [A-Za-z0-9_.-]")


def check_body(value: object, limits: Limits) -> object:
    """``body``: UTF-8 text, or bytes (msgpack bin), of at most ``max_body`` bytes."""
    if isinstance(value, bytes):
        size = len(value)
    elif isinstance(value, str):
        if len(value) > limits.max_body:  # at least one byte per character
            raise TooLarge(f"is over {limits.max_body} bytes")
        if not _utf8_ok(value):
            raise Invalid("must be valid UTF-8 text")
        size = len(value) if value.isascii() else len(value.encode("utf-8"))
    else:
        raise Invalid("must be a string (or, with msgpack, bytes)")
    if size > limits.max_body:
        raise TooLarge(f"is over {limits.max_body} bytes")
    return value


def check_seq(value: object, limits: Limits) -> object:
    """A sequence number: an int from 0 to 2**63-1 (not a bool, not a float)."""
    if isinstance(value, int) and _is_int(value) and 0 <= value <= MAX_SEQ:
        return value
    raise Invalid("must be an integer >= 0")


def check_title(value: object, limits: Limits) -> object:
    """A group title: a string of at most 256 characters (may be empty)."""
    if isinstance(value, str) and len(value) <= MAX_TITLE_CHARS and _utf8_ok(value):
        return value
    raise Invalid("must be a string of at most 256 characters")


def check_history_limit(value: object, limits: Limits) -> object:
    """``history`` ``limit``: an int >= 1, clamped to ``history_limit_max``."""
    if isinstance(value, int) and _is_int(value) and value >= 1:
        return min(value, limits.history_limit_max)
    raise Invalid("must be an integer >= 1")


def one_of(*choices: str) -> Check:
    """A check that accepts exactly one of ``choices``."""
    allowed = frozenset(choices)
    message = "must be one of " + ", ".join(sorted(allowed))

    def check(value: object, limits: Limits) -> object:
        if isinstance(value, str) and value in allowed:
            return value
        raise Invalid(message)

    return check


def user_list(*, allow_empty: bool) -> Check:
    """A check for a list of user ids, at most ``max_group`` of them; duplicates are dropped."""

    def check(value: object, limits: Limits) -> object:
        if not isinstance(value, list):
            raise Invalid("must be a list of user ids")
        if len(value) > limits.max_group:
            raise TooLarge(f"names more than {limits.max_group} users")
        if not value and not allow_empty:
            raise Invalid("must name at least one user")
        users: dict[str, None] = {}
        for item in value:
            if not (isinstance(item, str) and ID_RE.fullmatch(item)):
                raise Invalid("must be a list of user ids (1-64 characters of [A-Za-z0-9_.-])")
            users[item] = None
        return tuple(users)

    return check


def check_cursors(value: object, limits: Limits) -> object:
    """``sync`` ``convs``: a map of conversation id → seq (an int >= 0)."""
    if not isinstance(value, dict):
        raise Invalid("must be a map of conversation id to seq")
    for conv, seq in value.items():
        if not (isinstance(conv, str) and CONV_ID_RE.fullmatch(conv)):
            raise Invalid("keys must be conversation ids")
        if not (isinstance(seq, int) and _is_int(seq) and 0 <= seq <= MAX_SEQ):
            raise Invalid("values must be integers >= 0")
    return dict(value)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a client frame.

    ``wire`` is its name on the wire, ``attr`` the event attribute it fills. An absent optional
    field (or one sent as null) takes ``default(limits)`` when ``default`` is set, else the event's
    own default.
    """

    wire: str
    check: Check
    required: bool
    attr: str = ""
    default: Callable[[Limits], object] | None = None

    @property
    def target(self) -> str:
        return self.attr or self.wire


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """The rules of one client frame type: the event it becomes and its fields."""

    type: str
    event: builtins.type[ClientEvent]
    fields: tuple[FieldSpec, ...] = field(default=())

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.wire for f in self.fields if f.required)

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(f.wire for f in self.fields if not f.required)


def _req(wire: str, check: Check, attr: str = "") -> FieldSpec:
    return FieldSpec(wire, check, True, attr)


def _opt(wire: str, check: Check, default: Callable[[Limits], object] | None = None) -> FieldSpec:
    return FieldSpec(wire, check, False, default=default)


_REF = _opt("ref", check_ref)

#: ``conv.create`` by its ``kind``.
CONV_CREATE_SPECS: Final[Mapping[str, FrameSpec]] = {
    "direct": FrameSpec(
        "conv.create", ConvCreateDirect, (_req("with", check_user_id, "with_user"), _REF)
    ),
    "group": FrameSpec(
        "conv.create",
        ConvCreateGroup,
        (_req("title", check_title), _req("members", user_list(allow_empty=True)), _REF),
    ),
}

#: Every client frame type and its rules. ``conv.create`` is listed with only its ``kind`` field;
#: the rest of its rules are in :data:`CONV_CREATE_SPECS`.
FRAME_SPECS: Final[Mapping[str, FrameSpec]] = {
    "send": FrameSpec(
        "send",
        Send,
        (
            _req("conv", check_conv_id),
            _req("cmid", check_cmid),
            _req("body", check_body),
            _opt("kind", check_kind),
            _REF,
        ),
    ),
    "receipt": FrameSpec(
        "receipt",
        Receipt,
        (
            _req("conv", check_conv_id),
            _req("seq", check_seq),
            _req("status", one_of(*RECEIPT_STATUSES)),
        ),
    ),
    "sync": FrameSpec("sync", Sync, (_req("ref", check_ref), _req("convs", check_cursors))),
    "conv.create": FrameSpec(
        "conv.create", ClientEvent, (_req("kind", one_of(*CONV_CREATE_SPECS)),)
    ),
    "conv.add": FrameSpec(
        "conv.add",
        ConvAdd,
        (_req("conv", check_conv_id), _req("users", user_list(allow_empty=False)), _REF),
    ),
    "conv.remove": FrameSpec(
        "conv.remove",
        ConvRemove,
        (_req("conv", check_conv_id), _req("users", user_list(allow_empty=False)), _REF),
    ),
    "convs": FrameSpec("convs", ConvsList, (_req("ref", check_ref),)),
    "history": FrameSpec(
        "history",
        History,
        (
            _req("ref", check_ref),
            _req("conv", check_conv_id),
            _opt("before", check_seq),
            _opt("limit", check_history_limit, default=lambda limits: limits.history_limit_default),
        ),
    ),
    "typing": FrameSpec(
        "typing",
        Typing,
        (_req("conv", check_conv_id), _req("state", one_of(*TYPING_STATES))),
    ),
    "presence.sub": FrameSpec(
        "presence.sub", PresenceSub, (_req("users", user_list(allow_empty=False)), _REF)
    ),
    "ping": FrameSpec("ping", Ping, (_REF,)),
}


def read_ref(frame: Mapping[object, object]) -> str | int | None:
    """The frame's ``ref`` if it is present and valid, else ``None`` (for echoing in errors)."""
    value = frame.get("ref")
    if value is None:
        return None
    try:
        ref = check_ref(value, Limits())
    except Invalid:
        return None
    assert isinstance(ref, str | int)
    return ref


def build_event(frame: Mapping[object, object], limits: Limits) -> ClientEvent:
    """Validate a decoded frame and build its event.

    Raises:
        Invalid: ``type`` is missing or unknown, or a field is missing or fails its check; the
            message names the field (``"send.cmid: must be ..."``).
        TooLarge: a field is over a size limit.
    """
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise Invalid("frame has no string 'type'")
    spec = FRAME_SPECS.get(kind)
    if spec is None:
        raise Invalid(f"unknown frame type {kind[:64]!r}")
    if kind == "conv.create":
        values = _check_fields(spec, frame, limits)
        spec = CONV_CREATE_SPECS[values["kind"]]  # type: ignore[index]
    values = _check_fields(spec, frame, limits)
    return spec.event(**values)


def _check_fields(
    spec: FrameSpec, frame: Mapping[object, object], limits: Limits
) -> dict[str, object]:
    values: dict[str, object] = {}
    for f in spec.fields:
        value = frame.get(f.wire)
        if value is None:
            if f.required:
                raise Invalid(f"{spec.type}.{f.wire}: required")
            if f.default is not None:
                values[f.target] = f.default(limits)
            continue
        try:
            values[f.target] = f.check(value, limits)
        except Invalid as exc:
            raise type(exc)(f"{spec.type}.{f.wire}: {exc}") from None
    return values
