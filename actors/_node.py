"""The node: the actor table, names, timers, dead letters and introspection of one event loop."""

from __future__ import annotations

import functools
import inspect
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final

from ._actor import Actor
from ._errors import NameTakenError, NodeClosedError, NoProcError, SpawnError
from ._lowlevel import Backend, TaskHost, current_backend
from ._process import Context
from ._ref import INFO, Ref
from ._states import CLASS as _CLASS
from ._states import EXITING as _EXITING
from ._states import FUNCTION as _FUNCTION
from ._states import HIBERNATED as _HIBERNATED
from ._states import INBOX as _INBOX
from ._states import STARTING as _STARTING
from ._timers import Timer, TimerService
from ._trace import Tracer
from ._types import (
    SHUTDOWN,
    DeadLetter,
    MonitorRef,
    NodeStatistics,
    Overflow,
)

DEFAULT_MAILBOX_SIZE: Final = 10_000  # messages
RECENT_DEAD_LETTERS: Final = 100


class Node:
    """One event loop's actors: spawn them, name them, time them, look inside them.

    Create with :func:`open_node`. Nothing is process-global: two nodes in one process (or one
    test after another) share nothing.
    """

    def __init__(
        self,
        backend: Backend,
        task_host: TaskHost,
        *,
        name: str,
        mailbox_size: int,
        overflow: Overflow,
    ) -> None:
        self.name = name
        self._backend = backend
        self._task_host = task_host
        self._timers = TimerService(backend)
        self._procs: dict[int, Context] = {}
        self._names: dict[str, Context] = {}
        self._next_pid = 1
        self._next_monitor = 1
        self._mailbox_size = mailbox_size
        self._overflow = overflow
        self._closing = False
        self._spawned = 0
        self._exited = 0
        self._dead_letter_counts: dict[str, int] = {}
        self._recent_dead_letters: deque[DeadLetter] = deque(maxlen=RECENT_DEAD_LETTERS)
        self._exit_queue: deque[tuple[Context, Context | None, object, bool]] = deque()
        self._draining = False

    # -- spawning --

    def spawn(self, behaviour: Any, *args: Any, **options: Any) -> Ref:
        """Spawn an actor and return its ref without waiting (Erlang's ``spawn``).

        ``behaviour`` is an :class:`Actor` subclass (instantiated with no arguments, then
        ``init(*args)``) or an ``async def fn(ctx, *args)`` function actor. A synchronous
        ``init`` runs here, before this returns; an ``async`` one runs first in the actor's task
        (use :meth:`start` to wait for it).

        Options: ``name`` (register it), ``link``/``parent`` (from a Context), ``mailbox_size``
        (messages, default 10,000), ``overflow`` (:class:`Overflow`), ``hibernate_after``
        (seconds idle, up to 50 ms more, before the actor gives up its task; class actors only).

        Raises:
            SpawnError: a synchronous ``init`` raised (chained); the actor never existed.
            NameTakenError: ``name`` is registered already.
            NodeClosedError: the node is closing.
        """
        return self._spawn(behaviour, args, parent=None, **options)

    async def start(self, behaviour: Any, *args: Any, **options: Any) -> Ref:
        """Spawn an actor and wait until its ``init`` (sync or async) has finished.

        Raises:
            SpawnError: ``init`` failed; the actor never ran and sent no link or monitor signal.
        """
        return await self._start(behaviour, args, parent=None, **options)

    def inbox(self, *, mailbox_size: int | None = None) -> Context:
        """A mailbox for code that is not an actor (a test, a shell): link, monitor and
        ``receive`` from the calling task. It traps exits. Use it as a ``with`` block or
        ``close()`` it."""
        return self._new_context(
            _INBOX, None, None, mailbox_size=mailbox_size, overflow=None, hibernate_after=None
        )

    def _new_context(
        self,
        kind: int,
        behaviour: Any,
        parent: Context | None,
        *,
        mailbox_size: int | None,
        overflow: Overflow | None,
        hibernate_after: float | None,
    ) -> Context:
        if self._closing:
            raise NodeClosedError(f"node {self.name!r} is closing")
        if mailbox_size is not None and mailbox_size < 1:
            raise ValueError(f"mailbox_size must be >= 1, got {mailbox_size}")
        if hibernate_after is not None and hibernate_after < 0:
            raise ValueError(f"hibernate_after must be >= 0 seconds, got {hibernate_after}")
        pid = self._next_pid
        self._next_pid = pid + 1
        ctx = Context(
            self,
            pid,
            kind,
            behaviour,
            parent,
            mailbox_size or self._mailbox_size,
            overflow or self._overflow,
            hibernate_after,
        )
        if kind == _INBOX:
            ctx._has_task = True  # read by an outside task; never start one
            ctx._state = 2  # waiting
        self._procs[pid] = ctx
        self._spawned += 1
        return ctx

    def _spawn(
        self,
        behaviour: Any,
        args: tuple[Any, ...],
        *,
        parent: Context | None,
        link: bool = False,
        name: str | None = None,
        mailbox_size: int | None = None,
        overflow: Overflow | None = None,
        hibernate_after: float | None = None,
        _wait: bool = False,
    ) -> Ref:
        if name is not None:
            self._check_name(name)
        if isinstance(behaviour, type) and issubclass(behaviour, Actor):
            actor = behaviour()
            ctx = self._new_context(
                _CLASS,
                actor,
                parent,
                mailbox_size=mailbox_size if mailbox_size is not None else behaviour.mailbox_size,
                overflow=overflow if overflow is not None else behaviour.overflow,
                hibernate_after=(
                    hibernate_after if hibernate_after is not None else behaviour.hibernate_after
                ),
            )
            actor.ctx = ctx
        elif inspect.iscoroutinefunction(behaviour):
            ctx = self._new_context(
                _FUNCTION,
                behaviour,
                parent,
                mailbox_size=mailbox_size,
                overflow=overflow,
                hibernate_after=None,
            )
        else:
            raise TypeError(
                f"cannot spawn {behaviour!r}: expected an Actor subclass or an async function"
            )
        ctx._fn_args = args
        if name is not None:
            self._names[name] = ctx
            ctx._name = name
        if link and parent is not None:
            parent.link(ctx._ref)
        if ctx._kind == _CLASS and not behaviour._async_init:
            failure: object = None
            try:
                ctx._behaviour.init(*args)
            except Exception as exc:
                failure = exc
            else:
                failure = ctx._exit_reason  # init called stop(reason): OTP's {stop, Reason}
            if failure is not None:
                # The caller gets SpawnError, not a signal: unlink it first. Actors that init
                # itself linked (its children) get the exit signal as usual.
                ctx._terminate_pending = False
                if parent is not None:
                    parent.unlink(ctx._ref)
                ctx._finish(failure)
                cause = failure if isinstance(failure, BaseException) else None
                raise SpawnError(failure) from cause
            ctx._fn_args = ()
            ctx._state = _HIBERNATED  # no task until the first message arrives
            # A message init sent to itself has already started the task.
            if (ctx._mailbox or ctx._signals) and not ctx._has_task:
                ctx._start_task()
        else:
            ctx._start_task()
        return ctx._ref

    async def _start(
        self, behaviour: Any, args: tuple[Any, ...], *, parent: Context | None, **options: Any
    ) -> Ref:
        is_async_class = (
            isinstance(behaviour, type) and issubclass(behaviour, Actor) and behaviour._async_init
        )
        if not is_async_class:
            ref = self._spawn(behaviour, args, parent=parent, **options)
            await self._backend.checkpoint()
            return ref
        waiter = self._backend.new_waiter()
        # The waiter must be in place before the task runs init: spawn, then attach at once.
        ref = self._spawn(behaviour, args, parent=parent, **options)
        ctx = ref._ctx
        if ctx._state != _STARTING:  # already exited (killed before it could run)
            raise SpawnError(ctx._exit_reason)
        ctx._init_waiter = waiter
        await waiter.wait()
        return ref

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a registered name must be a non-empty string, got {name!r}")
        if name in self._names:
            raise NameTakenError(f"name {name!r} is registered to {self._names[name]._ref!r}")

    # -- names --

    def register(self, name: str, ref: Ref) -> None:
        """Register ``ref`` under ``name`` until it exits or is unregistered.

        Raises:
            NameTakenError: the name is taken, or the actor already has a name.
            NoProcError: the actor is not alive.
        """
        self._check_name(name)
        ctx = ref._ctx
        if ctx._state >= _EXITING:
            raise NoProcError(f"cannot register {name!r}: {ref!r} is not alive")
        if ctx._name is not None:
            raise NameTakenError(f"{ref!r} is already registered as {ctx._name!r}")
        self._names[name] = ctx
        ctx._name = name

    def unregister(self, name: str) -> None:
        """Release ``name``. Raises ``KeyError`` if it is not registered."""
        ctx = self._names.pop(name)
        ctx._name = None

    def whereis(self, name: str) -> Ref | None:
        """The ref registered under ``name``, or None."""
        ctx = self._names.get(name)
        return ctx._ref if ctx is not None else None

    def registered(self) -> list[str]:
        """All registered names."""
        return list(self._names)

    def _forget(self, ctx: Context) -> None:
        self._procs.pop(ctx._ref.pid, None)
        if ctx._name is not None and self._names.get(ctx._name) is ctx:
            del self._names[ctx._name]
        self._exited += 1

    # -- signals --

    def exit(self, ref: Ref, reason: object) -> None:
        """Send an exit signal to ``ref`` from outside any actor (``Exit.ref`` is None)."""
        self._queue_exit(ref._ctx, None, reason, direct=True)
        self._drain_exits()

    def _queue_exit(
        self, target: Context, sender: Context | None, reason: object, direct: bool = False
    ) -> None:
        self._exit_queue.append((target, sender, reason, direct))

    def _drain_exits(self) -> None:
        # Exit propagation runs from a queue, not by recursion: a long chain of links would
        # otherwise exhaust the stack.
        if self._draining:
            return
        self._draining = True
        try:
            queue = self._exit_queue
            while queue:
                target, sender, reason, direct = queue.popleft()
                target._receive_exit(sender, reason, direct)
        finally:
            self._draining = False

    def _new_monitor_ref(self) -> MonitorRef:
        mref = MonitorRef(self._next_monitor)
        self._next_monitor += 1
        return mref

    # -- timers --

    def send_after(self, delay: float, ref: Ref | str, message: Any) -> Timer:
        """Send ``message`` (to ``handle_info``) to ``ref`` or a registered name after ``delay``
        seconds of loop time. A name is resolved when the timer fires. Returns a
        :class:`Timer`; ``timer.cancel()`` returns the seconds that were left, or None."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        return self._timers.add(
            self._backend.now() + delay, functools.partial(self._timer_send, ref, message)
        )

    def _timer_send(self, ref: Ref | str, message: Any) -> None:
        if isinstance(ref, str):
            ctx = self._names.get(ref)
            if ctx is None:
                self._dead_letter(ref, message, "noproc")
                return
            ref = ctx._ref
        ref._ctx._deliver((INFO, message))

    def now(self) -> float:
        """The loop's monotonic clock, in seconds."""
        return self._backend.now()

    # -- dead letters --

    def _dead_letter(self, to: Ref | str, message: Any, reason: str) -> None:
        counts = self._dead_letter_counts
        counts[reason] = counts.get(reason, 0) + 1
        self._recent_dead_letters.append(DeadLetter(to, message, reason, self._backend.now()))

    def dead_letters(self) -> list[DeadLetter]:
        """The most recent dead letters (up to 100), oldest first."""
        return list(self._recent_dead_letters)

    # -- introspection --

    def actors(self) -> Iterator[Ref]:
        """Every live actor's ref, in spawn order (a snapshot: safe while actors come and go)."""
        return (ctx._ref for ctx in list(self._procs.values()))

    def context(self, ref: Ref | str) -> Context:
        """The :class:`Context` of a live actor, by ref or registered name.

        Raises:
            NoProcError: no such live actor.
        """
        if isinstance(ref, str):
            ctx = self._names.get(ref)
            if ctx is None:
                raise NoProcError(f"no actor is registered as {ref!r}")
            return ctx
        ctx = ref._ctx
        if ctx._node is not self or ctx._state >= 5:
            raise NoProcError(f"{ref!r} is not alive")
        return ctx

    async def wait_exit(self, ref: Ref) -> object:
        """Wait until the actor has exited and return its exit reason (at once if it already
        has). Checkpoints. Bound the wait with a cancel scope (``anyio.move_on_after``)."""
        ctx = ref._ctx
        if ctx._state >= 5:
            await self._backend.checkpoint()
            return ctx._exit_reason
        waiter = self._backend.new_waiter()
        if ctx._exit_waiters is None:
            ctx._exit_waiters = []
        ctx._exit_waiters.append(waiter)
        try:
            return await waiter.wait()
        finally:
            if ctx._exit_waiters is not None and waiter in ctx._exit_waiters:
                ctx._exit_waiters.remove(waiter)

    def orphans(self, ref: Ref) -> list[Ref]:
        """The actors ``ref`` spawned and was linked to when it exited with a reason other than
        ``normal``, and that are still alive: its exit signal told them to exit, and those that
        trap exits take their own time (a child supervisor stops its own children first), keeping
        their names meanwhile. Empty while ``ref`` is alive. Does not checkpoint; O(orphans).
        """
        ctx = ref._ctx
        if ctx._orphans is None:
            return []
        alive = [orphan for orphan in ctx._orphans if orphan._state < 5]
        ctx._orphans = alive or None  # the dead ones are not kept
        return [orphan._ref for orphan in alive]

    def lookup(self, pid: int) -> Ref | None:
        """The live actor with this pid, or None."""
        ctx = self._procs.get(pid)
        return ctx._ref if ctx is not None else None

    def statistics(self) -> NodeStatistics:
        """Node-wide counters: actors by status, spawned, exited, dead letters, timers.

        O(actors): fine for an operator's request, not for a hot path.
        """
        by_status: dict[str, int] = {}
        for ctx in self._procs.values():
            status = ctx.status().value
            by_status[status] = by_status.get(status, 0) + 1
        return NodeStatistics(
            actors=len(self._procs),
            by_status=by_status,
            spawned=self._spawned,
            exited=self._exited,
            dead_letters=dict(self._dead_letter_counts),
            timers=len(self._timers),
        )

    @asynccontextmanager
    async def trace(
        self, ref: Ref | str, *, count: int, rate: float = 100.0
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """Trace the messages an actor takes: ``async with node.trace(ref, count=10) as events:``
        then ``async for event in events`` (:class:`TraceEvent`). Stops after ``count`` events,
        when the actor exits, or when the block is left; at most ``rate`` events per second are
        kept (the rest are dropped and counted). One trace per actor at a time.

        Raises:
            NoProcError: no such live actor.
            ValueError: ``count`` < 1 or ``rate`` <= 0, or the actor is already traced.
        """
        ctx = self.context(ref)
        if ctx._tracer is not None:
            raise ValueError(f"{ctx._ref!r} is already being traced")
        tracer = Tracer(ctx, count, rate)
        ctx._tracer = tracer
        try:
            yield tracer.events()
        finally:
            tracer.release()

    # -- shutdown --

    def _kill_all(self, reason: object) -> None:
        self._closing = True
        for ctx in reversed(list(self._procs.values())):
            ctx._die(reason)
        self._drain_exits()


@asynccontextmanager
async def open_node(
    *,
    name: str = "parley",
    mailbox_size: int = DEFAULT_MAILBOX_SIZE,
    overflow: Overflow = Overflow.DROP_NEWEST,
) -> AsyncIterator[Node]:
    """Run a node for the duration of the block, on the running trio or asyncio loop.

    Leaving the block exits every actor still alive with reason ``shutdown`` (untrappable: stop
    supervision trees politely first, see ``supervisors.run_application``) and waits for their
    tasks to end.

    Args:
        mailbox_size: default capacity of each mailbox, in messages.
        overflow: default :class:`Overflow` policy.
    """
    if mailbox_size < 1:
        raise ValueError(f"mailbox_size must be >= 1, got {mailbox_size}")
    backend = current_backend()
    async with backend.open_task_host() as host:
        node = Node(backend, host, name=name, mailbox_size=mailbox_size, overflow=overflow)
        host.start(node._timers.run, name=f"node {name} timers")
        try:
            yield node
        finally:
            node._kill_all(SHUTDOWN)
            host.cancel()


__all__ = ["DEFAULT_MAILBOX_SIZE", "Node", "open_node"]
