"""The connection actor: one per WebSocket, a function actor that owns the socket's tasks.

The listener's handler task of the socket reads it (:class:`Inlet`: client frames go to the
actor's mailbox, at most ``INFLIGHT`` at a time), so reading costs no task of the actor's; a
writer task, started when frames are queued and gone once the queue is empty, drains a bounded
outgoing queue (live pushes that find it full close the connection with 4008; replies wait for
room). Syncs (the connect-time one, then ``sync`` requests, one at a time) are pushed by a
feeder task, started when there is one and gone when there is none, a quarter of the queue's
capacity at a time whenever that keeps it at most half full: a sync never fills the queue by
itself, and live pushes keep room (flow control). While the connect-time sync has not pushed a
conversation yet, that conversation's live messages are left to it, so the device gets each
conversation in ``seq`` order. Every ``heartbeat`` seconds a timer of the node (not a task of
its own) tells the actor to ping; a short-lived task waits for the pong, and no pong within two
heartbeats closes the connection with 1001. An idle connection thus keeps no task of its own
besides the actor's, which matters at tens of thousands of connections. The actor itself
decodes frames with :class:`ClientConnection`, applies the rate limit and routes requests to
the conversation, session and presence actors. On ``shutdown`` from its supervisor it flushes
what is queued and closes with 1012.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import structlog
import trio

from actors import CallError, Context, Down, Exit, NoProcError, Ref, Timer
from storage import Conversation, StorageError, Unavailable, direct_key

from . import _fanout
from ._auth import Identity, new_message_id
from ._errors import RemoteProtocolError
from ._frames import (
    ClientEvent,
    CloseCode,
    ConvAdd,
    ConvCreateDirect,
    ConvCreateGroup,
    ConvInfo,
    ConvRemove,
    ConvsList,
    ConvsReply,
    ConvSummary,
    Error,
    ErrorCode,
    History,
    HistoryReply,
    Msg,
    Ping,
    Pong,
    Presence,
    PresenceSub,
    Receipt,
    Send,
    ServerEvent,
    Sync,
    Synced,
    Typing,
    Welcome,
)
from ._frames import Ref as FrameRef
from ._messages import (
    Announce,
    ChangeMembers,
    CloseConnection,
    Inbound,
    MarkReceipt,
    Push,
    ReaderDone,
    Register,
    SendMessage,
    SetTyping,
    Snapshot,
    Subscribe,
)
from ._protocol import ClientConnection
from ._ratelimit import TokenBucket
from ._services import (
    CONVERSATIONS,
    PRESENCE,
    RETRY_AFTER_S,
    SESSIONS,
    Services,
    conv_name,
    find_or_start,
    gone,
    now_ms,
    session_name,
)
from ._validate import CONV_ID_RE
from ._ws import ConnectionClosed, ServerWebSocket

log = structlog.get_logger("gateway")

#: Client frames read ahead of the actor (the reader waits beyond that).
INFLIGHT: Final = 4
#: Most queued frames the writer sends in one write (one system call, not one each).
COALESCE_FRAMES: Final = 64
#: Seconds to flush the outgoing queue and finish the closing handshake.
CLOSE_TIMEOUT: Final = 5.0
#: Seconds to wait for a conversation actor's answer.
CALL_TIMEOUT: Final = 5.0
#: Syncs waiting for the feeder (one more ``sync`` request waits for room).
SYNC_JOBS: Final = 8
#: Seconds a sync may wait for the device to read anything before it is closed with 4008.
SYNC_STALL: Final = 10.0


@dataclass(slots=True)
class _ConvSync:
    """One conversation of the connect-time sync, until it is pushed: the device's delivered
    watermark (``after``), and the highest seq known to exist (from storage, or a live push
    that was left to the sync)."""

    after: int
    top: int = 0


@dataclass(frozen=True, slots=True)
class _SyncJob:
    """A sync for the feeder: ``convs`` maps each conversation to the seq after which to push;
    ``ref`` is the request's (``None``: the connect-time sync, whose live pushes it takes)."""

    convs: dict[str, int]
    ref: FrameRef | None = None
    connect: bool = False


@dataclass(frozen=True, slots=True)
class _Beat:
    """Time to ping the client (sent by the actor's own timer)."""


_BEAT: Final = _Beat()


class Inlet:
    """The reading side of a connection, run by the task that accepted the socket: it hands
    client frames to the connection actor, at most ``INFLIGHT`` unprocessed at a time, and
    ``ReaderDone`` when the socket closes. The actor cancels ``scope`` when it ends, which
    stops the reading."""

    __slots__ = ("free", "scope", "wake")

    def __init__(self) -> None:
        self.free = INFLIGHT  # frames it may still hand over before the actor takes one
        self.wake: trio.Event | None = None  # only while the pump waits for the actor
        self.scope = trio.CancelScope()

    def release(self) -> None:
        """The actor took a frame: one more may be handed over."""
        self.free += 1
        if self.wake is not None:
            self.wake.set()
            self.wake = None

    async def pump(self, ws: ServerWebSocket, conn: Ref) -> None:
        """Read ``ws`` into ``conn``'s mailbox until the socket closes or ``scope`` is
        cancelled. Checkpoints."""
        with self.scope:
            code: int | None = None
            try:
                while True:
                    while self.free <= 0:
                        wake = self.wake = trio.Event()
                        await wake.wait()
                    self.free -= 1
                    conn.send(Inbound(await ws.get_message()))
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else None
            conn.send(ReaderDone(code))


async def connection_actor(
    ctx: Context,
    services: Services,
    ws: ServerWebSocket,
    identity: Identity,
    sub: str | None,
    inlet: Inlet,
) -> None:
    """Run one client connection until its socket closes or it is told to stop; ``inlet``
    (run by the caller) feeds it the client's frames."""
    ctx.trap_exit = True
    try:
        await _Connection(ctx, services, ws, identity, sub, inlet).run()
    finally:
        inlet.scope.cancel()


class _Connection:
    __slots__ = (
        "_queue_size",
        "beat",
        "bucket",
        "closing",
        "connect_sync",
        "ctx",
        "cursors",
        "device",
        "feeding",
        "inlet",
        "node",
        "nursery",
        "out",
        "out_closed",
        "out_done",
        "proto",
        "room",
        "services",
        "session",
        "sync_chunk",
        "sync_jobs",
        "sync_jobs_room",
        "sync_mark",
        "user",
        "watched",
        "writing",
        "ws",
    )

    def __init__(
        self,
        ctx: Context,
        services: Services,
        ws: ServerWebSocket,
        identity: Identity,
        sub: str | None,
        inlet: Inlet,
    ) -> None:
        self.ctx = ctx
        self.node = ctx.node
        self.services = services
        self.ws = ws
        self.user = identity.user
        self.device = identity.device
        self.proto = ClientConnection(sub, services.limits)
        size = self._queue_size = services.settings.limits.outgoing_queue
        # The bounded outgoing queue: a deque only while frames wait for the writer (an idle
        # connection keeps none), ``out_closed`` once nothing more may be queued (a flushing
        # close), ``out_done`` once the writer is gone for good (queued frames are dropped).
        self.out: deque[bytes | str] | None = None
        self.out_closed = False
        self.out_done = False
        self.inlet = inlet
        self.writing = False
        self.beat: Timer | None = None
        self.cursors: dict[str, int] = {}
        # flow-controlled syncs (see the module docstring), created while there are some
        self.sync_jobs: deque[_SyncJob] | None = None
        self.sync_jobs_room: trio.Event | None = None  # set when the feeder took a job
        self.feeding = False
        self.connect_sync: dict[str, _ConvSync] = {}  # conversations it has not pushed yet
        self.sync_chunk = max(1, size // 4)
        self.sync_mark = max(self.sync_chunk, size // 2)  # a chunk goes in at most up to here
        self.room: trio.Event | None = None  # set when a frame left the queue, or it closed
        self.bucket: TokenBucket | None = None
        self.session: Ref | None = None
        self.watched: set[str] | None = None  # users whose presence this device subscribed to
        self.closing = False
        self.nursery: trio.Nursery | None = None

    @property
    def log(self) -> Any:
        """The logger with this connection's user and device (bound when something is logged:
        a bound logger per idle connection would cost memory for nothing)."""
        return log.bind(user=self.user, device=self.device)

    # -- life --

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self._open()
                self._schedule_beat()
                await self._loop()
                nursery.cancel_scope.cancel()
        finally:
            if self.beat is not None:
                self.beat.cancel()

    async def _open(self) -> None:
        settings = self.services.settings
        self._queue(
            Welcome(
                user=self.user,
                device=self.device,
                session=new_message_id(),
                heartbeat=settings.server.heartbeat,
                max_frame=self.services.limits.max_frame,
                server_time=now_ms(),
            )
        )
        await self._register()
        await self._connect_sync()

    async def _register(self) -> None:
        for _ in range(3):
            try:
                session = await find_or_start(
                    self.node, SESSIONS, session_name(self.user), self.user
                )
                self.bucket = await session.call(Register(self.device, self.ctx.ref))
            except (NoProcError, CallError) as exc:
                if gone(exc):
                    continue
                raise
            self.session = session
            self.ctx.monitor(session)
            return
        raise NoProcError(f"no session for {self.user}")

    async def _loop(self) -> None:
        ctx = self.ctx
        while True:
            message = await ctx.receive()
            kind = type(message)
            if kind is Push:
                if not self.closing and not self._push(message.event):
                    self._close(CloseCode.SLOW_CONSUMER, "outgoing queue full", flush=False)
            elif kind is Inbound:
                self.inlet.release()
                if not self.closing:
                    await self._on_frame(message.data)
            elif kind is ReaderDone:
                return
            elif kind is _Beat:
                if not self.closing:
                    assert self.nursery is not None
                    self.nursery.start_soon(self._ping)
            elif kind is CloseConnection:
                self._close(message.code, message.reason, flush=message.flush)
            elif kind is Exit:
                if message.ref == ctx.parent or message.ref is None:
                    self._close(CloseCode.SERVICE_RESTART, "server restart", flush=True)
            elif kind is Announce:
                if not self.closing and self.watched:
                    assert self.nursery is not None
                    self.nursery.start_soon(self._resubscribe)
            elif kind is Down:
                if message.ref == self.session:
                    self._close(CloseCode.INTERNAL_ERROR, "session lost", flush=True)
            else:
                self.log.warning("unexpected_message", message=repr(message)[:200])

    # -- socket tasks --

    def _start_writer(self) -> None:
        """Start the writer unless it runs (it stops when the queue is empty)."""
        if not self.writing and not self.out_done:
            self.writing = True
            assert self.nursery is not None
            self.nursery.start_soon(self._writer)

    async def _writer(self) -> None:
        """Send what is queued until the queue is empty (then end: an idle connection keeps no
        writer task), or closed and empty (then ``writer_done``), or the socket is gone."""
        finished = True
        try:
            while True:
                out = self.out
                if not out:
                    self.out = None
                    finished = self.out_closed
                    return
                if len(out) == 1:
                    await self.ws.send_message(out.popleft())
                else:  # what queued up meanwhile, in one write
                    count = min(len(out), COALESCE_FRAMES)
                    await self.ws.send_messages([out.popleft() for _ in range(count)])
                self._roomier()
        except ConnectionClosed:
            pass
        finally:
            self.writing = False
            if finished:
                self.out = None
                self.out_done = True  # whoever waits for room learns the socket is gone
                self._roomier()

    def _queued(self) -> int:
        """Frames in the outgoing queue."""
        return len(self.out) if self.out is not None else 0

    def _roomier(self) -> None:
        """Wake whoever waits for room: a frame left the queue (or the queue closed)."""
        if self.room is not None:
            self.room.set()
            self.room = None

    async def _room_changed(self) -> None:
        """Wait until a frame leaves the outgoing queue, or it closes. Checkpoints."""
        if self.room is None:
            self.room = trio.Event()
        await self.room.wait()

    def _schedule_beat(self) -> None:
        interval = self.services.settings.server.heartbeat
        self.beat = self.ctx.send_after(interval, self.ctx.ref, _BEAT)

    async def _ping(self) -> None:
        """Ping; no pong within two heartbeats closes the connection, a pong schedules the
        next ping a heartbeat later."""
        interval = self.services.settings.server.heartbeat
        try:
            with trio.move_on_after(2 * interval) as scope:
                await self.ws.ping()
        except ConnectionClosed:
            return
        if scope.cancelled_caught:
            self.ctx.ref.send(CloseConnection(1001, "no pong within two heartbeats"))
        elif not self.closing:
            self._schedule_beat()

    def _close(self, code: int, reason: str, *, flush: bool) -> None:
        """Begin closing the socket with ``code`` (after sending what is queued, with
        ``flush``). The actor keeps taking (and dropping) messages meanwhile, so its mailbox
        does not overflow while a slow client holds the close up; it ends when the close is
        done or after ``CLOSE_TIMEOUT``."""
        if self.closing:
            return
        self.closing = True
        self._roomier()
        self.proto.begin_close(code)
        assert self.nursery is not None
        self.nursery.start_soon(self._closer, code, reason, flush)

    async def _closer(self, code: int, reason: str, flush: bool) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT):
            if flush:
                self.out_closed = True
                self._roomier()
                self._start_writer()
                while not self.out_done:
                    await self._room_changed()
            await self.ws.aclose(code, reason)
        self.log.info("connection_closed", code=code, reason=reason)
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    # -- sending --

    def _queue(self, event: ServerEvent) -> bool:
        data = self.proto.send(event)
        if self.out_closed or self.out_done:
            return True  # closing or closed: nothing more goes out
        out = self.out
        if out is None:
            out = self.out = deque()
        elif len(out) >= self._queue_size:
            return False
        out.append(data)
        self._start_writer()
        return True

    def _push(self, event: ServerEvent) -> bool:
        """Queue a live push; False when the outgoing queue is full (a slow consumer)."""
        if isinstance(event, Msg):
            if event.seq <= self.cursors.get(event.conv, 0):
                return True  # already sent by a sync
            pending = self.connect_sync.get(event.conv)
            if pending is not None:  # the connect-time sync pushes it, in order
                pending.top = max(pending.top, event.seq)
                return self._queued() < self._queue_size
            self.cursors[event.conv] = event.seq
            metrics = self.services.metrics
            metrics.messages_out.inc()
            metrics.delivery_latency.observe(max(0, now_ms() - event.ts) / 1000)
        return self._queue(event)

    async def _reply(self, event: ServerEvent) -> None:
        """A reply or a synced message: waits for room in the outgoing queue."""
        data = self.proto.send(event)
        while not (self.out_closed or self.out_done):
            if self._queued() < self._queue_size:
                if self.out is None:
                    self.out = deque()
                self.out.append(data)
                self._start_writer()
                return
            await self._room_changed()

    # -- client frames --

    async def _on_frame(self, data: bytes | str) -> None:
        try:
            event = self.proto.receive_frame(data)
        except RemoteProtocolError as exc:
            if exc.error is not None:
                await self._reply(exc.error)
            if exc.close_code is not None:
                self._close(exc.close_code, exc.reason[:100], flush=True)
            return
        ref = getattr(event, "ref", None)
        try:
            reply = await self._handle(event)
        except Unavailable as exc:
            reply = Error(
                code=ErrorCode.UNAVAILABLE,
                reason=f"storage unavailable: {exc}",
                retry_after=exc.retry_after,
            )
        except StorageError as exc:
            self.log.error("storage_error", error=repr(exc))
            reply = Error(code=ErrorCode.INTERNAL, reason="storage error")
        if reply is not None:
            if ref is not None and hasattr(reply, "ref"):
                reply = dataclasses.replace(reply, ref=ref)  # type: ignore[call-arg]
            await self._reply(reply)

    async def _handle(self, event: ClientEvent) -> ServerEvent | None:
        kind = type(event)
        if kind is Send:
            assert isinstance(event, Send)
            assert self.bucket is not None
            wait = self.bucket.take()
            if wait > 0:
                return Error(
                    code=ErrorCode.RATE_LIMITED,
                    reason="sending too fast",
                    retry_after=round(wait, 3),
                )
            started = self.node.now()
            reply: ServerEvent = await self._conv_call(
                event.conv, SendMessage(self.user, self.device, event)
            )
            self.services.metrics.ack_latency.observe(self.node.now() - started)
            return reply
        if kind is Receipt:
            assert isinstance(event, Receipt)
            receipt: ServerEvent | None = await self._conv_call(
                event.conv, MarkReceipt(self.user, self.device, event.seq, event.status)
            )
            return receipt
        if kind is Ping:
            return Pong(server_time=now_ms())
        if kind is ConvCreateDirect:
            assert isinstance(event, ConvCreateDirect)
            return await self._create_direct(event)
        if kind is ConvCreateGroup:
            assert isinstance(event, ConvCreateGroup)
            return await self._create_group(event)
        if kind is ConvAdd or kind is ConvRemove:
            assert isinstance(event, ConvAdd | ConvRemove)
            changed: ServerEvent = await self._conv_call(
                event.conv, ChangeMembers(self.user, event)
            )
            return changed
        if kind is History:
            assert isinstance(event, History)
            return await self._history(event)
        if kind is Sync:
            assert isinstance(event, Sync)
            return await self._sync(event)
        if kind is ConvsList:
            return await self._convs()
        if kind is Typing:
            assert isinstance(event, Typing)
            await self._typing(event)
            return None
        if kind is PresenceSub:
            assert isinstance(event, PresenceSub)
            return await self._presence_sub(event)
        return Error(code=ErrorCode.BAD_REQUEST, reason=f"unsupported frame {event.TYPE}")

    async def _conv_call(self, conv: str, request: Any) -> Any:
        """Call the conversation's actor (started on demand); its answer, or an ``Error``."""
        for attempt in range(3):
            try:
                ref = await find_or_start(self.node, CONVERSATIONS, conv_name(conv), conv)
                return await ref.call(request, timeout=CALL_TIMEOUT)
            except (NoProcError, CallError) as exc:
                if gone(exc) and attempt < 2:
                    continue  # it passivated just now: start it again
                self.log.warning("conversation_call_failed", conv=conv, error=repr(exc))
                return Error(
                    code=ErrorCode.UNAVAILABLE,
                    reason="conversation unavailable, retry",
                    retry_after=RETRY_AFTER_S,
                )
        raise AssertionError("unreachable")

    async def _snapshot(self, conv: str) -> ConvInfo | Error:
        reply: ConvInfo | Error = await self._conv_call(conv, Snapshot(self.user))
        return reply

    # -- conversations --

    async def _create_direct(self, event: ConvCreateDirect) -> ServerEvent:
        other = event.with_user
        if other == self.user:
            return Error(
                code=ErrorCode.BAD_REQUEST, reason="a direct conversation needs another user"
            )
        conv_id = direct_key(self.user, other)
        if not CONV_ID_RE.fullmatch(conv_id):
            return Error(code=ErrorCode.BAD_REQUEST, reason="user ids too long for a direct id")
        proposed = Conversation(
            conv=conv_id,
            kind="direct",
            title=None,
            created_ts=now_ms(),
            members=frozenset({self.user, other}),
        )
        return await self._create(proposed)

    async def _create_group(self, event: ConvCreateGroup) -> ServerEvent:
        members = frozenset(event.members) | {self.user}
        cap = self.services.settings.limits.max_group
        if len(members) > cap:
            return Error(code=ErrorCode.TOO_LARGE, reason=f"a group has at most {cap} members")
        proposed = Conversation(
            conv=f"g:{new_message_id()}",
            kind="group",
            title=event.title,
            created_ts=now_ms(),
            members=members,
            admins=frozenset({self.user}),
        )
        return await self._create(proposed)

    async def _create(self, proposed: Conversation) -> ServerEvent:
        store = self.services.store
        stored = await store.create_conversation(proposed)
        for member in stored.members:
            await store.add_user_conversations(member, [stored.conv])
        info = ConvInfo(
            conv=stored.conv,
            kind=stored.kind,
            title=stored.title,
            members=tuple(sorted(stored.members)),
            admins=tuple(sorted(stored.admins)),
            last_seq=max(stored.last_seq, await store.last_seq(stored.conv)),
        )
        if stored.created_ts == proposed.created_ts:  # new: tell the other devices
            _fanout.to_users(self.node, stored.members, info, skip_device=(self.user, self.device))
        return info

    async def _convs(self) -> ServerEvent:
        store = self.services.store
        summaries = []
        for entry in await store.user_conversations(self.user):
            conv = await store.get_conversation(entry.conv)
            if conv is None or self.user not in conv.members:
                continue
            summaries.append(
                ConvSummary(
                    conv=conv.conv,
                    kind=conv.kind,
                    title=conv.title,
                    members=tuple(sorted(conv.members)),
                    admins=tuple(sorted(conv.admins)),
                    last_seq=conv.last_seq,
                    delivered_seq=entry.delivered.get(self.device, 0),
                    read_seq=entry.read_seq,
                )
            )
        return ConvsReply(ref=0, convs=tuple(summaries))

    async def _history(self, event: History) -> ServerEvent:
        snapshot = await self._snapshot(event.conv)
        if isinstance(snapshot, Error):
            return snapshot
        messages, more = await self.services.store.messages_before(
            event.conv, event.before, event.limit
        )
        return HistoryReply(
            ref=event.ref,
            conv=event.conv,
            messages=tuple(_fanout.msg_event(m) for m in messages),
            more=more,
        )

    # -- sync --

    async def _connect_sync(self) -> None:
        """After welcome: everything above this device's delivered watermark (by the feeder),
        then ``synced``."""
        try:
            entries = await self.services.store.user_conversations(self.user)
        except Unavailable as exc:
            await self._reply(self._sync_unavailable(exc))
            await self._reply(Synced(convs={}))
            return
        convs = {entry.conv: entry.delivered.get(self.device, 0) for entry in entries}
        self.connect_sync = {conv: _ConvSync(after) for conv, after in convs.items()}
        await self._add_sync(_SyncJob(convs, connect=True))

    def _sync_unavailable(self, exc: Unavailable, ref: FrameRef | None = None) -> Error:
        return Error(
            ref=ref,
            code=ErrorCode.UNAVAILABLE,
            reason=f"sync incomplete, storage unavailable: {exc}",
            retry_after=exc.retry_after,
        )

    async def _sync(self, event: Sync) -> ServerEvent | None:
        for conv in event.convs:
            snapshot = await self._snapshot(conv)
            if isinstance(snapshot, Error):
                return snapshot
        await self._add_sync(_SyncJob(dict(event.convs), ref=event.ref))
        return None  # the feeder answers

    async def _add_sync(self, job: _SyncJob) -> None:
        """Hand ``job`` to the feeder (started if it is not running); waits while
        :data:`SYNC_JOBS` are waiting."""
        while self.sync_jobs is not None and len(self.sync_jobs) >= SYNC_JOBS:
            room = self.sync_jobs_room = trio.Event()
            await room.wait()
        if self.sync_jobs is None:
            self.sync_jobs = deque()
        self.sync_jobs.append(job)
        if not self.feeding:
            self.feeding = True
            assert self.nursery is not None
            self.nursery.start_soon(self._feeder)

    async def _feeder(self) -> None:
        """Push the waiting syncs, one after the other, then end."""
        try:
            while self.sync_jobs and not self.closing:
                job = self.sync_jobs[0]
                try:
                    await self._feed(job)
                finally:
                    self.sync_jobs.popleft()
                    if self.sync_jobs_room is not None:
                        self.sync_jobs_room.set()
                        self.sync_jobs_room = None
        finally:
            self.feeding = False
            if not self.sync_jobs:
                self.sync_jobs = None
            self.connect_sync = {}

    async def _feed(self, job: _SyncJob) -> None:
        """Push ``job``'s messages (at most ``sync_limit`` per conversation), then answer
        ``synced`` (or ``error`` when storage failed: ``unavailable``, ``internal``)."""
        limit = self.services.settings.limits.sync_limit
        convs: dict[str, int] = {}
        error: Error | None = None
        try:
            for conv, after in job.convs.items():
                convs[conv] = await self._feed_conv(conv, after, limit, job.connect)
                if job.connect:
                    del self.connect_sync[conv]
                if self.closing:
                    return
        except Unavailable as exc:
            error = self._sync_unavailable(exc, job.ref)
        except StorageError as exc:
            self.log.error("storage_error", error=repr(exc))
            error = Error(ref=job.ref, code=ErrorCode.INTERNAL, reason="storage error")
        if error is not None:
            await self._reply(error)
            if job.ref is not None:
                return
            # The connect-time sync still ends with synced; what it did not push, the device
            # fills with its own sync (the live pushes left to it show as last seqs).
            for conv, pending in self.connect_sync.items():
                if pending.top > pending.after:
                    convs[conv] = pending.top
            self.connect_sync.clear()
        await self._reply(Synced(ref=job.ref, convs=convs))

    async def _feed_conv(self, conv: str, after: int, limit: int, connect: bool) -> int:
        """Push ``conv``'s messages above ``after`` (at most ``limit``) in chunks as the
        outgoing queue has room; the conversation's last seq."""
        store = self.services.store
        top = await store.last_seq(conv)
        pending = self.connect_sync.get(conv) if connect else None
        end = after + limit
        while True:
            if pending is not None:  # live pushes left to this sync
                top = pending.top = max(pending.top, top)
            upto = min(top, end)
            if after >= upto:
                return top
            messages = await store.messages_after(conv, after, min(self.sync_chunk, upto - after))
            if not messages:
                return top
            if not await self._wait_room(len(messages)):
                return top
            metrics = self.services.metrics
            for message in messages:
                self._queue(_fanout.msg_event(message))
                metrics.messages_out.inc()
            after = messages[-1].seq
            if after > self.cursors.get(conv, 0):
                self.cursors[conv] = after

    async def _wait_room(self, frames: int) -> bool:
        """Wait until ``frames`` more fit in the outgoing queue without filling it past the
        mark; False when the connection is closing. A device that reads nothing for
        :data:`SYNC_STALL` seconds is closed with 4008."""
        while not self.closing:
            if self._queued() + frames <= self.sync_mark:
                return True
            with trio.move_on_after(SYNC_STALL) as scope:
                await self._room_changed()
            if scope.cancelled_caught:
                self._close(CloseCode.SLOW_CONSUMER, "not reading its sync", flush=False)
        return False

    # -- ephemeral --

    async def _typing(self, event: Typing) -> None:
        try:
            ref = await find_or_start(self.node, CONVERSATIONS, conv_name(event.conv), event.conv)
        except (NoProcError, CallError):
            return
        ref.cast(SetTyping(self.user, event.state))

    async def _presence_sub(self, event: PresenceSub) -> ServerEvent | None:
        store = self.services.store
        contacts: set[str] = set()
        for entry in await store.user_conversations(self.user):
            conv = await store.get_conversation(entry.conv)
            if conv is not None and self.user in conv.members:
                contacts |= conv.members
        strangers = [u for u in event.users if u not in contacts]
        if strangers:
            return Error(
                code=ErrorCode.FORBIDDEN,
                reason=f"no shared conversation with {', '.join(strangers[:5])}",
            )
        presence = self.node.whereis(PRESENCE)
        if presence is None:
            return Error(code=ErrorCode.UNAVAILABLE, reason="presence unavailable")
        statuses = await presence.call(Subscribe(self.ctx.ref, tuple(event.users)))
        if self.watched is None:
            self.watched = set()
        self.watched.update(event.users)
        await self._statuses(statuses)
        return None

    async def _resubscribe(self) -> None:
        """Subscribe again to what this device watches, with a restarted presence (its
        ``Announce``), and send the statuses it answers: they may have changed meanwhile."""
        presence = self.node.whereis(PRESENCE)
        if presence is None or not self.watched:
            return  # gone again: its next incarnation announces itself too
        try:
            statuses = await presence.call(Subscribe(self.ctx.ref, tuple(self.watched)))
            await self._statuses(statuses)
        except (NoProcError, CallError, StorageError) as exc:
            self.log.info("presence_resubscribe_failed", error=repr(exc))

    async def _statuses(self, statuses: dict[str, tuple[bool, int | None]]) -> None:
        store = self.services.store
        for user, (online, last_seen) in statuses.items():
            if online:
                await self._reply(Presence(user=user, status="online"))
            else:
                if last_seen is None:
                    last_seen = await store.last_seen(user)
                await self._reply(Presence(user=user, status="offline", last_seen=last_seen))
