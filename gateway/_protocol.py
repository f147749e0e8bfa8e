"""The sans-IO client connection: frames in, events out; events in, frames out.

No sockets and no clock: the connection actor reads a WebSocket message, hands it to
:meth:`ClientConnection.receive_frame`, and acts on the event or on the
:class:`RemoteProtocolError` (send its ``error``, close with its ``close_code``). It encodes what
it sends with :meth:`ClientConnection.send`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from ._codec import SUBPROTOCOL_JSON, SUBPROTOCOLS, Undecodable, decode_frame, encode_event
from ._errors import LocalProtocolError, RemoteProtocolError
from ._frames import ClientEvent, CloseCode, Error, ErrorCode, ServerEvent, Welcome
from ._validate import Invalid, Limits, TooLarge, build_event, read_ref


class ConnectionState(enum.Enum):
    """Where a connection is in its life.

    ``AWAITING_WELCOME``: nothing sent yet; the first frame sent must be ``welcome``.
    ``OPEN``: frames flow both ways.
    ``CLOSING``: a close code was decided (by the client's misbehaviour or by the node); no more
    frames are received, frames may still be sent (a final ``error``, a flush before 1012).
    """

    AWAITING_WELCOME = "awaiting_welcome"
    OPEN = "open"
    CLOSING = "closing"


#: What may be sent in each state: ``welcome`` only first; anything else only after it.
SEND_ALLOWED: Final[Mapping[ConnectionState, str]] = {
    ConnectionState.AWAITING_WELCOME: "welcome",
    ConnectionState.OPEN: "any but welcome",
    ConnectionState.CLOSING: "any but welcome",
}
#: The states in which frames may be received.
RECEIVE_ALLOWED: Final = frozenset({ConnectionState.AWAITING_WELCOME, ConnectionState.OPEN})


_DEFAULT_LIMITS: Final = Limits()


class ClientConnection:
    """The protocol state of one client connection.

    Args:
        subprotocol: the negotiated subprotocol (see :func:`choose_subprotocol`); ``None`` means
            none was negotiated, which speaks json.
        limits: the connection's limits (frame and body sizes, group cap, bad-frame limit,
            history limits).

    Raises:
        LocalProtocolError: ``subprotocol`` is not one this node speaks.
    """

    __slots__ = ("_bad_frames", "_binary", "_close_code", "_limits", "_state", "_subprotocol")

    def __init__(self, subprotocol: str | None, limits: Limits | None = None) -> None:
        if subprotocol is None:
            subprotocol = SUBPROTOCOL_JSON
        if subprotocol not in SUBPROTOCOLS:
            raise LocalProtocolError(f"unknown subprotocol {subprotocol!r}")
        self._subprotocol = subprotocol
        self._binary = subprotocol != SUBPROTOCOL_JSON
        self._limits = limits if limits is not None else _DEFAULT_LIMITS
        self._state = ConnectionState.AWAITING_WELCOME
        self._bad_frames = 0
        self._close_code: int | None = None

    @property
    def subprotocol(self) -> str:
        """``"parley.v1.msgpack"`` or ``"parley.v1.json"``."""
        return self._subprotocol

    @property
    def binary(self) -> bool:
        """Whether frames are binary (msgpack) rather than text (json)."""
        return self._binary

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def bad_frames(self) -> int:
        """Bad frames received in a row since the last good one."""
        return self._bad_frames

    @property
    def close_code(self) -> int | None:
        """The close code decided, or ``None`` while the connection stays open."""
        return self._close_code

    def receive_frame(self, data: bytes | str) -> ClientEvent:
        """Decode and validate one WebSocket message from the client.

        ``data`` is ``bytes`` for a binary message, ``str`` for a text one. Resets the bad-frame
        count on success.

        Returns:
            The client event.

        Raises:
            RemoteProtocolError: the frame was bad. Its ``error`` (an :class:`Error` with code
                ``bad_request`` or ``too_large``, echoing the frame's ``ref`` when it could be
                read) is to be sent; its ``close_code`` is ``None`` (the connection stays open),
                1009 for a frame over ``max_frame`` (no ``error``), or 1008 when this was the
                ``bad_frames``-th bad frame in a row. When a close code is set, the connection
                is ``CLOSING``.
            LocalProtocolError: called once the connection is ``CLOSING``.
        """
        if self._state not in RECEIVE_ALLOWED:
            raise LocalProtocolError(f"cannot receive in state {self._state.name}")
        if self._oversize(data):
            self._begin_close(CloseCode.MESSAGE_TOO_BIG)
            raise RemoteProtocolError(
                f"frame larger than {self._limits.max_frame} bytes",
                close_code=CloseCode.MESSAGE_TOO_BIG,
            )
        ref: str | int | None = None
        try:
            frame = decode_frame(self._binary, data)
            ref = read_ref(frame)
            event = build_event(frame, self._limits)
        except (Undecodable, Invalid) as exc:
            code = ErrorCode.TOO_LARGE if isinstance(exc, TooLarge) else ErrorCode.BAD_REQUEST
            raise self._bad_frame(code, str(exc), ref) from None
        self._bad_frames = 0
        return event

    def send(self, event: ServerEvent) -> bytes | str:
        """Encode ``event`` for this connection's subprotocol.

        Returns:
            ``bytes`` (a binary message) with msgpack, ``str`` (a text message) with json. Over
            json a ``bytes`` message body goes base64-encoded as ``body_b64`` (in place of
            ``body``).

        Raises:
            LocalProtocolError: ``welcome`` is not the first frame sent, or is sent twice; or
                ``event`` cannot be encoded.
        """
        is_welcome = isinstance(event, Welcome)
        if (self._state is ConnectionState.AWAITING_WELCOME) != is_welcome:
            raise LocalProtocolError(
                f"cannot send {event.TYPE!r} in state {self._state.name}: "
                f"{SEND_ALLOWED[self._state]} may be sent"
            )
        data = encode_event(event, binary=self._binary)
        if is_welcome:
            self._state = ConnectionState.OPEN
        return data

    def begin_close(self, code: int) -> None:
        """Record the node's own decision to close with ``code`` (e.g. 1012, 4008, 4009).

        From now on frames are no longer received; sending stays possible (for a final flush).
        The first decided code wins.
        """
        self._begin_close(code)

    def _begin_close(self, code: int) -> None:
        if self._close_code is None:
            self._close_code = code
        self._state = ConnectionState.CLOSING

    def _oversize(self, data: bytes | str) -> bool:
        limit = self._limits.max_frame
        if isinstance(data, bytes) or len(data) > limit:
            return len(data) > limit
        if len(data) * 4 <= limit or data.isascii():
            return False
        return len(data.encode("utf-8", "surrogatepass")) > limit

    def _bad_frame(
        self, code: ErrorCode, reason: str, ref: str | int | None
    ) -> RemoteProtocolError:
        self._bad_frames += 1
        error = Error(code=code, reason=reason, ref=ref)
        if self._bad_frames >= self._limits.bad_frames:
            self._begin_close(CloseCode.POLICY_VIOLATION)
            return RemoteProtocolError(
                f"{reason} ({self._bad_frames} bad frames in a row)",
                error=error,
                close_code=CloseCode.POLICY_VIOLATION,
            )
        return RemoteProtocolError(reason, error=error)
