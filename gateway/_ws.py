"""Server-side WebSockets on wsproto, with no task of their own.

trio-websocket gives each connection a reader task and a message channel between that task and
the application: ~5.5 KB per idle connection here, and a task hop per frame. A node holds tens of
thousands of connections that are idle almost all the time, so :class:`ServerWebSocket` lets the
task that already serves the connection (the listener's handler) read the socket itself: it
reads the opening handshake (:meth:`~ServerWebSocket.read_request`), then each client message
(:meth:`~ServerWebSocket.get_message`), answering pings and the peer's close on the way. Other
tasks send (:meth:`~ServerWebSocket.send_message`, :meth:`~ServerWebSocket.ping`,
:meth:`~ServerWebSocket.aclose`); sends are serialised, so frames never interleave.

Semantics follow trio-websocket's server side (RFC 6455): a message above the size limit closes
with 1009; a peer's close is answered and the TCP connection closed at once (section 7.1.1:
the server closes first); a protocol error is answered with wsproto's close and the TCP
connection closed; a socket that ends without a close is 1006.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, cast

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

__all__ = ["CloseReason", "ConnectionClosed", "ServerWebSocket"]

#: Bytes asked of the socket per read.
RECEIVE_SIZE: Final = 16_384
#: The close code of a connection that ended without a close frame (RFC 6455, 7.1.5).
ABNORMAL: Final = 1006
#: The close code of a message above the size limit.
MESSAGE_TOO_BIG: Final = 1009
#: What the event scan returns for a message above the size limit.
_TOO_BIG: Final = object()


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why a WebSocket closed: its close ``code`` and ``reason`` (``None`` when none was given)."""

    code: int
    reason: str | None = None


class ConnectionClosed(Exception):
    """The WebSocket is closed (``reason``); raised by every operation from then on."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason)
        self.reason = reason


class ServerWebSocket:
    """One server-side WebSocket over ``stream``; messages above ``max_message_size`` (bytes
    of a binary message, characters of a text one) close it with 1009.

    One task reads (:meth:`read_request`, then :meth:`get_message` in a loop); any task may
    send. Until :meth:`accept` or :meth:`reject`, only the handshake methods apply.
    """

    __slots__ = (
        "_close",
        "_closed",
        "_max",
        "_parts",
        "_pings",
        "_proto",
        "_reading",
        "_sending",
        "_sent",
        "_size",
        "_socket",
        "_stream",
    )

    def __init__(self, stream: trio.abc.Stream, max_message_size: int) -> None:
        self._stream = stream
        # A socket's frames are written straight away when its buffer has room (see _write_now).
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._proto = WSConnection(ConnectionType.SERVER)
        self._max = max_message_size
        self._parts: list[Any] | None = None  # a fragmented message being read
        self._size = 0
        self._close: CloseReason | None = None  # set once closing or closed, either side
        self._closed: trio.Event | None = None  # set when the closing handshake is over
        self._pings: dict[bytes, trio.Event] | None = None
        self._reading = False
        self._sending = False
        self._sent: trio.Event | None = None  # wakes a sender waiting for the one in progress

    @property
    def closed(self) -> CloseReason | None:
        """Why the WebSocket closed (or is closing), ``None`` while it is open."""
        return self._close

    # -- the opening handshake --

    async def read_request(self) -> Request | None:
        """Read the upgrade request; ``None`` if the peer left first or sent something that is
        not one (then answered ``400`` as wsproto words it). Checkpoints."""
        while True:
            for event in self._proto.events():
                if isinstance(event, Request):
                    return event
            data = await self._receive()
            if not data:
                return None
            try:
                self._proto.receive_data(data)
            except RemoteProtocolError as err:
                if err.event_hint is not None:
                    await self._try_send(err.event_hint)
                return None

    async def accept(self, subprotocol: str | None) -> None:
        """Accept the upgrade with ``subprotocol`` (``None``: no ``Sec-WebSocket-Protocol``).

        Raises:
            ConnectionClosed: the peer is gone.
        """
        await self._send_event(AcceptConnection(subprotocol=subprotocol))

    async def reject(self, status: int, body: bytes = b"") -> None:
        """Refuse the upgrade with HTTP ``status`` and ``body``; the WebSocket is then closed
        (1006). Sending errors are ignored: the peer may be gone already."""
        headers = [(b"content-length", str(len(body)).encode("ascii"))]
        await self._try_send(RejectConnection(status_code=status, headers=headers, has_body=True))
        if body:
            await self._try_send(RejectData(data=body))
        self._close = CloseReason(ABNORMAL, "rejected")

    def shed_handshake(self) -> None:
        """Drop what wsproto keeps of the opening handshake once the WebSocket is open (its h11
        connection with buffers, the request, an empty event queue that it reads only while
        not empty): an idle connection holds it for nothing. Private attributes, so only if
        they look as expected."""
        handshake: Any = getattr(self._proto, "handshake", None)
        if self._proto.state is ConnectionState.OPEN and hasattr(handshake, "_h11_connection"):
            handshake._h11_connection = None
            handshake._initiating_request = None
            if isinstance(getattr(handshake, "_events", None), deque) and not handshake._events:
                handshake._events = ()

    # -- reading (one task) --

    async def get_message(self) -> str | bytes:
        """The next client message (``str`` for a text message, ``bytes`` for a binary one),
        answering pings and the peer's close meanwhile. Checkpoints.

        Raises:
            ConnectionClosed: the WebSocket closed (the peer's close, ours, a message above the
                limit, a protocol error, or the socket ended).
        """
        if self._reading:
            # aclose() is reading the peer's close (the only other reader): learn the end there.
            if self._closed is None:
                self._closed = trio.Event()
            await self._closed.wait()
            raise ConnectionClosed(self._close or CloseReason(ABNORMAL))
        self._reading = True
        try:
            while True:
                message = self._next_message()
                if message is _TOO_BIG:
                    assert self._close is not None
                    await self._try_send(CloseConnection(MESSAGE_TOO_BIG, self._close.reason))
                    self._done()
                    raise ConnectionClosed(self._close)
                if message is not None:
                    if type(message) is CloseConnection:
                        await self._on_close(message)
                    elif type(message) is Ping:
                        await self._try_send(message.response())
                    else:
                        return message  # type: ignore[no-any-return]
                    continue
                if self._proto.state is ConnectionState.CLOSED and self._close is not None:
                    self._done()
                    raise ConnectionClosed(self._close)
                data = await self._receive()
                if not data:
                    self._lost()
                    raise ConnectionClosed(self._close or CloseReason(ABNORMAL))
                # Once open, wsproto raises on nothing: a frame it cannot parse comes out of
                # events() as a close (see _on_close).
                self._proto.receive_data(data)
        finally:
            self._reading = False

    def _next_message(self) -> Any:
        """The next buffered event that needs the reader (a whole message, a ping or a close),
        after handling pongs and fragments; ``_TOO_BIG`` for a message above the limit;
        ``None`` when more bytes are needed."""
        for event in self._proto.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                if self._close is not None:
                    continue  # we are closing: what the peer still sends is dropped
                data = event.data  # type: ignore[attr-defined]
                self._size += len(data)
                if self._size > self._max:
                    reason = f"Exceeded maximum message size: {self._max} bytes"
                    self._close = CloseReason(MESSAGE_TOO_BIG, reason)
                    self._parts, self._size = None, 0
                    return _TOO_BIG
                if event.message_finished and self._parts is None:  # type: ignore[attr-defined]
                    self._size = 0
                    return data
                if self._parts is None:
                    self._parts = []
                self._parts.append(data)
                if event.message_finished:  # type: ignore[attr-defined]
                    parts, self._parts, self._size = self._parts, None, 0
                    return (b"" if kind is BytesMessage else "").join(parts)
            elif kind is Pong:
                self._pong(bytes(event.payload))  # type: ignore[attr-defined]
            elif kind is Ping or kind is CloseConnection:
                return event
        return None

    async def _on_close(self, event: CloseConnection) -> None:
        if self._proto.state is ConnectionState.OPEN:
            # Not the peer's close but a protocol error: once open, wsproto reports a frame it
            # cannot parse as a close event with the code to fail with (1002, 1007), and
            # leaves the connection open. Fail it: that close goes to the peer.
            if self._close is None:
                self._close = CloseReason(event.code, event.reason or None)
            await self._try_send(CloseConnection(event.code, event.reason))
        elif self._proto.state is ConnectionState.REMOTE_CLOSING:
            # The peer began: answer, then close the TCP connection (the server closes first).
            if self._close is None:
                self._close = CloseReason(event.code, event.reason or None)
            await self._try_send(event.response())
        await self._stream.aclose()
        self._done()
        raise ConnectionClosed(self._close or CloseReason(event.code, event.reason or None))

    def _lost(self) -> None:
        if self._close is None:
            self._close = CloseReason(ABNORMAL)
        self._done()

    def _ended(self) -> CloseReason | None:
        """Why the WebSocket closed, once the closing handshake is over (or the socket gone)."""
        if self._closed is not None and self._closed.is_set():
            return self._close or CloseReason(ABNORMAL)
        return None

    def _done(self) -> None:
        """The closing handshake is over (or the socket gone): wake whoever waits for it, and
        the pings no pong will answer now."""
        if self._closed is None:
            self._closed = trio.Event()
        self._closed.set()
        if self._pings:
            for pong in self._pings.values():
                pong.set()
            self._pings = None

    async def _receive(self) -> bytes:
        try:
            return cast(bytes, await self._stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    # -- sending (any task) --

    async def send_message(self, message: str | bytes) -> None:
        """Send one message (text for ``str``, binary for ``bytes``). The frame is written at
        once when the socket's buffer has room; the call waits (a checkpoint) only when it has
        not, or for another sender, or raises ``Cancelled`` if the caller is cancelled.

        Raises:
            ConnectionClosed: the WebSocket is closing or closed.
        """
        if self._close is not None:
            raise ConnectionClosed(self._close)
        await self._send_events([_message_event(message)])

    async def send_messages(self, messages: list[str] | list[bytes] | list[str | bytes]) -> None:
        """Send several messages in one write (as :meth:`send_message` each, in order)."""
        if self._close is not None:
            raise ConnectionClosed(self._close)
        await self._send_events([_message_event(m) for m in messages])

    async def ping(self) -> None:
        """Send a ping and wait for its pong (or a later one: a peer may answer only the last
        of several pings). Checkpoints.

        Raises:
            ConnectionClosed: the WebSocket is closing or closed.
        """
        if self._close is not None:
            raise ConnectionClosed(self._close)
        payload = os.urandom(4)
        pong = trio.Event()
        if self._pings is None:
            self._pings = {}
        self._pings[payload] = pong
        await self._send_event(Ping(payload=payload))
        await pong.wait()
        ended = self._ended()
        if ended is not None:
            raise ConnectionClosed(ended)  # woken by the end, not by a pong

    def _pong(self, payload: bytes) -> None:
        pings = self._pings
        if not pings or payload not in pings:
            return
        for key in list(pings):  # in the order sent: this one and any earlier ones
            pings.pop(key).set()
            if key == payload:
                break
        if not pings:
            self._pings = None

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close with ``code`` and ``reason``: send the close frame, wait for the peer's (read
        by the reading task, or here when none reads), then close the socket. Idempotent;
        bound it with a timeout (a peer may never answer): the socket is closed however it
        ends."""
        try:
            if self._close is None and self._proto.state is ConnectionState.OPEN:
                self._close = CloseReason(code, reason)
                try:
                    await self._send_event(CloseConnection(code=code, reason=reason))
                except ConnectionClosed:
                    return
                if self._reading:
                    if self._closed is None:
                        self._closed = trio.Event()
                    await self._closed.wait()
                else:
                    await self._drain()
        finally:
            await self._stream.aclose()
            self._done()

    async def _drain(self) -> None:
        """Read until the peer's close (no other task reads)."""
        try:
            while True:
                await self.get_message()
        except ConnectionClosed:
            pass

    def _write_now(self, data: bytes) -> int:
        """Write what the socket takes without waiting; the bytes written (0 if it is full).

        trio's ``send_all`` yields to the scheduler on every call, and a frame per call made
        that a third of the node's loop under load. The socket is non-blocking, so ``os.write``
        on its descriptor takes what fits; ``send_all`` writes the rest. The descriptor is
        asked for each time: a closed trio socket answers -1 (EBADF here), never a number
        another connection may have been given since.
        """
        socket = self._socket
        if socket is None:
            return 0
        try:
            return os.write(socket.fileno(), data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(exc) from exc

    async def _try_send(self, event: Event) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send_event(event)

    async def _send_event(self, event: Event) -> None:
        await self._send_events([event])

    async def _send_events(self, events: list[Event]) -> None:
        # One sender at a time, and wsproto's encoding in the same turn as the write, so that
        # frames go out whole and in the order wsproto's state machine saw them.
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._sending:
            if self._sent is None:
                self._sent = trio.Event()
            await self._sent.wait()
        self._sending = True
        try:
            try:
                send = self._proto.send
                data = send(events[0]) if len(events) == 1 else b"".join(map(send, events))
            except LocalProtocolError:
                raise ConnectionClosed(self._close or CloseReason(ABNORMAL)) from None
            written = self._write_now(data)
            if written == len(data):
                return
            try:
                await self._stream.send_all(memoryview(data)[written:])
            except trio.Cancelled:
                # Part of the frame may be on the wire: nothing can follow it any more.
                if self._close is None:
                    self._close = CloseReason(ABNORMAL, "a send was cancelled")
                raise
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self._close is None:
                self._close = CloseReason(ABNORMAL)
            raise ConnectionClosed(self._close) from None
        finally:
            self._sending = False
            if self._sent is not None:
                self._sent.set()
                self._sent = None


def _message_event(message: str | bytes) -> Event:
    return TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
