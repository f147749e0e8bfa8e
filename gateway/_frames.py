"""Protocol v1 events: one frozen record per frame type, client and server side.

Client events are what :meth:`ClientConnection.receive_frame` returns after a frame has been
decoded and validated; server events are what :meth:`ClientConnection.send` encodes. Field names
are Python's; the wire names are those of the contract (``type`` strings such as ``"send"``,
``"conv.create"``, ``"conv.left"``; the field ``from`` is ``from_user`` here, ``with`` is
``with_user``). Fields marked optional in the contract are ``None`` when absent and are then
omitted on the wire.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

#: A client's request reference: a string or an int of at most 64 characters, echoed in replies.
Ref = str | int


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` frame (the contract's complete list)."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the node uses."""

    NORMAL = 1000
    #: A frame of the wrong kind for the subprotocol (not used by the contract: such a frame gets
    #: ``error bad_request`` and the connection stays open).
    UNSUPPORTED_DATA = 1003
    #: Invalid payload data (kept for completeness; see ``UNSUPPORTED_DATA``).
    INVALID_PAYLOAD = 1007
    #: Too many bad frames in a row (``limits.bad_frames``).
    POLICY_VIOLATION = 1008
    #: A frame larger than ``limits.max_frame``.
    MESSAGE_TOO_BIG = 1009
    #: Unexpected server-side failure.
    INTERNAL_ERROR = 1011
    #: Graceful shutdown, after flushing what was committed.
    SERVICE_RESTART = 1012
    #: The device did not read fast enough (its outgoing queue was full).
    SLOW_CONSUMER = 4008
    #: Another connection with the same (user, device) replaced this one.
    REPLACED = 4009


# --------------------------------------------------------------------------------------------
# Client events


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientEvent:
    """Base of every event decoded from a client frame. ``TYPE`` is the wire ``type``."""

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Send(ClientEvent):
    """``send {ref?, conv, cmid, body, kind?}``: post a message.

    ``body`` is ``str`` (at most ``max_body`` bytes once UTF-8 encoded) or, over msgpack only,
    ``bytes`` (at most ``max_body`` bytes). ``kind`` defaults to ``"text"``.
    """

    TYPE: ClassVar[str] = "send"
    conv: str
    cmid: str
    body: str | bytes
    kind: str = "text"
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt(ClientEvent):
    """``receipt {conv, seq, status}``: cumulative; ``status`` is ``delivered`` or ``read``."""

    TYPE: ClassVar[str] = "receipt"
    conv: str
    seq: int
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Sync(ClientEvent):
    """``sync {ref, convs: {conv: seq}}``: send what follows each of the client's cursors."""

    TYPE: ClassVar[str] = "sync"
    ref: Ref
    convs: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvCreateDirect(ClientEvent):
    """``conv.create {ref?, kind: "direct", with}``: the (idempotent) direct conversation."""

    TYPE: ClassVar[str] = "conv.create"
    with_user: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvCreateGroup(ClientEvent):
    """``conv.create {ref?, kind: "group", title, members}``; ``members`` without duplicates."""

    TYPE: ClassVar[str] = "conv.create"
    title: str
    members: tuple[str, ...]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvAdd(ClientEvent):
    """``conv.add {ref?, conv, users}`` (admins only); ``users`` non-empty, without duplicates."""

    TYPE: ClassVar[str] = "conv.add"
    conv: str
    users: tuple[str, ...]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvRemove(ClientEvent):
    """``conv.remove {ref?, conv, users}`` (admins, or anyone removing themself)."""

    TYPE: ClassVar[str] = "conv.remove"
    conv: str
    users: tuple[str, ...]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvsList(ClientEvent):
    """``convs {ref}``: list the caller's conversations."""

    TYPE: ClassVar[str] = "convs"
    ref: Ref


@dataclass(frozen=True, slots=True, kw_only=True)
class History(ClientEvent):
    """``history {ref, conv, before?, limit?}``: messages with ``seq < before``, ascending.

    ``before`` is ``None`` for the latest messages; ``limit`` is already defaulted and clamped to
    the connection's limits (default 50, max 200).
    """

    TYPE: ClassVar[str] = "history"
    ref: Ref
    conv: str
    limit: int
    before: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Typing(ClientEvent):
    """``typing {conv, state}``; ``state`` is ``start`` or ``stop``."""

    TYPE: ClassVar[str] = "typing"
    conv: str
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceSub(ClientEvent):
    """``presence.sub {ref?, users}``: subscribe to these users' presence."""

    TYPE: ClassVar[str] = "presence.sub"
    users: tuple[str, ...]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(ClientEvent):
    """``ping {ref?}`` → ``pong``."""

    TYPE: ClassVar[str] = "ping"
    ref: Ref | None = None


# --------------------------------------------------------------------------------------------
# Server events


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerEvent:
    """Base of every event the server sends.

    ``TYPE`` is the wire ``type``; ``OPTIONAL`` names the fields omitted on the wire when ``None``;
    ``WIRE_NAMES`` maps a Python field name to its wire name where they differ.
    """

    TYPE: ClassVar[str] = ""
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    WIRE_NAMES: ClassVar[Mapping[str, str]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome(ServerEvent):
    """``welcome {user, device, session, heartbeat, max_frame, server_time}``: the first frame.

    ``heartbeat`` in seconds, ``max_frame`` in bytes, ``server_time`` in ms since the epoch.
    """

    TYPE: ClassVar[str] = "welcome"
    user: str
    device: str
    session: str
    heartbeat: float
    max_frame: int
    server_time: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(ServerEvent):
    """``ack {ref?, conv, cmid, id, seq, ts}``: the message is durably committed."""

    TYPE: ClassVar[str] = "ack"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"ref"})
    conv: str
    cmid: str
    id: str
    seq: int
    ts: int
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Msg(ServerEvent):
    """``msg {conv, id, seq, from, cmid, body, kind, ts}``: a message delivered to a device.

    A ``bytes`` body travels as msgpack bin; over json it is sent base64-encoded in ``body_b64``
    instead of ``body`` (see docs/protocol.md).
    """

    TYPE: ClassVar[str] = "msg"
    WIRE_NAMES: ClassVar[Mapping[str, str]] = {"from_user": "from"}
    conv: str
    id: str
    seq: int
    from_user: str
    cmid: str
    body: str | bytes
    kind: str
    ts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptNotice(ServerEvent):
    """``receipt {conv, user, seq, status}``: another member's watermark moved."""

    TYPE: ClassVar[str] = "receipt"
    conv: str
    user: str
    seq: int
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced(ServerEvent):
    """``synced {ref?, convs: {conv: last_seq}}``: the end of a connect-time or asked sync."""

    TYPE: ClassVar[str] = "synced"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"ref"})
    convs: Mapping[str, int]
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvInfo(ServerEvent):
    """``conv {ref?, conv, kind, title, members, admins, last_seq}``.

    ``title`` is ``None`` (``null`` on the wire) for a direct conversation.
    """

    TYPE: ClassVar[str] = "conv"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"ref"})
    conv: str
    kind: str
    title: str | None
    members: tuple[str, ...]
    admins: tuple[str, ...]
    last_seq: int
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvLeft(ServerEvent):
    """``conv.left {conv}``: this user is no longer a member."""

    TYPE: ClassVar[str] = "conv.left"
    conv: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvSummary:
    """One entry of a ``convs`` reply (not a frame by itself)."""

    conv: str
    kind: str
    title: str | None
    members: tuple[str, ...]
    admins: tuple[str, ...]
    last_seq: int
    delivered_seq: int
    read_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvsReply(ServerEvent):
    """``convs {ref, convs: [{conv, kind, title, members, admins, last_seq, delivered_seq,
    read_seq}]}``."""

    TYPE: ClassVar[str] = "convs"
    ref: Ref
    convs: tuple[ConvSummary, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryReply(ServerEvent):
    """``history {ref, conv, messages: [msg...], more}``; messages ascending by ``seq``.

    Each message is encoded exactly as a ``msg`` frame, ``type`` included.
    """

    TYPE: ClassVar[str] = "history"
    ref: Ref
    conv: str
    messages: tuple[Msg, ...]
    more: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TypingNotice(ServerEvent):
    """``typing {conv, user, state}`` relayed to the other members."""

    TYPE: ClassVar[str] = "typing"
    conv: str
    user: str
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence(ServerEvent):
    """``presence {user, status, last_seen?}``; ``status`` ``online`` or ``offline``,
    ``last_seen`` in ms since the epoch."""

    TYPE: ClassVar[str] = "presence"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"last_seen"})
    user: str
    status: str
    last_seen: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(ServerEvent):
    """``pong {ref?, server_time}``; ``server_time`` in ms since the epoch."""

    TYPE: ClassVar[str] = "pong"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"ref"})
    server_time: int
    ref: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(ServerEvent):
    """``error {ref?, code, reason, retry_after?}``; ``retry_after`` in seconds."""

    TYPE: ClassVar[str] = "error"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"ref", "retry_after"})
    code: ErrorCode
    reason: str
    ref: Ref | None = None
    retry_after: float | None = None


#: Every client event class, by wire ``type`` (``conv.create`` has two: direct and group).
CLIENT_EVENTS: tuple[type[ClientEvent], ...] = (
    Send,
    Receipt,
    Sync,
    ConvCreateDirect,
    ConvCreateGroup,
    ConvAdd,
    ConvRemove,
    ConvsList,
    History,
    Typing,
    PresenceSub,
    Ping,
)

#: Every server event class.
SERVER_EVENTS: tuple[type[ServerEvent], ...] = (
    Welcome,
    Ack,
    Msg,
    ReceiptNotice,
    Synced,
    ConvInfo,
    ConvLeft,
    ConvsReply,
    HistoryReply,
    TypingNotice,
    Presence,
    Pong,
    Error,
)
