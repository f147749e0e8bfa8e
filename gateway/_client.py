"""A trio client for Parley's protocol v1, over trio-websocket.

One :class:`Client` per device connection, opened with :func:`open_client`. Requests are typed
methods that send a frame with a fresh ``ref`` and wait for the reply with that ``ref``; every
other frame the server sends (``msg``, ``receipt``, ``conv``, ``conv.left``, ``typing``,
``presence``, ``synced``, ``error`` without a ``ref``) goes on the bounded :attr:`Client.events`
channel, and the end of each connection is put there as a :class:`Closed` record.

Per conversation, the client delivers messages on :attr:`events` gaplessly, in ``seq`` order and
once each, even across :meth:`Client.reconnect` (which resumes with the server's connect-time
sync): a ``msg`` above the next expected ``seq`` is held while the client asks the server for
the gap (``sync``), repeats and the echo of its own acknowledged messages are dropped.
"""

from __future__ import annotations

import math
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar, cast

import trio
import trio_websocket

from ._auth import new_message_id
from ._client_codec import decode_server_frame, encode_request
from ._client_cursor import ConvCursor
from ._client_errors import (
    ConnectError,
    ConnectionClosedError,
    HandshakeRejected,
    RequestTimeout,
    ServerError,
    ServerProtocolError,
)
from ._codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, SUBPROTOCOLS
from ._errors import LocalProtocolError
from ._frames import (
    Ack,
    ConvInfo,
    ConvLeft,
    ConvsReply,
    ConvSummary,
    Error,
    HistoryReply,
    Msg,
    Pong,
    Presence,
    Ref,
    ServerEvent,
    Synced,
    Welcome,
)

#: Seconds a request waits for its reply unless told otherwise (``None`` waits forever).
DEFAULT_REQUEST_TIMEOUT: Final = 10.0
#: Seconds to open the connection and receive ``welcome``.
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
#: Seconds the closing handshake may take before the TCP connection is just dropped.
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
#: Capacity of :attr:`Client.events`, in frames.
DEFAULT_EVENT_BUFFER: Final = 1024
#: Largest server frame accepted, in bytes (a full ``history`` page of 200 bodies of 16 KiB fits).
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 2**20
#: Close code the client uses when the server breaks the protocol.
PROTOCOL_ERROR_CLOSE: Final = 1002
#: Seconds a gap may last before the client asks the server to fill it, while this device's
#: own sends to the conversation are in flight (one may hold the missing seq) or when only its
#: own ``ack`` shows the gap (an ack can overtake the push of an earlier message).
GAP_GRACE: Final = 1.0
#: Seconds before a failed gap ``sync`` is made again (without ``retry_after``), doubled after
#: each failure up to :data:`GAP_MAX_BACKOFF`.
GAP_BACKOFF: Final = 0.5
GAP_MAX_BACKOFF: Final = 5.0
#: Answers in a row that bring nothing after which a gap filler gives up until the next message
#: or ``synced``.
GAP_ATTEMPTS: Final = 3
#: Error codes after which :meth:`Client.send_message` may retry (with the same ``cmid``).
_RETRYABLE: Final = frozenset({"rate_limited", "unavailable"})
#: Error codes with which the server refuses to fill a gap (the user is no longer a member).
_GAP_REFUSED: Final = frozenset({"forbidden", "not_found"})
#: HTTP statuses that no retry will change (a bad subprotocol, a bad token).
_FINAL_STATUSES: Final = frozenset({400, 401})

_E = TypeVar("_E", bound=ServerEvent)


@dataclass(frozen=True, slots=True)
class Closed:
    """A connection ended (a client-side record, put on :attr:`Client.events`).

    Attributes:
        code: the WebSocket close code: the server's (1000, 1008, 1009, 1011, 1012, 4008,
            4009...), 1006 when the connection was lost without a close frame, 1002 when this
            client closed it because the server broke the protocol, or the client's own code.
        reason: the close reason ("" when none was given).
    """

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The answer to :meth:`Client.sync`: the ``msg`` frames, then the ``synced`` cursors.

    Attributes:
        messages: the messages sent in answer, in arrival order (ascending ``seq`` per
            conversation).
        convs: ``synced``'s map of conversation id → last ``seq``.
    """

    messages: tuple[Msg, ...]
    convs: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A snapshot of a client's queues and counters.

    Attributes:
        events_buffered: frames waiting on :attr:`Client.events`.
        events_capacity: that channel's capacity.
        pending_requests: requests waiting for their reply.
        duplicates_dropped: ``msg`` frames not delivered because already seen.
        late_replies: replies whose ``ref`` nobody waited for any more (after a timeout).
        unknown_frames: frames of a ``type`` this client does not know (skipped).
        connections: connections opened so far (1 + successful reconnects).
        messages_held: ``msg`` frames held behind a gap in their conversation's ``seq``s
            (at most ``event_buffer`` in all; beyond that a gapped message is dropped and
            fetched again when the gap is filled).
        gap_syncs: ``sync`` requests the client made by itself to fill such gaps.
    """

    events_buffered: int
    events_capacity: int
    pending_requests: int
    duplicates_dropped: int
    late_replies: int
    unknown_frames: int
    connections: int
    messages_held: int = 0
    gap_syncs: int = 0


#: What :attr:`Client.events` carries: unsolicited server events, and :class:`Closed`.
Incoming = ServerEvent | Closed


class _Pending:
    """One request waiting for its reply (or, for some, for the frames that answer it)."""

    __slots__ = (
        "conn",
        "done",
        "error",
        "expect",
        "leave_conv",
        "messages",
        "presence",
        "presence_wanted",
        "reply",
        "request",
        "sync_convs",
    )

    def __init__(self, request: str, expect: tuple[type[ServerEvent], ...]) -> None:
        self.request = request
        self.expect = expect
        self.conn: _Connection | None = None
        self.done = trio.Event()
        self.reply: ServerEvent | None = None
        self.error: BaseException | None = None
        # sync (the application's): its cursors, and its answer once ``synced`` came
        self.sync_convs: Mapping[str, int] | None = None
        self.messages: list[Msg] = []
        # presence.sub: the users asked for, and their first presence frame
        self.presence_wanted: frozenset[str] = frozenset()
        self.presence: dict[str, Presence] = {}
        # leave: conv.left for this conversation answers it too
        self.leave_conv: str | None = None

    def resolve(self, reply: ServerEvent) -> None:
        if not self.done.is_set():
            self.reply = reply
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _Connection:
    """One WebSocket connection of a client (a client has one at a time)."""

    __slots__ = ("binary", "closed", "finished", "local_close", "scope", "welcome", "ws")

    def __init__(self, ws: trio_websocket.WebSocketConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.welcome: Welcome | None = None
        self.closed: Closed | None = None
        self.local_close = False
        self.scope = trio.CancelScope()
        self.finished = trio.Event()


class Client:
    """A connected Parley client (one device). Build it with :func:`open_client`.

    Request methods are ``async``, always checkpoint, and raise:

    - :class:`ServerError` when the server answers ``error`` (``code``, ``reason``,
      ``retry_after``);
    - :class:`RequestTimeout` (a :class:`trio.TooSlowError`) when no reply came within
      :attr:`request_timeout` seconds;
    - :class:`ConnectionClosedError` when the connection is closed, or closes before the reply;
    - :class:`LocalProtocolError` for a request the connection cannot carry (a ``bytes`` body
      over json).

    Delivery: per conversation, the ``msg`` frames on :attr:`events` come gaplessly, in ``seq``
    order, and once each (repeats, and the server's echo of this device's own acknowledged
    messages, are dropped). A ``msg`` above the next expected ``seq`` (the push of an earlier
    one was lost) is held while the client asks the server ``sync {conv: cursor}`` for the gap,
    one such request per conversation at a time, made again after a reconnect's connect-time
    sync if the connection ended first; the held messages follow once the gap is filled. While
    this device's own sends to that conversation are in flight, or when only its own ``ack``
    shows the gap, the client gives it :data:`GAP_GRACE` seconds to close by itself first. A
    client starts each conversation where the server starts it (the first message, a ``conv``
    frame's ``last_seq`` or ``synced``), not at seq 1. The server refusing a gap
    (``forbidden``, ``not_found``: the user left) drops what is held behind it.

    Attributes:
        request_timeout: seconds each request waits for its reply; ``None`` waits forever (then
            only the caller's cancel scopes bound it). May be changed at any time.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        url: str,
        token: str,
        *,
        subprotocol: str,
        request_timeout: float | None,
        connect_timeout: float,
        close_timeout: float,
        event_buffer: int,
        max_message_size: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if subprotocol not in SUBPROTOCOLS:
            raise LocalProtocolError(
                f"unknown subprotocol {subprotocol!r}; use {SUBPROTOCOL_MSGPACK} or "
                f"{SUBPROTOCOL_JSON}"
            )
        if request_timeout is not None and not request_timeout > 0:
            raise ValueError(f"request_timeout must be positive or None, not {request_timeout!r}")
        self._nursery = nursery
        self._url = url
        self._token = token
        self._subprotocol = subprotocol
        self.request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._max_message_size = max_message_size
        self._ssl_context = ssl_context
        _split_url(url, ssl_context)  # a bad URL fails here, not on the first connect
        self._events_send, self._events = trio.open_memory_channel[Incoming](event_buffer)
        self._event_buffer = event_buffer
        self._conn: _Connection | None = None
        self._closing = False
        # The client's own tasks, each in its own cancel scope: aclose() cancels these, not the
        # nursery, which may hold the caller's code too (open_client's block runs inside it).
        self._scopes: set[trio.CancelScope] = set()
        self._pending: dict[Ref, _Pending] = {}
        self._next_ref = 1
        self._cursors: dict[str, ConvCursor] = {}
        self._held = 0  # messages held behind gaps, all conversations
        self._filling: dict[str, trio.Event] = {}  # conv → its gap filler's wake-up
        self._gap_syncs = 0
        self._duplicates = 0
        self._late = 0
        self._unknown = 0
        self._connections = 0

    # ----------------------------------------------------------------------------------------
    # State

    @property
    def events(self) -> trio.MemoryReceiveChannel[Incoming]:
        """Unsolicited frames, in arrival order, and a :class:`Closed` when a connection ends.

        Bounded (``event_buffer``): when full, the client stops reading the socket until it is
        drained, which holds up replies too, and a server whose queue for this device fills
        closes it with 4008. Read it, or keep requests few while it is not read. The channel
        ends (``EndOfChannel``) once the client is closed.
        """
        return self._events

    @property
    def welcome(self) -> Welcome:
        """The current connection's ``welcome`` frame (user, device, session, heartbeat in
        seconds, max_frame in bytes, server_time in ms)."""
        conn = self._conn
        assert conn is not None
        assert conn.welcome is not None
        return conn.welcome

    @property
    def user(self) -> str:
        """This connection's user id (from ``welcome``)."""
        return self.welcome.user

    @property
    def subprotocol(self) -> str:
        """The negotiated subprotocol: ``parley.v1.msgpack`` or ``parley.v1.json``."""
        assert self._conn is not None
        return SUBPROTOCOL_MSGPACK if self._conn.binary else SUBPROTOCOL_JSON

    @property
    def closed(self) -> Closed | None:
        """``None`` while the current connection is open, else its close code and reason."""
        return None if self._conn is None else self._conn.closed

    @property
    def cursors(self) -> dict[str, int]:
        """Per conversation, the ``seq`` up to which every message has been delivered (on
        :attr:`events`, by :meth:`sync`, or acknowledged to this device): a contiguous prefix,
        so a message held behind a gap does not count (a copy; suitable for :meth:`sync`)."""
        return {conv: c.seq for conv, c in self._cursors.items() if c.based}

    def statistics(self) -> ClientStatistics:
        """Queue sizes and counters, as a frozen record."""
        return ClientStatistics(
            events_buffered=self._events_send.statistics().current_buffer_used,
            events_capacity=self._event_buffer,
            pending_requests=len(self._pending),
            duplicates_dropped=self._duplicates,
            late_replies=self._late,
            unknown_frames=self._unknown,
            connections=self._connections,
            messages_held=self._held,
            gap_syncs=self._gap_syncs,
        )

    # ----------------------------------------------------------------------------------------
    # Requests

    async def send_message(
        self,
        conv: str,
        body: str | bytes,
        cmid: str | None = None,
        *,
        kind: str | None = None,
        retries: int = 0,
    ) -> Ack:
        """Post ``body`` to ``conv`` and wait until the server has durably committed it.

        ``body`` is text (at most ``max_body`` UTF-8 bytes, 16384 by default) or, over msgpack,
        opaque ``bytes``. ``cmid`` is the client's message id (default: a new ULID); sending the
        same ``cmid`` again never stores a second message, so a send that failed or timed out
        can be retried with it. With ``retries`` > 0, an ``error`` ``rate_limited`` or
        ``unavailable`` is retried that many times, after sleeping its ``retry_after`` seconds
        (1 s when absent), with the same ``cmid``.

        Returns:
            The ``ack``: ``id`` (ULID), ``seq`` (position in the conversation, from 1), ``ts``
            (ms since the epoch).
        """
        cmid = new_message_id() if cmid is None else cmid
        frame = {"type": "send", "conv": conv, "cmid": cmid, "body": body, "kind": kind}
        cursor = self._cursor(conv)
        cursor.sending += 1  # a gap in conv may be this message: its filler gives it a grace
        try:
            while True:
                try:
                    return await self._call(frame, Ack)  # the reader has counted it in cursor
                except ServerError as exc:
                    if retries <= 0 or exc.code not in _RETRYABLE:
                        raise
                    retries -= 1
                    await trio.sleep(exc.retry_after if exc.retry_after is not None else 1.0)
        finally:
            cursor.sending -= 1
            if not cursor.sending:
                self._wake(conv)

    async def create_direct(self, user: str) -> ConvInfo:
        """The direct conversation with ``user`` (created on first use; the same pair always
        gets the same one). Returns its ``conv`` frame (``title`` is ``None``)."""
        return await self._call({"type": "conv.create", "kind": "direct", "with": user}, ConvInfo)

    async def create_group(self, title: str, members: Iterable[str]) -> ConvInfo:
        """A new group titled ``title`` (at most 256 characters) with ``members``; the caller is
        a member and its admin. Returns its ``conv`` frame. ``too_large`` above ``max_group``."""
        frame = {"type": "conv.create", "kind": "group", "title": title, "members": list(members)}
        return await self._call(frame, ConvInfo)

    async def add_members(self, conv: str, users: Iterable[str]) -> ConvInfo:
        """Add ``users`` (non-empty) to group ``conv`` (admins only: else ``forbidden``).
        Returns the updated ``conv`` frame."""
        return await self._call({"type": "conv.add", "conv": conv, "users": list(users)}, ConvInfo)

    async def remove_members(self, conv: str, users: Iterable[str]) -> ConvInfo:
        """Remove ``users`` (non-empty) from group ``conv`` (admins only, except oneself).
        Returns the updated ``conv`` frame."""
        frame = {"type": "conv.remove", "conv": conv, "users": list(users)}
        return await self._call(frame, ConvInfo)

    async def leave(self, conv: str) -> None:
        """Remove oneself from ``conv``. Done when the server answers the request, or tells this
        device ``conv.left`` for ``conv`` (that frame is also put on :attr:`events`)."""
        pending = _Pending("conv.remove", (ConvInfo, ConvLeft))
        pending.leave_conv = conv
        await self._request({"type": "conv.remove", "conv": conv, "users": [self.user]}, pending)

    async def convs(self) -> tuple[ConvSummary, ...]:
        """The caller's conversations, with their members, admins, ``last_seq`` and this
        device's ``delivered_seq`` and the user's ``read_seq``."""
        reply = await self._call({"type": "convs"}, ConvsReply)
        return reply.convs

    async def history(
        self, conv: str, before: int | None = None, limit: int | None = None
    ) -> HistoryReply:
        """A page of ``conv``'s messages with ``seq < before`` (the latest when ``None``), at
        most ``limit`` (server default 50, at most 200), ascending by ``seq``; ``more`` says
        whether older ones exist. History is not deduplicated nor tracked by :attr:`cursors`."""
        frame = {"type": "history", "conv": conv, "before": before, "limit": limit}
        return await self._call(frame, HistoryReply)

    async def sync(self, cursors: Mapping[str, int]) -> SyncResult:
        """Ask for the messages after each ``{conv: seq}`` cursor (at most ``sync_limit`` per
        conversation); returns them and the ``synced`` cursors.

        The answer holds only messages above the cursors given and not delivered before (on
        :attr:`events`, by an earlier sync, or as an ``ack``), in ``seq`` order and gaplessly
        from :attr:`cursors`: while the sync runs, those conversations' messages (whichever way
        they come: the answer, live pushes, a reconnect's connect-time sync) are kept off
        :attr:`events` and go into the answer, up to the first one still missing; what lies
        beyond a gap follows on :attr:`events` once the client has filled it. A cursor above
        :attr:`cursors` says the application has everything up to it: the client moves its own
        cursor there. If the sync fails (``error``, timeout, closed connection), nothing it
        collected counts as delivered: it comes on :attr:`events` later, in order, the gap
        filled by the client. (The client fills gaps in what it delivers by itself: this is
        for an application that wants to fetch on its own terms.)
        """
        asked = dict(cursors)
        for conv, seq in asked.items():
            cursor = self._cursor(conv)
            held = len(cursor.held)
            cursor.skip_to(seq)
            self._held += len(cursor.held) - held
        pending = _Pending("sync", (Synced,))
        pending.sync_convs = asked
        try:
            reply = await self._request({"type": "sync", "convs": asked}, pending)
        finally:
            if pending.reply is None:  # failed: fill the gap (the answer's reader releases
                for conv in asked:  # what it held on an error, the next synced on a close)
                    self._check_gap(conv, self._cursor(conv))
        assert isinstance(reply, Synced)
        return SyncResult(messages=tuple(pending.messages), convs=reply.convs)

    async def receipt(self, conv: str, seq: int, status: str = "read") -> None:
        """Tell the server this device has ``status`` (``delivered`` or ``read``) every message
        of ``conv`` up to ``seq``. No reply is waited for (the contract defines none)."""
        await self._send_now({"type": "receipt", "conv": conv, "seq": seq, "status": status})

    async def typing(self, conv: str, state: str = "start") -> None:
        """Tell the other members this user is typing (``start``) or stopped (``stop``); a
        ``start`` lapses after 10 s unless renewed. No reply."""
        await self._send_now({"type": "typing", "conv": conv, "state": state})

    async def subscribe_presence(self, users: Iterable[str]) -> dict[str, Presence]:
        """Subscribe to ``users``' presence (users sharing a conversation with the caller; else
        ``forbidden``). Returns each one's current ``presence``; later changes arrive on
        :attr:`events` (where these first frames are put too)."""
        wanted = frozenset(users)
        pending = _Pending("presence.sub", ())
        pending.presence_wanted = wanted
        await self._request({"type": "presence.sub", "users": sorted(wanted)}, pending)
        return dict(pending.presence)

    async def ping(self) -> Pong:
        """Round trip to the server; the ``pong`` carries ``server_time`` (ms since the epoch)."""
        return await self._call({"type": "ping"}, Pong)

    # ----------------------------------------------------------------------------------------
    # Connection life

    async def reconnect(
        self,
        *,
        token: str | None = None,
        attempts: int | None = 1,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> Welcome:
        """Open a new connection to the same URL, closing the current one first (1000) if it is
        still open, and return its ``welcome``.

        The server then pushes, as on any connect, the messages above this device's delivered
        watermark and ``synced``; they arrive on :attr:`events`, without the ones this client
        already delivered (deduplicated by conversation cursor and own message ids), and gaps
        left open by the old connection are filled. Requests still waiting on the old
        connection fail with :class:`ConnectionClosedError`.

        Args:
            token: a new token to use from now on (e.g. the old one expired).
            attempts: connection attempts before giving up (``None``: until cancelled).
            backoff: seconds before the second attempt, doubled each time up to ``max_backoff``.

        Raises:
            HandshakeRejected: 400 or 401 (not retried), or the last attempt's refusal.
            ConnectError: the last attempt failed.
            ConnectionClosedError: the client itself was closed.
        """
        if self._closing:
            raise ConnectionClosedError(1000, "the client is closed")
        old = self._conn
        if old is not None:
            await self._close_connection(old, 1000, "reconnecting")
        if token is not None:
            self._token = token
        delay = backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._connect()
            except HandshakeRejected as exc:
                if exc.status_code in _FINAL_STATUSES or attempt == attempts:
                    raise
            except ConnectError:
                if attempt == attempts:
                    raise
            await trio.sleep(delay)
            delay = min(delay * 2, max_backoff)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (``code``, ``reason``), fail waiting requests, end
        :attr:`events`, and stop the client's tasks. Idempotent; releases everything even when
        cancelled (the closing handshake is shielded and bounded by ``close_timeout``)."""
        if self._closing:
            return
        self._closing = True
        try:
            if self._conn is not None:
                await self._close_connection(self._conn, code, reason)
        finally:
            self._events_send.close()
            for scope in self._scopes:
                scope.cancel()

    async def _task(
        self,
        fn: Callable[..., Awaitable[None]],
        *args: Any,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one of the client's tasks in a scope :meth:`aclose` cancels (``task_status`` is
        passed on when ``fn`` takes one, i.e. when started with ``nursery.start``)."""
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                if self._closing:
                    scope.cancel()
                if task_status is trio.TASK_STATUS_IGNORED:
                    await fn(*args)
                else:
                    await fn(*args, task_status=task_status)
            finally:
                self._scopes.discard(scope)

    # ----------------------------------------------------------------------------------------
    # Internals

    async def _connect(self) -> Welcome:
        conn: _Connection = await self._nursery.start(self._task, self._run_connection)
        assert conn.welcome is not None
        return conn.welcome

    async def _run_connection(self, task_status: trio.TaskStatus[_Connection]) -> None:
        """Open one connection, report it once ``welcome`` came, then read it until it ends.

        Failures before ``welcome`` are raised from :meth:`_connect` (``nursery.start``); the
        end of an established connection is reported on :attr:`events`, not raised. The TCP
        stream is this task's own, so it is closed however the connection ends (trio-websocket
        leaves it open when the upgrade is refused).
        """
        host, port, resource, ssl_context = _split_url(self._url, self._ssl_context)
        headers = [(b"authorization", b"Bearer " + self._token.encode("latin-1"))]
        deadline = trio.current_time() + self._connect_timeout
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
        started = False
        try:
            async with trio.open_nursery() as ws_nursery:
                with trio.fail_at(deadline):
                    if ssl_context is None:
                        stream = await trio.open_tcp_stream(host, port)
                    else:
                        stream = await trio.open_ssl_over_tcp_stream(
                            host, port, ssl_context=ssl_context, https_compatible=True
                        )
                    ws = await trio_websocket.wrap_client_stream(
                        ws_nursery,
                        # (a stream like the one it wraps; its annotation names the two kinds)
                        cast(trio.SocketStream, _UpgradeWatch(stream)),
                        host if port in (80, 443) else f"{host}:{port}",
                        resource,
                        subprotocols=[self._subprotocol],
                        extra_headers=headers,
                        max_message_size=self._max_message_size,
                    )
                    welcome, binary = await self._receive_welcome(ws)
                conn = _Connection(ws, binary)
                conn.welcome = welcome
                self._conn = conn
                self._connections += 1
                started = True
                task_status.started(conn)
                await self._reader(conn)
                # Let trio-websocket finish the closing handshake (its reader task ends when the
                # server closes TCP), but no longer than close_timeout.
                ws_nursery.cancel_scope.deadline = trio.current_time() + self._close_timeout
        except BaseException as exc:
            error = _main_error(exc)
            if isinstance(error, trio.Cancelled | KeyboardInterrupt):
                raise
            if started:
                if isinstance(error, _CONNECTION_ENDED):
                    return  # it ended while closing; its end is already reported
                raise
            translated = self._connect_error(error)
            if translated is exc:
                raise
            if translated is error:
                _reraise(error)
            raise translated from error
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)

    def _connect_error(self, error: BaseException) -> BaseException:
        if isinstance(error, trio_websocket.ConnectionRejected):
            return HandshakeRejected(error.status_code, error.body or b"")
        if isinstance(error, _ClosedBeforeUpgrade):
            return ConnectError(f"{self._url}: {error}")
        if isinstance(error, trio.TooSlowError):
            return ConnectError(f"{self._url}: no welcome within {self._connect_timeout} s")
        if isinstance(error, trio_websocket.ConnectionClosed):
            code, reason = _close_reason(error.reason)
            return ConnectError(f"{self._url}: closed before welcome ({code} {reason})".strip())
        if isinstance(error, _CONNECTION_ENDED):
            return ConnectError(f"{self._url}: {error or type(error).__name__}")
        return error

    async def _receive_welcome(
        self, ws: trio_websocket.WebSocketConnection
    ) -> tuple[Welcome, bool]:
        chosen = ws.subprotocol
        binary = chosen == SUBPROTOCOL_MSGPACK
        try:
            if chosen is not None and chosen not in SUBPROTOCOLS:
                raise ServerProtocolError(f"the server chose subprotocol {chosen!r}")
            first = decode_server_frame(await ws.get_message(), binary=binary)
            if not isinstance(first, Welcome):
                shown = "an unknown frame" if first is None else repr(first.TYPE)
                raise ServerProtocolError(f"the server sent {shown} before welcome")
        except ServerProtocolError:
            with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
                await ws.aclose(PROTOCOL_ERROR_CLOSE, "protocol error")
            raise
        return first, binary

    async def _close_connection(self, conn: _Connection, code: int, reason: str) -> None:
        """Close ``conn`` (if still open) and wait until its reader is done. Shielded, bounded."""
        with trio.CancelScope(shield=True):
            if conn.closed is None:
                conn.local_close = True
                conn.closed = Closed(code, reason)
                with trio.move_on_after(self._close_timeout):
                    await conn.ws.aclose(code, reason or None)
                conn.scope.cancel()
            await conn.finished.wait()

    async def _reader(self, conn: _Connection) -> None:
        try:
            with conn.scope:
                await self._read_frames(conn)
            closed = conn.closed
            if closed is None:
                closed = conn.closed = Closed(*_close_reason(conn.ws.closed))
            self._fail_pending(conn, ConnectionClosedError(closed.code, closed.reason))
            if conn.local_close:
                # The client closed it itself: report it if there is room, never wait.
                with suppress(trio.WouldBlock, trio.ClosedResourceError):
                    self._events_send.send_nowait(closed)
            else:
                await self._emit(closed)
        finally:
            conn.finished.set()

    async def _read_frames(self, conn: _Connection) -> None:
        while True:
            try:
                data = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            try:
                event = decode_server_frame(data, binary=conn.binary)
            except ServerProtocolError as exc:
                conn.closed = Closed(PROTOCOL_ERROR_CLOSE, str(exc))
                conn.local_close = False  # the server's doing: report it like a server close
                with trio.move_on_after(self._close_timeout):
                    await conn.ws.aclose(PROTOCOL_ERROR_CLOSE, "protocol error")
                return
            if event is None:
                self._unknown += 1
                continue
            await self._route(event)

    async def _route(self, event: ServerEvent) -> None:
        ref: Ref | None = getattr(event, "ref", None)
        if type(event) is ConvInfo:
            cursor = self._cursors.get(event.conv)
            if cursor is None or not cursor.based:
                self._cursor(event.conv).base(event.last_seq)  # a new start: nothing before
        if ref is not None:
            pending = self._pending.get(ref)
            if pending is None:
                self._late += 1
            elif isinstance(event, Error):
                pending.fail(
                    ServerError(event.code, event.reason, event.retry_after, ref=event.ref)
                )
                for conv in pending.sync_convs or ():
                    await self._had(conv, 0)  # a failed sync: what it held goes on events
            elif isinstance(event, pending.expect):
                if type(event) is Synced:
                    for conv, last in event.convs.items():
                        self._cursor(conv).sync_to(last)
                    if pending.sync_convs is not None:
                        self._answer_sync(pending)
                pending.resolve(event)
                if type(event) is Ack:
                    await self._had(event.conv, event.seq)
                elif type(event) is Synced:
                    for conv in pending.sync_convs or event.convs:
                        await self._had(conv, 0)  # release what the answer unblocked
            else:
                pending.fail(
                    ServerProtocolError(
                        f"a {event.TYPE!r} frame answered a {pending.request!r} request"
                    )
                )
            return
        if isinstance(event, Msg):
            await self._on_msg(event)
            return
        if isinstance(event, Presence | ConvLeft):
            for pending in list(self._pending.values()):
                if isinstance(event, Presence) and event.user in pending.presence_wanted:
                    pending.presence.setdefault(event.user, event)
                    if len(pending.presence) == len(pending.presence_wanted):
                        pending.resolve(event)
                elif isinstance(event, ConvLeft) and pending.leave_conv == event.conv:
                    pending.resolve(event)
        elif type(event) is Synced:  # the connect-time sync is done: fill what it left open
            for conv, last in event.convs.items():
                self._cursor(conv).sync_to(last)
            for conv in list(self._cursors):
                await self._had(conv, 0)  # e.g. what a sync cut short by the last close held
        await self._emit(event)

    def _cursor(self, conv: str) -> ConvCursor:
        cursor = self._cursors.get(conv)
        if cursor is None:
            cursor = self._cursors[conv] = ConvCursor()
        return cursor

    def _app_syncing(self, conv: str) -> _Pending | None:
        """The application's :meth:`sync` waiting for ``conv``'s messages, if any."""
        for pending in self._pending.values():
            sync_convs = pending.sync_convs
            if sync_convs is not None and conv in sync_convs and not pending.done.is_set():
                return pending
        return None

    async def _on_msg(self, msg: Msg) -> None:
        conv = msg.conv
        cursor = self._cursor(conv)
        if cursor.is_duplicate(msg.seq):
            self._duplicates += 1
            return
        syncing = self._app_syncing(conv) is not None
        if self._held >= self._event_buffer and (
            syncing or (cursor.based and msg.seq > cursor.seq + 1)
        ):
            if not syncing:  # (the sync's end fills the gap)
                self._check_gap(conv, cursor)  # no room to hold it: filling the gap fetches it
            return
        held = len(cursor.held)
        if syncing:  # for the application's sync answer (if it succeeds)
            cursor.hold(msg)
            ready = []
        else:
            ready = cursor.accept(msg)
        self._held += len(cursor.held) - held
        if ready:
            await self._deliver(conv, cursor, ready)
        elif not syncing:
            self._check_gap(conv, cursor)

    def _answer_sync(self, pending: _Pending) -> None:
        """The application's sync succeeded: its answer is what its conversations' cursors now
        pass over, in order (it counts as delivered from here on)."""
        assert pending.sync_convs is not None
        for conv in pending.sync_convs:
            cursor = self._cursor(conv)
            held = len(cursor.held)
            ready = cursor.advance(release=True)
            self._held += len(cursor.held) - held
            pending.messages.extend(ready)
            if ready:
                self._wake(conv)

    async def _had(self, conv: str, seq: int) -> None:
        """The application has ``conv``'s message at ``seq`` (its own ``ack``; 0: nothing new,
        just release what is deliverable): deliver what that unblocks."""
        cursor = self._cursor(conv)
        release = self._app_syncing(conv) is None
        held = len(cursor.held)
        ready = cursor.had(seq, release=release) if seq else cursor.advance(release=release)
        self._held += len(cursor.held) - held
        await self._deliver(conv, cursor, ready)

    async def _deliver(self, conv: str, cursor: ConvCursor, ready: list[Msg]) -> None:
        for msg in ready:
            await self._emit(msg)
        if ready:
            self._wake(conv)
        self._check_gap(conv, cursor)

    # -- gaps --

    def _check_gap(self, conv: str, cursor: ConvCursor) -> None:
        """Start filling ``conv``'s gap, unless there is none, or its filler runs, or the
        application's sync for it runs (its end checks again)."""
        if (
            cursor.based
            and cursor.gap
            and conv not in self._filling
            and not self._closing
            and self._app_syncing(conv) is None
        ):
            self._filling[conv] = trio.Event()
            self._nursery.start_soon(self._task, self._fill, conv, cursor)

    def _wake(self, conv: str) -> None:
        """Tell ``conv``'s filler that its cursor moved, or its sends are done."""
        wake = self._filling.get(conv)
        if wake is not None:
            wake.set()

    async def _fill(self, conv: str, cursor: ConvCursor) -> None:
        """Ask ``sync {conv: cursor}`` until the gap is filled (the answer's messages go through
        :meth:`_on_msg` like any push; its ``synced`` releases what they unblock). A failed
        request (``unavailable``, a timeout) is made again after a backoff (``retry_after``
        when given); the filler ends when the connection ends (the next connect-time
        ``synced`` starts it again), and after :data:`GAP_ATTEMPTS` answers in a row that
        brought nothing (the next message or ``synced`` starts it again)."""
        patience = trio.current_time() + GAP_GRACE
        backoff = GAP_BACKOFF
        fruitless = 0
        try:
            while cursor.gap and not self._closing:
                wake = self._filling[conv] = trio.Event()
                if (cursor.sending or not cursor.gap_seen_pushed) and (
                    trio.current_time() < patience
                ):
                    # The missing seq may be this device's own message (its ack is on the way),
                    # or a push that the device's own ack overtook: give them GAP_GRACE.
                    with trio.move_on_at(patience):
                        await wake.wait()
                    continue
                if self._app_syncing(conv) is not None:  # its answer may fill the gap
                    with trio.move_on_after(backoff):
                        await wake.wait()
                    continue
                before = cursor.seq
                self._gap_syncs += 1
                try:
                    await self._request(
                        {"type": "sync", "convs": {conv: cursor.seq}}, _Pending("sync", (Synced,))
                    )
                except ServerError as exc:
                    if exc.code in _GAP_REFUSED:
                        self._held -= cursor.drop_held()
                        return
                    delay = exc.retry_after if exc.retry_after is not None else backoff
                except RequestTimeout:
                    delay = backoff
                except ConnectionClosedError:
                    return
                else:
                    if cursor.seq != before:
                        backoff, fruitless = GAP_BACKOFF, 0
                        continue
                    fruitless += 1
                    if fruitless >= GAP_ATTEMPTS:
                        return
                    delay = backoff
                backoff = min(backoff * 2, GAP_MAX_BACKOFF)
                with trio.move_on_after(delay):
                    await wake.wait()
        finally:
            del self._filling[conv]

    async def _emit(self, event: Incoming) -> None:
        with suppress(trio.ClosedResourceError):  # closing: nobody will read it
            await self._events_send.send(event)

    def _fail_pending(self, conn: _Connection, error: BaseException) -> None:
        for pending in self._pending.values():
            if pending.conn is conn:
                pending.fail(error)

    def _live(self) -> _Connection:
        conn = self._conn
        if conn is None or self._closing:
            raise ConnectionClosedError(1000, "the client is closed")
        if conn.closed is not None:
            raise ConnectionClosedError(conn.closed.code, conn.closed.reason)
        return conn

    async def _send_frame(self, conn: _Connection, frame: Mapping[str, object]) -> None:
        data = encode_request(frame, binary=conn.binary)
        try:
            await conn.ws.send_message(data)
        except trio_websocket.ConnectionClosed as exc:
            closed = conn.closed or Closed(*_close_reason(exc.reason))
            raise ConnectionClosedError(closed.code, closed.reason) from None

    async def _send_now(self, frame: Mapping[str, object]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._send_frame(self._live(), frame)

    async def _call(self, frame: Mapping[str, object], expect: type[_E]) -> _E:
        reply = await self._request(frame, _Pending(str(frame["type"]), (expect,)))
        assert isinstance(reply, expect)
        return reply

    async def _request(self, frame: Mapping[str, object], pending: _Pending) -> ServerEvent | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        conn = self._live()
        ref = self._next_ref
        self._next_ref += 1
        frame = {"type": frame["type"], "ref": ref, **frame}
        pending.conn = conn
        self._pending[ref] = pending
        timeout = self.request_timeout
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                await self._send_frame(conn, frame)
                await pending.done.wait()
        finally:
            del self._pending[ref]
        if scope.cancelled_caught:
            raise RequestTimeout(f"no reply to {pending.request!r} (ref {ref}) in {timeout} s")
        if pending.error is not None:
            raise pending.error
        return pending.reply


#: Errors by which an established connection just ends (its close is reported, not raised).
_CONNECTION_ENDED: Final = (
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)


class _ClosedBeforeUpgrade(Exception):
    """The server closed the TCP connection before answering the upgrade request."""


class _UpgradeWatch(trio.abc.Stream):
    """The client's TCP (or TLS) stream as trio-websocket sees it, failing fast when the server
    closes it before answering the upgrade request at all.

    trio-websocket's reader then just ends, without a close reason, so ``wrap_client_stream``
    would wait for the handshake until the connect deadline (a listener being killed does
    that). Raising an error of its own, which trio-websocket does not catch, ends the handshake
    at once. Once the answer has begun, the stream passes everything through unchanged.
    """

    __slots__ = ("_answered", "_stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._answered = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self._answered:
                raise
            raise _ClosedBeforeUpgrade("the connection broke before the upgrade") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._answered:
            return await self._stream.receive_some(max_bytes)
        try:
            data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            raise _ClosedBeforeUpgrade("the connection broke before the upgrade") from exc
        if not data:
            raise _ClosedBeforeUpgrade("the server closed the connection before the upgrade")
        self._answered = True
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


def _main_error(exc: BaseException) -> BaseException:
    """The exception that matters in what a nursery raised: the first that is not a
    cancellation (preferring a refused upgrade), else the first."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        item = stack.pop(0)
        if isinstance(item, BaseExceptionGroup):
            stack[:0] = list(item.exceptions)
        else:
            leaves.append(item)
    for leaf in leaves:
        if isinstance(leaf, trio_websocket.ConnectionRejected):
            return leaf
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return leaves[0]


def _split_url(
    url: str, ssl_context: ssl.SSLContext | None
) -> tuple[str, int, str, ssl.SSLContext | None]:
    """``(host, port, resource, ssl_context)`` of a ``ws://`` or ``wss://`` URL.

    Raises:
        ValueError: another scheme, or no host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r}: the scheme must be ws or wss")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    secure = parts.scheme == "wss"
    if secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    port = parts.port if parts.port is not None else (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, resource, ssl_context if secure else None


def _close_reason(reason: trio_websocket.CloseReason | None) -> tuple[int, str]:
    if reason is None:
        return 1006, ""
    return reason.code, reason.reason or ""


@asynccontextmanager
async def open_client(
    url: str,
    token: str,
    *,
    subprotocol: str = SUBPROTOCOL_MSGPACK,
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    event_buffer: int = DEFAULT_EVENT_BUFFER,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Client]:
    """Connect to a Parley node and wait for its ``welcome``; close on exit.

    ``url`` is the WebSocket endpoint (``ws://127.0.0.1:8765/ws``; ``wss://`` uses the default
    TLS context); ``token`` a JWT from ``parley token`` or :func:`mint_token`, sent as
    ``Authorization: Bearer``. ``subprotocol`` is offered alone: ``parley.v1.msgpack`` (binary,
    bodies may be ``bytes``) or ``parley.v1.json``.

    Args:
        request_timeout: seconds a request waits for its reply; ``None`` disables the timeout.
        connect_timeout: seconds for the TCP connect, the upgrade and ``welcome``.
        close_timeout: seconds for the closing handshake on exit.
        event_buffer: capacity of :attr:`Client.events`, in frames.
        max_message_size: largest server frame accepted, in bytes.
        ssl_context: the TLS context for ``wss://`` (default: the system's trusted CAs).

    Raises:
        HandshakeRejected: the server refused the upgrade (400, 401, 429).
        ConnectError: the network failed, or the upgrade and ``welcome`` took longer than
            ``connect_timeout``.
        ServerProtocolError: the server's first frame was not ``welcome``.
        LocalProtocolError: ``subprotocol`` is unknown.
        ValueError: ``url`` is not a ``ws://`` or ``wss://`` URL.
    """
    user_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            client = Client(
                nursery,
                url,
                token,
                subprotocol=subprotocol,
                request_timeout=request_timeout,
                connect_timeout=connect_timeout,
                close_timeout=close_timeout,
                event_buffer=event_buffer,
                max_message_size=max_message_size,
                ssl_context=ssl_context,
            )
            try:
                await client._connect()
                yield client
            except BaseException as exc:
                user_error = exc
                raise
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        _raise_one(group, user_error)


def _raise_one(
    group: BaseExceptionGroup[BaseException], preferred: BaseException | None
) -> NoReturn:
    """Re-raise the one exception a nursery wrapped (the caller's, if it raised), not the group."""
    errors = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    if preferred is not None and (preferred in group.exceptions or not errors):
        chosen = preferred
    elif len(errors) == 1:
        chosen = errors[0]
    elif not errors:
        chosen = group.exceptions[0]
    else:
        raise group
    _reraise(chosen)


def _reraise(error: BaseException) -> NoReturn:
    """Raise ``error`` taken out of an exception group, without the group as its context."""
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context
        del error, context
