"""The conversation actor: one per active conversation, the single writer of its messages.

It checks membership, deduplicates by (sender, cmid), assigns the next ``seq`` (resumed from
storage after a restart or passivation), commits each message before acking it, and fans it out
to the members' sessions in seq order. Commits are grouped: while one is in flight (run by a
linked helper actor, :mod:`gateway._commit`, so the actor keeps taking requests; each send is
answered later through its ``From``), the sends that arrive queue up (at most ``MAX_QUEUE``),
and the next commit takes them together (at most ``MAX_BATCH`` distinct (sender, cmid) keys;
the same key twice is one message, and both senders get its ack). Each sender is acked only
after its own commit. A batch of more than one is looked up by key before it gets seqs, so a
resend in it takes none and seqs stay gapless; a backend that cannot look up commits one at a
time. A failed batch consumes no seq; after one whose outcome is unknown (storage unavailable)
the next commit first reloads the last seq from storage, and a ``SeqConflict`` (a commit whose
outcome this actor never learned) reloads it and commits the batch again. A resend found
already stored, but not by this incarnation, is fanned out again: an earlier incarnation may
have died between the commit and the fan-out (delivery is at least once).

Idle for ``limits.conversation_idle`` seconds, it stops ``normal`` and is started again on
demand (a transient child of ``conversations``); a ``typing start`` ends after
``limits.typing_timeout`` seconds.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from typing import Any, Final

import structlog

from actors import NOREPLY, SHUTDOWN, Actor, From, NameTakenError, Ref, Timer
from storage import Conversation, Message, SeqConflict, StorageError, Unavailable
from supervisors import Ignore

from . import _fanout
from ._commit import Commit, Committed, Draft, Reload, Reloaded, committer
from ._frames import Ack, ConvAdd, ConvInfo, ConvLeft, Error, ErrorCode, ReceiptNotice, TypingNotice
from ._messages import ChangeMembers, MarkReceipt, SendMessage, SetTyping, Snapshot
from ._services import RETRY_AFTER_S, Services, conv_name, now_ms

log = structlog.get_logger("gateway")

#: Recent (sender, cmid) → message kept in memory to answer resends without a write.
DEDUPE_CACHE: Final = 1024
#: Most messages in one commit of a conversation.
MAX_BATCH: Final = 64
#: Most sends waiting for a commit; beyond that a send is answered ``unavailable``.
MAX_QUEUE: Final = 1024
#: Commits of one batch that meet a ``SeqConflict`` before its senders get ``unavailable``.
CONFLICT_RETRIES: Final = 3


class _Waiter:
    """A send waiting for its commit."""

    __slots__ = ("from_", "request")

    def __init__(self, request: SendMessage, from_: From) -> None:
        self.request = request
        self.from_ = from_


@dataclasses.dataclass(frozen=True, slots=True)
class _Idle:
    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class _TypingExpired:
    user: str
    timer_id: int


def _error(code: ErrorCode, reason: str, retry_after: float | None = None) -> Error:
    return Error(code=code, reason=reason, retry_after=retry_after)


def _unavailable(exc: Unavailable) -> Error:
    return _error(ErrorCode.UNAVAILABLE, f"storage unavailable: {exc}", exc.retry_after)


class ConversationActor(Actor):
    """State: the conversation's metadata (loaded on the first request), its last seq and ts,
    a small dedupe cache, and who is typing."""

    _services: Services
    _conv: str
    _meta: Conversation | None
    _last_seq: int
    _last_ts: int
    _stale: bool
    _unsettled: set[str]  # users whose membership change failed midway: see _settle
    _queue: deque[_Waiter]
    _inflight: list[list[_Waiter]] | None
    _batch_limit: int
    _busy: bool
    _conflicts: int
    _committer: Ref | None
    _recent: OrderedDict[tuple[str, str], Message]
    _typing: dict[str, tuple[int, Timer]]
    _active_at: float
    _idle_after: float
    _timer_ids: int

    def init(self, services: Services, conv: str) -> None:
        try:
            self.ctx.register(conv_name(conv))
        except NameTakenError:
            # A newer incarnation, started on demand while this restart waited, already
            # serves the conversation: nothing to restart (OTP's ignore).
            raise Ignore(conv) from None
        self._services = services
        self._conv = conv
        self._meta = None
        self._unsettled = set()
        self._last_seq = 0
        self._last_ts = 0
        self._stale = False
        self._queue = deque()
        self._inflight = None
        self._batch_limit = MAX_BATCH
        self._busy = False
        self._conflicts = 0
        self._committer = None
        self._recent = OrderedDict()
        self._typing = {}
        self._timer_ids = 0
        self._active_at = self.ctx.node.now()
        self._idle_after = services.settings.limits.conversation_idle
        self.ctx.send_after(self._idle_after, self.ref, _Idle(self._active_at))

    # -- loading --

    async def _load(self) -> Conversation | None:
        if self._meta is None:
            store = self._services.store
            meta = await store.get_conversation(self._conv)
            if meta is None:
                return None
            self._meta = meta
            self._last_seq = max(meta.last_seq, await store.last_seq(self._conv))
        if self._unsettled:
            await self._settle()
        return self._meta

    async def _settle(self) -> None:
        """Finish the membership changes that failed midway (their outcome unknown to this
        actor): storage's member list is the truth, and each unsettled user's conversation
        list is made to agree with it (both writes are idempotent). Raises StorageError, in
        which case the next request tries again."""
        store = self._services.store
        meta = await store.get_conversation(self._conv)
        if meta is None:
            return
        for user in sorted(self._unsettled):
            if user in meta.members:
                await store.add_user_conversations(user, [self._conv])
            else:
                await store.remove_user_conversations(user, [self._conv])
        self._meta = meta
        self._unsettled.clear()

    # -- requests --

    async def handle_call(self, request: Any, from_: From) -> Any:
        self._active_at = self.ctx.node.now()
        try:
            meta = await self._load()
        except Unavailable as exc:
            return _unavailable(exc)
        if meta is None:
            self.stop()  # nothing to keep an actor for
            return _error(ErrorCode.NOT_FOUND, f"no conversation {self._conv}")
        if request.user not in meta.members:
            return _error(ErrorCode.FORBIDDEN, f"not a member of {self._conv}")
        try:
            if type(request) is SendMessage:
                return self._send(request, from_)
            if type(request) is Snapshot:
                return self._info(meta)
            if type(request) is MarkReceipt:
                return await self._receipt(request)
            if type(request) is ChangeMembers:
                return await self._change(request, meta)
        except Unavailable as exc:
            return _unavailable(exc)
        except StorageError as exc:
            log.error("storage_error", conv=self._conv, error=repr(exc))
            return _error(ErrorCode.INTERNAL, "storage error")
        raise TypeError(f"unexpected request {request!r}")

    def _info(self, meta: Conversation) -> ConvInfo:
        return ConvInfo(
            conv=meta.conv,
            kind=meta.kind,
            title=meta.title,
            members=tuple(sorted(meta.members)),
            admins=tuple(sorted(meta.admins)),
            last_seq=self._last_seq,
        )

    def _send(self, request: SendMessage, from_: From) -> Any:
        send = request.send
        stored = self._recent.get((request.user, send.cmid))
        if stored is not None:
            return Ack(conv=self._conv, cmid=send.cmid, id=stored.id, seq=stored.seq, ts=stored.ts)
        if len(self._queue) >= MAX_QUEUE:
            return _error(ErrorCode.UNAVAILABLE, "conversation busy, retry", RETRY_AFTER_S)
        self._queue.append(_Waiter(request, from_))
        if not self._busy:
            self._dispatch()
        return NOREPLY

    def _dispatch(self) -> None:
        """Start the next commit: of the queued sends (at most ``MAX_BATCH`` distinct ones, the
        same (sender, cmid) twice taking one message), or first a reload of the last seq when
        the last commit's outcome is unknown."""
        helper = self._committer
        if helper is None or not helper.alive:
            helper = self._committer = self.ctx.spawn_link(
                committer, self._services.store, self._conv, self.ref
            )
        self._busy = True
        if self._stale:
            helper.send(Reload())
            return
        batch: list[list[_Waiter]] = []
        drafts: list[Draft] = []
        by_key: dict[tuple[str, str], list[_Waiter]] = {}
        queue = self._queue
        while queue:
            waiter = queue[0]
            request = waiter.request
            send = request.send
            key = (request.user, send.cmid)
            waiters = by_key.get(key)
            if waiters is not None:
                waiters.append(queue.popleft())
                continue
            stored = self._recent.get(key)
            if stored is not None:  # committed since it was queued
                queue.popleft()
                waiter.from_.reply(self._ack(stored, send.cmid))
                continue
            if len(batch) == self._batch_limit:
                break
            queue.popleft()
            waiters = by_key[key] = [waiter]
            batch.append(waiters)
            drafts.append(Draft(request.user, send.cmid, send.kind, send.body))
        if not batch:
            self._busy = False
            return
        self._inflight = batch
        helper.send(Commit(tuple(drafts), self._last_seq, max(now_ms(), self._last_ts)))

    def _ack(self, message: Message, cmid: str) -> Ack:
        return Ack(conv=self._conv, cmid=cmid, id=message.id, seq=message.seq, ts=message.ts)

    def _on_committed(self, done: Committed) -> None:
        batch = self._inflight
        assert batch is not None
        self._inflight = None
        self._busy = False
        error = done.error
        if error is None:
            self._conflicts = 0
            if done.unsupported:  # the backend cannot look resends up: one at a time
                self._batch_limit = 1
                for waiters in reversed(batch[len(done.stored) :]):
                    self._queue.extendleft(reversed(waiters))
            self._committed(batch, done.stored)
        elif isinstance(error, SeqConflict) and self._conflicts < CONFLICT_RETRIES - 1:
            # Another message holds one of the seqs (a commit whose outcome this actor never
            # learned, maybe still in flight): reload the last seq and commit the batch again.
            self._conflicts += 1
            self._stale = True
            for waiters in reversed(batch):
                self._queue.extendleft(reversed(waiters))
        else:
            self._conflicts = 0
            if isinstance(error, SeqConflict):
                reply = _error(ErrorCode.UNAVAILABLE, "seq conflict, retry", RETRY_AFTER_S)
            elif isinstance(error, Unavailable):
                self._stale = True  # committed or not: storage knows
                reply = _unavailable(error)
            else:
                log.error("storage_error", conv=self._conv, error=repr(error))
                reply = _error(ErrorCode.INTERNAL, "storage error")
            for waiters in batch:
                for waiter in waiters:
                    waiter.from_.reply(reply)
        if self._queue:
            self._dispatch()

    def _committed(
        self, batch: list[list[_Waiter]], stored: tuple[tuple[Message, bool], ...]
    ) -> None:
        """Fan out and ack the committed part of a batch, in seq order."""
        assert self._meta is not None
        members = self._meta.members
        node = self.ctx.node
        metrics = self._services.metrics
        done = sorted(zip(stored, batch, strict=False), key=lambda pair: pair[0][0].seq)
        for (message, before), waiters in done:
            if not before:
                metrics.messages_in.inc()
            # A message stored before (by an earlier incarnation of this actor, or by an append
            # whose answer was lost) may never have been fanned out by whoever committed it:
            # it is fanned out again (devices deduplicate by id).
            self._last_seq = max(self._last_seq, message.seq)
            self._last_ts = max(self._last_ts, message.ts)
            self._remember(message)
            first = waiters[0].request
            _fanout.to_users(
                node, members, _fanout.msg_event(message), skip_device=(first.user, first.device)
            )
            for waiter in waiters:
                waiter.from_.reply(self._ack(message, waiter.request.send.cmid))

    def _on_reloaded(self, done: Reloaded) -> None:
        self._busy = False
        error = done.error
        if error is not None:
            reply = (
                _unavailable(error)
                if isinstance(error, Unavailable)
                else _error(ErrorCode.INTERNAL, "storage error")
            )
            queue, self._queue = self._queue, deque()
            for waiter in queue:
                waiter.from_.reply(reply)
            return
        self._last_seq = max(self._last_seq, done.last_seq)
        self._stale = False
        if self._queue:
            self._dispatch()

    def _remember(self, message: Message) -> None:
        recent = self._recent
        recent[(message.sender, message.cmid)] = message
        if len(recent) > DEDUPE_CACHE:
            recent.popitem(last=False)

    async def _receipt(self, request: MarkReceipt) -> None:
        seq = min(request.seq, self._last_seq)
        if seq <= 0:
            return None
        store = self._services.store
        moved: int | None
        if request.status == "read":
            moved = await store.advance_read(request.user, self._conv, seq)
        else:
            moved = await store.advance_delivered(request.user, request.device, self._conv, seq)
        if moved == seq:
            assert self._meta is not None
            _fanout.to_users(
                self.ctx.node,
                self._meta.members,
                ReceiptNotice(conv=self._conv, user=request.user, seq=seq, status=request.status),
                skip_user=request.user,
            )
        return None

    async def _change(self, request: ChangeMembers, meta: Conversation) -> ConvInfo | Error:
        change = request.change
        users = change.users
        if meta.kind != "group":
            return _error(ErrorCode.BAD_REQUEST, "members of a direct conversation are fixed")
        store = self._services.store
        is_admin = request.user in meta.admins
        node = self.ctx.node
        if isinstance(change, ConvAdd):
            if not is_admin:
                return _error(ErrorCode.FORBIDDEN, "only admins may add members")
            new = [u for u in users if u not in meta.members]
            cap = self._services.settings.limits.max_group
            if len(meta.members) + len(new) > cap:
                return _error(ErrorCode.TOO_LARGE, f"a group has at most {cap} members")
            if new:
                # Members first, then their lists: a crash between leaves a member who misses
                # the conversation in sync until the change is settled, never a leak.
                self._unsettled.update(new)
                await store.add_members(self._conv, new, "member", joined_ts=now_ms())
                for user in new:
                    await store.add_user_conversations(user, [self._conv])
                self._unsettled.difference_update(new)
                meta = dataclasses.replace(meta, members=meta.members | set(new))
            self._meta = meta
            info = self._info(meta)
            _fanout.to_users(node, meta.members, info)
            return info
        if not is_admin and tuple(users) != (request.user,):
            return _error(ErrorCode.FORBIDDEN, "only admins may remove others")
        gone = [u for u in users if u in meta.members]
        if gone:
            # Lists first, then members: a crash between never leaves a non-member syncing it.
            self._unsettled.update(gone)
            for user in gone:
                await store.remove_user_conversations(user, [self._conv])
            await store.remove_members(self._conv, gone)
            self._unsettled.difference_update(gone)
            members = meta.members - set(gone)
            admins = meta.admins - set(gone)
            if members and not admins:
                heir = min(members)
                await store.set_role(self._conv, [heir], "admin")
                admins = frozenset({heir})
            meta = dataclasses.replace(meta, members=members, admins=admins)
            self._meta = meta
            _fanout.to_users(node, gone, ConvLeft(conv=self._conv))
            for user in gone:
                self._stop_typing(user, relay=False)
        info = self._info(meta)
        _fanout.to_users(node, meta.members, info)
        return info

    # -- typing --

    async def handle_cast(self, message: Any) -> None:
        if type(message) is SetTyping:
            self._active_at = self.ctx.node.now()
            try:
                meta = await self._load()
            except Unavailable:
                return  # typing is best effort
            if meta is None or message.user not in meta.members:
                return
            if message.state == "start":
                self._stop_typing(message.user, relay=False)
                self._timer_ids += 1
                timer = self.ctx.send_after(
                    self._services.settings.limits.typing_timeout,
                    self.ref,
                    _TypingExpired(message.user, self._timer_ids),
                )
                self._typing[message.user] = (self._timer_ids, timer)
                self._relay_typing(message.user, "start")
            else:
                self._stop_typing(message.user, relay=True)
            return
        raise TypeError(f"unexpected cast {message!r}")

    def _stop_typing(self, user: str, *, relay: bool) -> None:
        entry = self._typing.pop(user, None)
        if entry is not None:
            entry[1].cancel()
        if relay:
            self._relay_typing(user, "stop")

    def _relay_typing(self, user: str, state: str) -> None:
        if self._meta is not None:
            _fanout.to_users(
                self.ctx.node,
                self._meta.members,
                TypingNotice(conv=self._conv, user=user, state=state),
                skip_user=user,
            )

    # -- timers --

    def handle_info(self, message: Any) -> None:
        if type(message) is Committed:
            self._on_committed(message)
        elif type(message) is Reloaded:
            self._on_reloaded(message)
        elif type(message) is _TypingExpired:
            entry = self._typing.get(message.user)
            if entry is not None and entry[0] == message.timer_id:
                del self._typing[message.user]
                self._relay_typing(message.user, "stop")
        elif type(message) is _Idle:
            now = self.ctx.node.now()
            idle = now - self._active_at
            if (
                idle >= self._idle_after
                and not self._typing
                and not self._busy
                and not self._queue
                and not self.ctx.mailbox_length
            ):
                self.stop()  # normal: a transient child is not restarted; started on demand
            else:
                self.ctx.send_after(max(1.0, self._idle_after - idle), self.ref, _Idle(now))
        else:
            super().handle_info(message)

    def terminate(self, reason: object) -> None:
        if self._committer is not None:
            self.ctx.exit(self._committer, SHUTDOWN)

    def format_status(self) -> dict[str, object]:
        return {
            "conv": self._conv,
            "loaded": self._meta is not None,
            "last_seq": self._last_seq,
            "members": len(self._meta.members) if self._meta else None,
            "typing": len(self._typing),
        }
