"""The messages the node's actors send each other: small frozen records, grouped by receiver.

Replies to calls are server events (``Ack``, ``ConvInfo``, ...) or an ``Error`` without ``ref``;
the connection actor adds the request's ``ref`` before sending it on.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors import Ref

from ._frames import ConvAdd, ConvRemove, Send, ServerEvent

# -- to a connection actor ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inbound:
    """A WebSocket message its reader task took from the socket."""

    data: bytes | str


@dataclass(frozen=True, slots=True)
class ReaderDone:
    """The socket is closed (by the client, or after a close this side began)."""

    code: int | None


@dataclass(frozen=True, slots=True)
class Push:
    """Send ``event`` to the device (a live push: a full outgoing queue closes with 4008)."""

    event: ServerEvent


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the WebSocket with ``code`` (4009 replaced, 1001 no pong, ...)."""

    code: int
    reason: str
    flush: bool = False


# -- to a session actor ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    """Call: ``device``'s connection is ``conn``; a connection already holding the device is
    closed with 4009. Replies with the user's :class:`~gateway._ratelimit.TokenBucket`."""

    device: str
    conn: Ref


@dataclass(frozen=True, slots=True)
class Deliver:
    """Cast: push ``event`` to every device of the user except ``exclude_device``."""

    event: ServerEvent
    exclude_device: str | None = None


# -- to a conversation actor ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Call: store ``send`` from (``user``, ``device``) → ``Ack`` or ``Error``."""

    user: str
    device: str
    send: Send


@dataclass(frozen=True, slots=True)
class MarkReceipt:
    """Call: move (``user``, ``device``)'s ``status`` watermark to ``seq`` → None or ``Error``."""

    user: str
    device: str
    seq: int
    status: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Call: the conversation as ``user`` may see it → ``ConvInfo`` or ``Error``."""

    user: str


@dataclass(frozen=True, slots=True)
class ChangeMembers:
    """Call: ``user`` adds or removes members → ``ConvInfo`` or ``Error``."""

    user: str
    change: ConvAdd | ConvRemove


@dataclass(frozen=True, slots=True)
class SetTyping:
    """Cast: ``user`` started or stopped typing."""

    user: str
    state: str


# -- to the presence actor ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Online:
    """Cast: the user has a connected device."""

    user: str


@dataclass(frozen=True, slots=True)
class Offline:
    """Cast: the user's last device left at ``ts`` (ms)."""

    user: str
    ts: int


@dataclass(frozen=True, slots=True)
class Announce:
    """Cast, from a (re)started presence to every session, and from a session to its
    connections: presence's state is new, tell it again who is online (and when a user who has
    no device left was last seen) and which users each connection watches."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Call: push presence changes of ``users`` to ``conn`` → ``{user: (online, last_seen)}``."""

    conn: Ref
    users: tuple[str, ...]


# -- to the listener ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StopAccepting:
    """Stop accepting new connections (the first step of a graceful shutdown)."""
