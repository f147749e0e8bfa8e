"""The connection actor: one per WebSocket, a function actor that owns the socket's tasks.

Its reader task puts client frames in its mailbox (at most ``INFLIGHT`` at a time); a writer
task, started when frames are queued and gone once the queue is empty, drains a bounded outgoing
queue (live pushes that find it full close the connection with 4008; replies and sync wait for
room). Every ``heartbeat`` seconds a timer of the node (not a task of its own) tells the actor to
ping; a short-lived task waits for the pong, and no pong within two heartbeats closes the
connection with 1001. An idle connection thus keeps one task of its own (the reader) besides the
actor's, which matters at tens of thousands of connections. The actor itself decodes frames with
:class:`ClientConnection`, applies the rate limit and routes requests to the conversation,
session and presence actors. On ``shutdown`` from its supervisor it flushes what is queued and
closes with 1012.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Final

import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

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
from ._messages import (
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

log = structlog.get_logger("gateway")

#: Client frames read ahead of the actor (the reader waits beyond that).
INFLIGHT: Final = 4
#: Seconds to flush the outgoing queue and finish the closing handshake.
CLOSE_TIMEOUT: Final = 5.0
#: Seconds to wait for a conversation actor's answer.
CALL_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class _Beat:
    """Time to ping the client (sent by the actor's own timer)."""


_BEAT: Final = _Beat()


async def connection_actor(
    ctx: Context, services: Services, ws: WebSocketConnection, identity: Identity, sub: str | None
) -> None:
    """Run one client connection until its socket closes or it is told to stop."""
    ctx.trap_exit = True
    await _Connection(ctx, services, ws, identity, sub).run()


class _Connection:
    def __init__(
        self,
        ctx: Context,
        services: Services,
        ws: WebSocketConnection,
        identity: Identity,
        sub: str | None,
    ) -> None:
        self.ctx = ctx
        self.node = ctx.node
        self.services = services
        self.ws = ws
        self.user = identity.user
        self.device = identity.device
        self.proto = ClientConnection(sub, services.limits)
        size = services.settings.limits.outgoing_queue
        self.out_send, self.out_recv = trio.open_memory_channel[bytes | str](size)
        self.inflight = trio.Semaphore(INFLIGHT)
        self.writing = False
        self.writer_done = trio.Event()
        self.beat: Timer | None = None
        self.cursors: dict[str, int] = {}
        self.bucket: TokenBucket | None = None
        self.session: Ref | None = None
        self.closing = False
        self.nursery: trio.Nursery | None = None
        self.log = log.bind(user=self.user, device=self.device)

    # -- life --

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self._open()
                nursery.start_soon(self._reader)
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
                self.inflight.release()
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
            elif kind is Down:
                if message.ref == self.session:
                    self._close(CloseCode.INTERNAL_ERROR, "session lost", flush=True)
            else:
                self.log.warning("unexpected_message", message=repr(message)[:200])

    # -- socket tasks --

    async def _reader(self) -> None:
        code: int | None = None
        try:
            while True:
                await self.inflight.acquire()
                data = await self.ws.get_message()
                self.ctx.ref.send(Inbound(data))
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else None
        self.ctx.ref.send(ReaderDone(code))

    def _start_writer(self) -> None:
        """Start the writer unless it runs (it stops when the queue is empty)."""
        if not self.writing and not self.writer_done.is_set():
            self.writing = True
            assert self.nursery is not None
            self.nursery.start_soon(self._writer)

    async def _writer(self) -> None:
        """Send what is queued until the queue is empty (then end: an idle connection keeps no
        writer task), or closed and empty (then ``writer_done``), or the socket is gone."""
        finished = True
        try:
            while True:
                try:
                    data = self.out_recv.receive_nowait()
                except trio.WouldBlock:
                    finished = False
                    return
                await self.ws.send_message(data)
        except (ConnectionClosed, trio.EndOfChannel, trio.ClosedResourceError):
            pass
        finally:
            self.writing = False
            if finished:
                self.out_recv.close()  # whoever waits for room learns the socket is gone
                self.writer_done.set()

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
        self.proto.begin_close(code)
        assert self.nursery is not None
        self.nursery.start_soon(self._closer, code, reason, flush)

    async def _closer(self, code: int, reason: str, flush: bool) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT):
            if flush:
                self.out_send.close()
                self._start_writer()
                await self.writer_done.wait()
            await self.ws.aclose(code, reason)
        self.log.info("connection_closed", code=code, reason=reason)
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    # -- sending --

    def _queue(self, event: ServerEvent) -> bool:
        try:
            self.out_send.send_nowait(self.proto.send(event))
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return True  # closing or closed: nothing more goes out
        self._start_writer()
        return True

    def _push(self, event: ServerEvent) -> bool:
        """Queue a live push; False when the outgoing queue is full (a slow consumer)."""
        if isinstance(event, Msg):
            if event.seq <= self.cursors.get(event.conv, 0):
                return True  # already sent by a sync
            self.cursors[event.conv] = event.seq
            metrics = self.services.metrics
            metrics.messages_out.inc()
            metrics.delivery_latency.observe(max(0, now_ms() - event.ts) / 1000)
        return self._queue(event)

    async def _reply(self, event: ServerEvent) -> None:
        """A reply or a synced message: waits for room in the outgoing queue."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self.out_send.send(self.proto.send(event))
            self._start_writer()

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
        """After welcome: everything above this device's delivered watermark, then ``synced``."""
        store = self.services.store
        limit = self.services.settings.limits.sync_limit
        convs: dict[str, int] = {}
        try:
            entries = await store.user_conversations(self.user)
            for entry in entries:
                after = entry.delivered.get(self.device, 0)
                convs[entry.conv] = await self._push_after(entry.conv, after, limit)
        except Unavailable as exc:
            await self._reply(
                Error(
                    code=ErrorCode.UNAVAILABLE,
                    reason=f"sync incomplete, storage unavailable: {exc}",
                    retry_after=exc.retry_after,
                )
            )
        await self._reply(Synced(convs=convs))

    async def _push_after(self, conv: str, after: int, limit: int) -> int:
        store = self.services.store
        last = await store.last_seq(conv)
        if last > after:
            for message in await store.messages_after(conv, after, limit):
                await self._reply(_fanout.msg_event(message))
                self.services.metrics.messages_out.inc()
                if message.seq > self.cursors.get(conv, 0):
                    self.cursors[conv] = message.seq
        return last

    async def _sync(self, event: Sync) -> ServerEvent:
        for conv in event.convs:
            snapshot = await self._snapshot(conv)
            if isinstance(snapshot, Error):
                return snapshot
        limit = self.services.settings.limits.sync_limit
        convs = {}
        for conv, after in event.convs.items():
            convs[conv] = await self._push_after(conv, after, limit)
        return Synced(ref=event.ref, convs=convs)

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
        for user, (online, last_seen) in statuses.items():
            if online:
                await self._reply(Presence(user=user, status="online"))
            else:
                if last_seen is None:
                    last_seen = await store.last_seen(user)
                await self._reply(Presence(user=user, status="offline", last_seen=last_seen))
        return None
