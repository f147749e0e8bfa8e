"""One actor's runtime record (``Context``): mailbox, signals, links, monitors and its run loop.

Life cycle: an actor has a task only while it has work. ``spawn`` runs a synchronous ``init`` in
the caller and leaves the actor *hibernated* (no task); the first message starts a task, which
parks on an empty mailbox (*waiting*) and, after ``hibernate_after`` idle seconds, ends, keeping
only the state. Exit signals act at once: an actor that is not trapping exits is cancelled wherever
it is awaiting; trapped exits and ``Down`` notices jump ahead of queued messages.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog

from . import _introspect, _receive
from ._actor import NOREPLY, Actor, From
from ._errors import CallError, NoProcError, SpawnError
from ._lowlevel import CancelScope, Waiter
from ._receive import NOTHING as _NOTHING
from ._ref import CALL, CAST, INFO, Ref
from ._states import CLASS as _CLASS
from ._states import EXITED as _EXITED
from ._states import EXITING as _EXITING
from ._states import HIBERNATED as _HIBERNATED
from ._states import INBOX as _INBOX
from ._states import RUNNING as _RUNNING
from ._states import STARTING as _STARTING
from ._states import WAITING as _WAITING
from ._timers import Timer
from ._types import (
    KILL,
    KILLED,
    MAILBOX_OVERFLOW,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Down,
    Exit,
    MonitorRef,
    Overflow,
)

if TYPE_CHECKING:
    from ._node import Node
    from ._trace import Tracer

log = structlog.get_logger("actors")

#: Messages an actor handles before yielding to the scheduler (a reduction budget).
BUDGET: Final = 1000
TERMINATE_TIMEOUT: Final = 5.0  # seconds for terminate() when the node itself is closing

_HIBERNATE: Final = object()
#: Seconds an actor may stay parked past its ``hibernate_after`` before it hibernates: its
#: timer shares a bucket of this width with the others due then (``TimerService.add``).
HIBERNATE_SLACK: Final = 0.05


class _ParentExit:
    """A trapped exit signal from the parent: a gen_server terminates (OTP semantics)."""

    __slots__ = ("reason",)

    def __init__(self, reason: object) -> None:
        self.reason = reason


class Context:
    """An actor's view of itself and the runtime: its ref, links, monitors, timers, spawning.

    Class actors reach it as ``self.ctx``; function actors receive it as their first argument.
    All methods are synchronous and never block, except ``receive`` and the ``start*`` family.
    """

    __slots__ = (
        "__weakref__",
        "_behaviour",
        "_capacity",
        "_current",
        "_deferred",
        "_exit_reason",
        "_exit_waiters",
        "_fn_args",
        "_has_task",
        "_hibernate_after",
        "_hibernate_timer",
        "_hwm",
        "_init_waiter",
        "_kind",
        "_links",
        "_mailbox",
        "_monitored_by",
        "_monitors",
        "_name",
        "_node",
        "_orphans",
        "_overflow",
        "_parent",
        "_parked",
        "_processed",
        "_ref",
        "_room_waiters",
        "_scope",
        "_signals",
        "_started_at",
        "_state",
        "_suspended",
        "_terminate_pending",
        "_tracer",
        "_trap_exit",
    )

    def __init__(
        self,
        node: Node,
        pid: int,
        kind: int,
        behaviour: Any,
        parent: Context | None,
        capacity: int,
        overflow: Overflow,
        hibernate_after: float | None,
    ) -> None:
        self._node = node
        self._ref = Ref(self, pid)
        self._kind = kind
        self._behaviour = behaviour
        self._fn_args: tuple[Any, ...] = ()
        self._parent = parent
        self._name: str | None = None
        self._state = _STARTING
        self._has_task = False
        self._scope: CancelScope | None = None
        self._mailbox: deque[tuple[Any, ...]] | None = None
        self._signals: deque[Any] | None = None
        self._capacity = capacity
        self._overflow = overflow
        self._hwm = 0
        self._processed = 0
        self._parked: Waiter | None = None
        self._room_waiters: deque[Waiter] | None = None
        self._links: set[Context] | None = None
        self._orphans: list[Context] | None = None  # see Node.orphans
        self._monitors: dict[MonitorRef, Context] | None = None  # monitors this actor holds
        self._monitored_by: dict[MonitorRef, Context] | None = None
        self._trap_exit = kind == _INBOX
        self._exit_reason: object = None
        self._exit_waiters: list[Waiter] | None = None
        self._terminate_pending = False
        self._current: From | None = None  # the call being handled
        self._deferred: set[From] | None = None  # calls answered later (NOREPLY)
        self._init_waiter: Waiter | None = None
        self._hibernate_after = hibernate_after
        self._hibernate_timer: Timer | None = None  # kept from park to park while it has a task
        self._suspended = False
        self._tracer: Tracer | None = None
        self._started_at = node._backend.now()

    # -- identity --

    @property
    def ref(self) -> Ref:
        """This actor's ``Ref``."""
        return self._ref

    @property
    def node(self) -> Node:
        """The node the actor lives on."""
        return self._node

    @property
    def name(self) -> str | None:
        """The registered name, if any."""
        return self._name

    @property
    def parent(self) -> Ref | None:
        """The actor that spawned this one (None for actors spawned from outside)."""
        return self._parent._ref if self._parent is not None else None

    @property
    def behaviour(self) -> Any:
        """The actor's behaviour: the ``Actor`` instance (its state) or the function. For
        introspection (OTP's ``sys:get_state``): safe to read, since all actors share one loop;
        never mutate it from outside the actor."""
        return self._behaviour

    @property
    def trap_exit(self) -> bool:
        """When True, exit signals (other than ``kill``) arrive as ``Exit`` messages."""
        return self._trap_exit

    @trap_exit.setter
    def trap_exit(self, value: bool) -> None:
        self._trap_exit = bool(value)

    # -- delivery --

    def _mailbox_full(self) -> bool:
        mailbox = self._mailbox
        return mailbox is not None and len(mailbox) >= self._capacity and self._state < _EXITING

    def _deliver(self, entry: tuple[Any, ...]) -> bool:
        """Queue an entry; apply the overflow policy; wake or start the task. Never blocks."""
        if self._state >= _EXITING:
            self._reject(entry, NOPROC, NOPROC)
            return False
        mailbox = self._mailbox
        if mailbox is None:
            mailbox = self._mailbox = deque()
        elif len(mailbox) >= self._capacity:
            policy = self._overflow
            if policy is Overflow.DROP_OLDEST:
                self._reject(mailbox.popleft(), "mailbox_full", "mailbox_full")
            elif policy is Overflow.EXIT:
                self._reject(entry, "mailbox_full", MAILBOX_OVERFLOW)
                self._die(MAILBOX_OVERFLOW)
                return False
            else:
                self._reject(entry, "mailbox_full", "mailbox_full")
                return False
        mailbox.append(entry)
        if len(mailbox) > self._hwm:
            self._hwm = len(mailbox)
        parked = self._parked
        if parked is not None:
            self._parked = None
            parked.wake()
        elif not self._has_task and not self._suspended:
            self._start_task()
        return True

    def _reject(self, entry: tuple[Any, ...], dead_letter_reason: str, call_reason: object) -> None:
        if entry[0] is CALL:
            frm: From = entry[2]
            if call_reason == NOPROC:
                frm._fail(NoProcError(f"{self._ref!r} is not alive"))
            else:
                frm._fail(CallError(call_reason))
        self._node._dead_letter(self._ref, entry[1], dead_letter_reason)

    def _signal(self, message: Any) -> None:
        """Queue a system message ahead of the mailbox (trapped Exit, Down, parent exit)."""
        signals = self._signals
        if signals is None:
            signals = self._signals = deque()
        signals.append(message)
        parked = self._parked
        if parked is not None:
            self._parked = None
            parked.wake()
        elif not self._has_task and not self._suspended:
            self._start_task()

    async def _deliver_wait(self, entry: tuple[Any, ...]) -> None:
        while self._mailbox_full():
            await self._wait_for_room()
        self._deliver(entry)
        await self._node._backend.checkpoint()

    async def _wait_for_room(self) -> None:
        waiters = self._room_waiters
        if waiters is None:
            waiters = self._room_waiters = deque()
        waiter = self._node._backend.new_waiter()
        waiters.append(waiter)
        await waiter.wait()

    def _wake_room_waiters(self) -> None:
        waiters = self._room_waiters
        while waiters:
            waiters.popleft().wake()

    async def _call(self, request: Any, timeout: float | None) -> Any:
        node = self._node
        waiter = node._backend.new_waiter()
        frm = From(self, waiter)
        waiter.on_abort = frm._abandon
        if self._overflow is Overflow.BACKPRESSURE:
            while self._mailbox_full():
                await self._wait_for_room()
        if timeout is not None:
            frm._timer = node._timers.add(
                node._backend.now() + timeout, functools.partial(frm._on_timeout, timeout)
            )
        self._deliver((CALL, request, frm))
        return await waiter.wait()

    # -- the task --

    def _start_task(self) -> None:
        self._has_task = True
        if self._mailbox is None:
            self._mailbox = deque()
        self._node._task_host.start(self._run, self._task_name())

    def _task_name(self) -> str:
        # The behaviour's (shared) name, not a per-actor string: a million tasks each keep one.
        return self._name or self._behaviour_name()

    async def _run(self) -> None:
        try:
            if (
                self._kind == _CLASS
                and self._state != _STARTING
                and self._exit_reason is None
                and not self._behaviour._needs_cancel_scope
            ):
                # Only sync handlers: the task can be interrupted only where it parks, and an
                # exit signal wakes the park, so it needs no cancel scope (~900 bytes) and no
                # extra frame while it idles.
                self._state = _RUNNING
                try:
                    reason = await self._loop()
                except Exception as exc:
                    reason = self._crashed(exc)
            else:
                reason = await self._run_scoped()
        except BaseException:
            # Cancelled from outside (the node is closing) or a BaseException escaped a handler.
            self._has_task = False
            self._scope = None
            if self._state != _EXITED:
                self._finish(self._exit_reason if self._exit_reason is not None else SHUTDOWN)
            raise
        self._scope = None
        if reason is _HIBERNATE:
            self._has_task = False
            self._state = _HIBERNATED
            self._hibernate_timer = None  # a hibernated actor keeps as little as it can
            if not self._mailbox:
                self._mailbox = None  # an empty deque is ~600 bytes; a hibernated actor keeps none
            return
        if self._terminate_pending and self._kind == _CLASS:
            reason = await self._terminate(reason)
        self._has_task = False
        self._finish(reason)

    async def _run_scoped(self) -> object:
        if self._exit_reason is not None:  # killed between start_soon and now
            return self._exit_reason
        with self._node._backend.cancel_scope() as scope:
            self._scope = scope
            try:
                if self._state == _STARTING:
                    if self._kind == _CLASS:
                        await self._init_async()
                    else:
                        self._state = _RUNNING
                        self._init_done()
                        await self._behaviour(self, *self._fn_args)
                        self._fn_args = ()
                        if self._exit_reason is None:  # else it was told to exit meanwhile
                            self._exit_reason = NORMAL
                        return self._exit_reason
                self._state = _RUNNING
                return await self._loop()
            except Exception as exc:
                return self._crashed(exc)
        return self._exit_reason  # our scope was cancelled by an exit signal

    def _crashed(self, exc: Exception) -> object:
        if self._exit_reason is None:  # a crash, not an exit signal
            self._exit_reason = exc
            self._terminate_pending = self._state != _STARTING
            if self._init_waiter is None:  # else start() raises SpawnError instead
                log.error(
                    "actor_crashed",
                    actor=repr(self._ref),
                    behaviour=self._behaviour_name(),
                    exc_info=exc,
                )
        return self._exit_reason

    async def _init_async(self) -> None:
        actor: Actor = self._behaviour
        await actor.init(*self._fn_args)  # type: ignore[misc]
        self._fn_args = ()
        self._init_done()

    def _init_done(self) -> None:
        waiter = self._init_waiter
        if waiter is not None:
            self._init_waiter = None
            waiter.wake()

    async def _terminate(self, reason: object) -> object:
        self._state = _EXITING
        actor: Actor = self._behaviour
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                if actor._async_terminate:
                    await actor.terminate(reason)  # type: ignore[misc]
                else:
                    actor.terminate(reason)
            except Exception:
                log.exception("terminate_failed", actor=repr(self._ref), reason=repr(reason))
        self._scope = None
        if scope.cancel_called and self._exit_reason == KILLED:
            return KILLED
        return reason

    async def _loop(self) -> object:
        """Handle messages until the actor exits or hibernates. The hot path."""
        actor: Actor = self._behaviour
        handle_call = actor.handle_call
        handle_cast = actor.handle_cast
        handle_info = actor.handle_info
        async_call = actor._async_call
        async_cast = actor._async_cast
        async_info = actor._async_info
        checkpoint = self._node._backend.checkpoint
        budget = BUDGET
        while True:
            if self._signals:
                stop = await self._handle_signals()
                if stop is not _NOTHING:
                    return stop
            if self._exit_reason is not None:
                return self._exit_reason
            mailbox = self._mailbox
            if mailbox and not self._suspended:
                entry = mailbox.popleft()
                self._processed += 1
                if self._tracer is not None:
                    self._tracer.offer(entry)
                kind = entry[0]
                if kind is CAST:
                    if async_cast:
                        await handle_cast(entry[1])  # type: ignore[misc]
                    else:
                        handle_cast(entry[1])
                elif kind is INFO:
                    if async_info:
                        await handle_info(entry[1])  # type: ignore[misc]
                    else:
                        handle_info(entry[1])
                else:
                    frm: From = entry[2]
                    if not frm.done:  # the caller may have timed out while it waited
                        self._current = frm
                        if async_call:
                            result = await handle_call(entry[1], frm)
                        else:
                            result = handle_call(entry[1], frm)
                        self._current = None
                        if result is NOREPLY:
                            if not frm.done:
                                if self._deferred is None:
                                    self._deferred = set()
                                self._deferred.add(frm)
                        else:
                            frm.reply(result)
                budget -= 1
                if not budget:
                    budget = BUDGET
                    if self._room_waiters:
                        self._wake_room_waiters()
                    await checkpoint()
            else:
                if not mailbox:
                    self._mailbox = None  # an empty deque is ~600 bytes: idle actors keep none
                if self._room_waiters:
                    self._wake_room_waiters()
                budget = BUDGET
                waiter = self._begin_park()
                try:
                    woke = await waiter.wait()
                finally:
                    self._end_park()
                if woke is _HIBERNATE and not self._signals and not self._mailbox:
                    return _HIBERNATE

    async def _handle_signals(self) -> object:
        signals = self._signals
        actor: Actor = self._behaviour
        while signals:
            message = signals.popleft()
            if type(message) is _ParentExit:
                self._exit_reason = message.reason
                self._terminate_pending = True
                return message.reason
            self._processed += 1
            if self._tracer is not None:
                self._tracer.offer((INFO, message))
            if actor._async_info:
                await actor.handle_info(message)  # type: ignore[misc]
            else:
                actor.handle_info(message)
            if self._exit_reason is not None:
                return self._exit_reason
        return _NOTHING

    def _begin_park(self) -> Waiter:
        # Parking is inlined in _loop (set up here, awaited there, undone in _end_park): every
        # coroutine frame in a parked actor's await chain costs memory while it idles.
        node = self._node
        waiter = self._parked = node._backend.new_waiter()
        self._state = _WAITING
        if self._hibernate_after is not None:
            # One timer per task, moved at each park: a Timer, its callback and a 1 ms bucket
            # per park were the most common objects in the young generation after the waiting
            # coroutines (docs/benchmarks.md, "What the young generation holds").
            deadline = node._backend.now() + self._hibernate_after
            timer = self._hibernate_timer
            if timer is None:
                self._hibernate_timer = node._timers.add(
                    deadline, self._hibernate_now, slack=HIBERNATE_SLACK
                )
            else:
                node._timers.rearm(timer, deadline)
        return waiter

    def _end_park(self) -> None:
        self._parked = None
        self._state = _RUNNING
        timer = self._hibernate_timer
        if timer is not None:
            timer.cancel()

    def _hibernate_now(self) -> None:
        """The hibernation timer fired: wake the park it was set for (its ``_end_park``
        cancels it, so the park still running is that one)."""
        parked = self._parked
        if parked is not None:
            parked.wake(_HIBERNATE)

    # -- selective receive (function actors and inboxes; in _receive.py) --

    receive = _receive.receive
    _take = _receive.take
    _count = _receive.count

    def close(self) -> None:
        """Exit an inbox (or any actor, from inside itself) with reason ``normal`` right away."""
        if self._state < _EXITING:
            self._die(NORMAL)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- exits --

    def stop(self, reason: object = NORMAL) -> None:
        """Exit with ``reason`` after the current handler returns (``terminate`` runs first)."""
        if self._state >= _EXITING or self._exit_reason is not None:
            return
        if self._kind != _CLASS:
            self._die(reason)  # a function actor has no handler to return from: exit now
            return
        self._exit_reason = reason
        self._terminate_pending = True
        if self._state == _STARTING:
            return  # called from init: spawn/start fail with this reason
        if not self._has_task:
            self._start_task()  # hibernated: terminate runs in a task
            return
        parked = self._parked
        if parked is not None:  # stopped from outside while idle: wake it to exit
            self._parked = None
            parked.wake()

    def _receive_exit(self, sender: Context | None, reason: object, direct: bool) -> None:
        """Handle an exit signal (from ``exit`` when ``direct``, else from a link)."""
        if self._state >= _EXITED:
            return
        if direct and reason == KILL:
            self._die(KILLED)
            return
        if self._state == _EXITING:
            return
        if self._trap_exit:
            if sender is not None and sender is self._parent and self._kind == _CLASS:
                self._signal(_ParentExit(reason))
            else:
                self._signal(Exit(sender._ref if sender is not None else None, reason))  # type: ignore[arg-type]
            return
        if reason == NORMAL and sender is not self:
            return
        self._die(reason)

    def _die(self, reason: object) -> None:
        """Exit now with ``reason``: cancel the task wherever it is, or finish at once."""
        if self._state >= _EXITED:
            return
        if self._state == _EXITING and reason != KILLED:
            return
        self._exit_reason = reason
        self._terminate_pending = False
        if self._has_task and self._kind != _INBOX:
            self._state = _EXITING
            if self._scope is not None:
                self._scope.cancel()
            parked = self._parked
            if parked is not None:
                self._parked = None
                parked.wake()
        else:
            self._finish(reason)

    def _finish(self, reason: object) -> None:
        """Final clean-up: release the name, fail pending calls, tell links and monitors."""
        if self._state == _EXITED:
            return
        self._state = _EXITED
        self._exit_reason = reason
        self._hibernate_timer = None  # its callback refers back here: no cycle left behind
        node = self._node
        ref = self._ref
        node._forget(self)
        silent = self._init_waiter is not None  # init failed: the caller gets SpawnError instead
        if silent:
            waiter, self._init_waiter = self._init_waiter, None
            assert waiter is not None
            error = SpawnError(reason)
            if isinstance(reason, BaseException):
                error.__cause__ = reason
            waiter.throw(error)
        # Calls that will never be answered now.
        if self._current is not None:
            self._current._server_exited(reason)
            self._current = None
        if self._deferred:
            for frm in list(self._deferred):
                frm._server_exited(reason)
        self._deferred = None
        mailbox, self._mailbox = self._mailbox, None
        if mailbox:
            for entry in mailbox:
                if entry[0] is CALL:
                    entry[2]._server_exited(reason)
                else:
                    node._dead_letter(ref, entry[1], "exited")
        self._signals = None
        self._wake_room_waiters()
        parked = self._parked
        if parked is not None:  # an inbox's reader
            self._parked = None
            parked.wake()
        if self._tracer is not None:
            self._tracer.close()
            self._tracer = None
        # Monitors this actor held on others.
        if self._monitors:
            for mref, target in self._monitors.items():
                if target._monitored_by is not None:
                    target._monitored_by.pop(mref, None)
        self._monitors = None
        # Links and monitors on this actor, through the node's queue (no recursion).
        # A failed start() tells its caller by SpawnError, not a signal; others still get one.
        propagated = KILLED if reason == KILL else reason
        starter = self._parent if silent else None
        if self._links:
            # The linked children an abnormal exit tells to exit: its orphans (Node.orphans).
            orphans: list[Context] | None = [] if propagated != NORMAL else None
            for other in self._links:
                if other._links is not None:
                    other._links.discard(self)
                if other is not starter:
                    node._queue_exit(other, self, propagated)
                    if orphans is not None and other._parent is self:
                        orphans.append(other)
            self._orphans = orphans or None
        self._links = None
        if self._monitored_by:
            for mref, watcher in self._monitored_by.items():
                if watcher._monitors is not None:
                    watcher._monitors.pop(mref, None)
                watcher._signal_down(Down(mref, ref, propagated))
        self._monitored_by = None
        self._behaviour_name_cache()
        if self._exit_waiters is not None:
            for exit_waiter in self._exit_waiters:
                exit_waiter.wake(reason)
            self._exit_waiters = None
        node._drain_exits()

    def _behaviour_name_cache(self) -> None:
        # Keep the behaviour's name for post-mortem repr, drop the state itself.
        if self._kind == _CLASS:
            self._behaviour = type(self._behaviour)
        self._fn_args = ()

    def _signal_down(self, down: Down) -> None:
        if self._state < _EXITING:
            self._signal(down)

    # -- links and monitors --

    def link(self, ref: Ref) -> None:
        """Link to ``ref``: if either exits abnormally, the other gets the exit signal.

        Raises:
            NoProcError: ``ref`` is not alive and this actor does not trap exits (when it does,
                an ``Exit(ref, "noproc")`` message arrives instead).
        """
        other = ref._ctx
        if other is self:
            return
        if other._state >= _EXITING:
            if self._trap_exit:
                self._signal(Exit(ref, NOPROC))
                return
            raise NoProcError(f"cannot link: {ref!r} is not alive")
        if self._links is None:
            self._links = set()
        if other._links is None:
            other._links = set()
        self._links.add(other)
        other._links.add(self)

    def unlink(self, ref: Ref) -> None:
        """Remove the link to ``ref``, if any. Idempotent."""
        other = ref._ctx
        if self._links is not None:
            self._links.discard(other)
        if other._links is not None:
            other._links.discard(self)

    def monitor(self, ref: Ref) -> MonitorRef:
        """Watch ``ref``: when it exits, a ``Down(monitor, ref, reason)`` message arrives.

        Monitoring an actor that has exited sends ``Down(..., "noproc")`` at once. One that is
        still exiting (running ``terminate``, or unwinding after an exit signal) is watched as
        usual: its ``Down`` comes once it has exited and released its name.
        """
        mref = self._node._new_monitor_ref()
        target = ref._ctx
        if target._state >= _EXITED:
            self._signal(Down(mref, ref, NOPROC))
            return mref
        if self._monitors is None:
            self._monitors = {}
        if target._monitored_by is None:
            target._monitored_by = {}
        self._monitors[mref] = target
        target._monitored_by[mref] = self
        return mref

    def demonitor(self, mref: MonitorRef, *, flush: bool = False) -> bool:
        """Stop a monitor. With ``flush``, also drop its ``Down`` if already queued.

        Returns True if the monitor was still active.
        """
        target = self._monitors.pop(mref, None) if self._monitors is not None else None
        if target is not None and target._monitored_by is not None:
            target._monitored_by.pop(mref, None)
        if flush and self._signals:
            self._signals = deque(
                m for m in self._signals if not (type(m) is Down and m.monitor == mref)
            )
        return target is not None

    def exit(self, ref: Ref, reason: object) -> None:
        """Send an exit signal to ``ref`` (Erlang's ``exit/2``). ``KILL`` cannot be trapped."""
        self._node._queue_exit(ref._ctx, self, reason, direct=True)
        self._node._drain_exits()

    # -- spawning, names, timers --

    def spawn(self, behaviour: Any, *args: Any, **options: Any) -> Ref:
        """Spawn a child actor (parent: this one). See :meth:`Node.spawn`."""
        return self._node._spawn(behaviour, args, parent=self, **options)

    def spawn_link(self, behaviour: Any, *args: Any, **options: Any) -> Ref:
        """Spawn a child and link to it atomically."""
        return self._node._spawn(behaviour, args, parent=self, link=True, **options)

    def spawn_monitor(self, behaviour: Any, *args: Any, **options: Any) -> tuple[Ref, MonitorRef]:
        """Spawn a child and monitor it atomically."""
        ref = self._node._spawn(behaviour, args, parent=self, **options)
        return ref, self.monitor(ref)

    async def start(self, behaviour: Any, *args: Any, **options: Any) -> Ref:
        """Spawn a child and wait until its ``init`` (sync or async) has finished.

        Raises:
            SpawnError: ``init`` failed; the child never ran and sent no signals.
        """
        return await self._node._start(behaviour, args, parent=self, **options)

    async def start_link(self, behaviour: Any, *args: Any, **options: Any) -> Ref:
        """``start`` and link atomically (OTP's ``gen_server:start_link``)."""
        return await self._node._start(behaviour, args, parent=self, link=True, **options)

    def register(self, name: str) -> None:
        """Register this actor under ``name`` (released when it exits)."""
        self._node.register(name, self._ref)

    def send_after(self, delay: float, ref: Ref, message: Any) -> Any:
        """Send ``message`` to ``ref`` after ``delay`` seconds. See :meth:`Node.send_after`."""
        return self._node.send_after(delay, ref, message)

    # -- introspection (in _introspect.py) --

    _behaviour_name = _introspect.behaviour_name
    status = _introspect.status
    mailbox_statistics = _introspect.mailbox_statistics
    info = _introspect.info

    @property
    def processed(self) -> int:
        """Messages this actor has taken so far (cheap: for sampling rates over many actors)."""
        return self._processed

    @property
    def mailbox_length(self) -> int:
        """Messages queued now (cheap: for scanning many actors)."""
        mailbox = self._mailbox
        return len(mailbox) if mailbox else 0

    @property
    def exit_reason(self) -> object:
        """The reason this actor exited with (None while it is alive)."""
        return self._exit_reason if self._state == _EXITED else None

    # -- suspend/resume (sys:suspend) --

    def suspend(self) -> None:
        """Stop taking messages (they keep queueing; exit signals still act)."""
        self._suspended = True

    def resume(self) -> None:
        """Take messages again after :meth:`suspend`."""
        if not self._suspended:
            return
        self._suspended = False
        if self._state >= _EXITING:
            return
        parked = self._parked
        if parked is not None:
            self._parked = None
            parked.wake()
        elif not self._has_task and (self._mailbox or self._signals):
            self._start_task()
