"""The conversation actor: one per active conversation, the single writer of its messages.

It checks membership, deduplicates by (sender, cmid), assigns the next ``seq`` (resumed from
storage after a restart or passivation), commits each message before acking it, and fans it out
to the members' sessions. One message is committed at a time (a batch of one), so a duplicate or
a failed commit never consumes a seq: seqs stay gapless. Idle for ``limits.conversation_idle``
seconds, it stops ``normal`` and is started again on demand (a transient child of
``conversations``); a ``typing start`` ends after ``limits.typing_timeout`` seconds.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, Final

import structlog

from actors import Actor, From, Timer
from storage import Conversation, Message, SeqConflict, StorageError, Unavailable

from . import _fanout
from ._auth import new_message_id
from ._frames import Ack, ConvAdd, ConvInfo, ConvLeft, Error, ErrorCode, ReceiptNotice, TypingNotice
from ._messages import ChangeMembers, MarkReceipt, SendMessage, SetTyping, Snapshot
from ._services import RETRY_AFTER_S, Services, conv_name, now_ms

log = structlog.get_logger("gateway")

#: Recent (sender, cmid) → message kept in memory to answer resends without a write.
DEDUPE_CACHE: Final = 1024


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
    _recent: OrderedDict[tuple[str, str], Message]
    _typing: dict[str, tuple[int, Timer]]
    _active_at: float
    _idle_after: float
    _timer_ids: int

    def init(self, services: Services, conv: str) -> None:
        self.ctx.register(conv_name(conv))
        self._services = services
        self._conv = conv
        self._meta = None
        self._last_seq = 0
        self._last_ts = 0
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
        return self._meta

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
                return await self._send(request)
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

    async def _send(self, request: SendMessage) -> Ack | Error:
        send = request.send
        key = (request.user, send.cmid)
        stored = self._recent.get(key)
        if stored is None:
            store = self._services.store
            for _ in range(3):
                seq = self._last_seq + 1
                ts = max(now_ms(), self._last_ts)
                message = Message(
                    conv=self._conv,
                    seq=seq,
                    id=new_message_id(),
                    sender=request.user,
                    cmid=send.cmid,
                    kind=send.kind,
                    body=send.body,
                    ts=ts,
                )
                try:
                    (result,) = await store.append_messages([message])
                except SeqConflict:
                    # Someone else's message holds that seq (a commit whose outcome this actor
                    # never learned): resume from what storage has.
                    self._last_seq = await store.last_seq(self._conv)
                    continue
                stored = result.message
                if not result.duplicate:
                    self._services.metrics.messages_in.inc()
                    self._last_seq = seq
                    self._last_ts = ts
                    self._remember(stored)
                    assert self._meta is not None
                    _fanout.to_users(
                        self.ctx.node,
                        self._meta.members,
                        _fanout.msg_event(stored),
                        skip_device=(request.user, request.device),
                    )
                else:
                    self._remember(stored)
                break
            else:
                return _error(ErrorCode.UNAVAILABLE, "seq conflict, retry", RETRY_AFTER_S)
        return Ack(conv=self._conv, cmid=send.cmid, id=stored.id, seq=stored.seq, ts=stored.ts)

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
                # the conversation in sync until the add is retried, never a leak.
                await store.add_members(self._conv, new, "member", joined_ts=now_ms())
                for user in new:
                    await store.add_user_conversations(user, [self._conv])
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
            for user in gone:
                await store.remove_user_conversations(user, [self._conv])
            await store.remove_members(self._conv, gone)
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
        if type(message) is _TypingExpired:
            entry = self._typing.get(message.user)
            if entry is not None and entry[0] == message.timer_id:
                del self._typing[message.user]
                self._relay_typing(message.user, "stop")
        elif type(message) is _Idle:
            now = self.ctx.node.now()
            idle = now - self._active_at
            if idle >= self._idle_after and not self._typing and not self.ctx.mailbox_length:
                self.stop()  # normal: a transient child is not restarted; started on demand
            else:
                self.ctx.send_after(max(1.0, self._idle_after - idle), self.ref, _Idle(now))
        else:
            super().handle_info(message)

    def format_status(self) -> dict[str, object]:
        return {
            "conv": self._conv,
            "loaded": self._meta is not None,
            "last_seq": self._last_seq,
            "members": len(self._meta.members) if self._meta else None,
            "typing": len(self._typing),
        }
