"""What static and dynamic supervisors share: exit handling, intensity, backoff, retries,
escalation, and the request/reply protocol of the client API.

Follows OTP's supervisor.erl: a child's exit is checked against its restart type; a restart is
counted against the intensity first (``add_restart``), and one too many makes the supervisor stop
its children and exit ``shutdown``; a restart whose start fails is retried through the
supervisor's own mailbox (OTP's ``try_again_restart``), so the supervisor never blocks on it, and
each retry counts too. A child is started again only once the remains of its previous
incarnation (the linked children its exit left behind, see ``_remains``) are gone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from actors import (
    KILL,
    SHUTDOWN,
    Actor,
    Down,
    Exit,
    From,
    MonitorRef,
    Ref,
    SpawnError,
    is_clean_exit,
)

from ._errors import StartChildError, SupervisorError
from ._remains import Remains, RemainsDeadline
from ._restarts import Child, Intensity
from ._shutdown import shutdown_child
from ._spec import BRUTAL_KILL, INFINITY, Restart, SupervisorFlags

log = structlog.get_logger("supervisors")


@dataclass(frozen=True, slots=True)
class Request:
    """A client API request: ``op`` names the operation, ``arg`` its argument."""

    op: str
    arg: Any = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A request's error, raised again in the caller by the client API."""

    error: SupervisorError


@dataclass(frozen=True, slots=True)
class RestartDue:
    """Time to (re)start these children: after a backoff delay, or a retry after a failed
    start (``retry``: counts against the intensity, as OTP's ``try_again_restart``)."""

    children: tuple[Child, ...]
    retry: bool


class SupervisorBase(Actor):
    """The machinery of both supervisor kinds. Not for direct use."""

    flags: SupervisorFlags
    _intensity: Intensity
    _rng: random.Random
    _by_pid: dict[int, Child]
    _remains: dict[MonitorRef, Remains]

    def _setup(self, flags: SupervisorFlags) -> None:
        if not isinstance(flags, SupervisorFlags):
            raise TypeError(f"expected SupervisorFlags, got {flags!r}")
        self.ctx.trap_exit = True
        self.flags = flags
        self._intensity = Intensity(flags.intensity, flags.period)
        self._rng = random.Random(flags.seed)
        self._by_pid = {}
        self._remains = {}

    # -- messages --

    async def handle_info(self, message: Any) -> None:
        if type(message) is Exit:
            child = self._by_pid.pop(message.ref.pid, None) if message.ref is not None else None
            if child is not None:  # exits of non-children are ignored, as in OTP
                assert message.ref is not None
                await self._child_exited(child, message.ref, message.reason)
        elif type(message) is RestartDue:
            await self._restart_due(message)
        elif type(message) is Down:
            remains = self._remains.pop(message.monitor, None)
            if remains is not None:
                self._remains_exited(remains, message)
        elif type(message) is RemainsDeadline:
            self._remains_deadline(message.remains)
        else:
            log.warning("supervisor_unexpected_message", message=repr(message)[:200])

    async def handle_call(self, request: Any, from_: From) -> Any:
        if type(request) is not Request:
            return Failure(SupervisorError(f"unknown request {request!r}"))
        handler = getattr(self, "_op_" + request.op, None)
        if handler is None:
            return Failure(SupervisorError(f"unknown operation {request.op!r}"))
        try:
            return await handler(request.arg)
        except SupervisorError as exc:
            return Failure(exc)

    # -- exits and restarts --

    async def _child_exited(self, child: Child, ref: Ref, reason: object) -> None:
        child.ref = None
        child.last_reason = reason
        child.last_exit_at = self.ctx.node.now()
        self._watch_remains(child, ref)
        restart = child.spec.restart
        if restart is Restart.TEMPORARY:
            self._forget(child)
            return
        if restart is Restart.TRANSIENT and is_clean_exit(reason):
            return
        if not self._intensity.add(self.ctx.node.now()):
            await self._give_up(child, reason)
            return
        await self._restart(child)

    async def _restart_due(self, due: RestartDue) -> None:
        children = tuple(c for c in due.children if c.pending is due and self._owns(c))
        for child in children:
            child.pending = None
        if not children:
            return
        if due.retry and not self._intensity.add(self.ctx.node.now()):
            await self._give_up(children[0], children[0].last_reason)
            return
        await self._start_group(children)

    def _schedule(self, children: Sequence[Child], failed: Child, *, retry: bool) -> None:
        """Start ``children`` later: after ``failed``'s backoff delay, or at once through the
        mailbox (so the supervisor stays responsive between attempts)."""
        due = RestartDue(tuple(children), retry)
        for child in children:
            child.pending = due
        delay = self._backoff_delay(failed)
        if delay > 0:
            self.ctx.send_after(delay, self.ref, due)
        else:
            self.ref.send(due)

    def _backoff_delay(self, child: Child) -> float:
        backoff = child.spec.backoff
        if backoff is None:
            return 0.0
        now = self.ctx.node.now()
        if child.started_at is not None and now - child.started_at >= backoff.reset_after:
            child.backoff_attempt = 0
        child.backoff_attempt += 1
        return backoff.delay(child.backoff_attempt, self._rng.random())

    async def _start_child(self, child: Child) -> None:
        spec = child.spec
        try:
            if spec.start_is_sync:  # init runs inline: no need to wait (the fast path)
                ref = self.ctx.spawn_link(spec.start, *spec.args, *child.args, **spec.options)
            else:
                ref = await self.ctx.start_link(spec.start, *spec.args, *child.args, **spec.options)
        except SpawnError as exc:
            child.last_reason = exc.reason
            child.last_exit_at = self.ctx.node.now()
            raise StartChildError(spec.id, exc.reason) from exc
        child.ref = ref
        child.started_at = self.ctx.node.now()
        child.pending = None
        self._by_pid[ref.pid] = child

    async def _stop_child(self, child: Child) -> object:
        ref = child.ref
        child.pending = None
        if ref is None:
            return None
        self._by_pid.pop(ref.pid, None)
        reason = await shutdown_child(self.ctx, ref, child.spec.shutdown)  # type: ignore[arg-type]
        child.ref = None
        child.last_reason = reason
        child.last_exit_at = self.ctx.node.now()
        self._watch_remains(child, ref)  # a child killed at its deadline may leave some
        return reason

    # -- remains: the orphans of a child's previous incarnation --

    def _watch_remains(self, child: Child, ref: Ref) -> None:
        """Monitor the orphans ``ref`` left (``Node.orphans``) as ``child``'s remains, with the
        child's ``shutdown`` as their deadline (``BRUTAL_KILL``: killed at once)."""
        orphans = self.ctx.node.orphans(ref)
        if not orphans:
            return
        remains = child.remains
        if remains is None:
            remains = child.remains = Remains(child)
            shutdown = child.spec.shutdown
            if shutdown is BRUTAL_KILL:
                remains.killing = True
            elif shutdown is not None and shutdown != INFINITY:
                remains.timer = self.ctx.send_after(
                    float(shutdown),  # type: ignore[arg-type]
                    self.ref,
                    RemainsDeadline(remains),
                )
        for orphan in orphans:
            self._watch(remains, orphan)

    def _watch(self, remains: Remains, ref: Ref) -> None:
        mref = self.ctx.monitor(ref)
        self._remains[mref] = remains
        remains.watched[mref] = ref
        if remains.killing:
            self.ctx.exit(ref, KILL)

    def _remains_exited(self, remains: Remains, down: Down) -> None:
        """One of ``remains`` exited: watch its own orphans in turn; once none is left, send the
        start that waits for them (when all its children are free of remains)."""
        remains.watched.pop(down.monitor, None)
        for orphan in self.ctx.node.orphans(down.ref):
            self._watch(remains, orphan)
        if remains.watched:
            return
        if remains.timer is not None:
            remains.timer.cancel()
        child = remains.child
        if child.remains is remains:
            child.remains = None
        due = remains.due
        if due is not None and all(c.remains is None for c in due.children):
            self.ref.send(due)

    def _remains_deadline(self, remains: Remains) -> None:
        if not remains.watched:
            return
        log.warning(
            "supervisor_killed_remains",
            supervisor=repr(self.ref),
            child=repr(remains.child.spec.id),
            remaining=len(remains.watched),
        )
        remains.killing = True
        for ref in list(remains.watched.values()):
            self.ctx.exit(ref, KILL)

    def _wait_for_remains(self, children: Sequence[Child]) -> bool:
        """Whether some of ``children`` (to be started, in order) still have remains: then all
        of them start once those are gone (a RestartDue that costs no intensity)."""
        if not any(child.remains is not None for child in children):
            return False
        due = RestartDue(tuple(children), retry=False)
        for child in children:
            child.pending = due
            if child.remains is not None:
                child.remains.due = due
        return True

    async def _kill_remains(self) -> None:
        """Stopping: kill whatever remains of the children's previous incarnations and wait
        until it is gone, so that this supervisor leaves nothing behind. Checkpoints."""
        node = self.ctx.node
        refs = [ref for remains in set(self._remains.values()) for ref in remains.watched.values()]
        for remains in set(self._remains.values()):
            if remains.timer is not None:
                remains.timer.cancel()
        self._remains.clear()
        while refs:
            ref = refs.pop()
            if ref.alive:
                self.ctx.exit(ref, KILL)
                await node.wait_exit(ref)
            refs.extend(node.orphans(ref))

    async def _give_up(self, child: Child, reason: object) -> None:
        log.error(
            "supervisor_gave_up",
            supervisor=repr(self.ref),
            child=repr(child.spec.id),
            reason=repr(reason),
            intensity=self.flags.intensity,
            period=self.flags.period,
        )
        await self._stop_all()
        await self._kill_remains()
        self.stop(SHUTDOWN)

    async def terminate(self, reason: object) -> None:
        await self._stop_all()
        await self._kill_remains()

    # -- what each kind defines --

    async def _restart(self, child: Child) -> None:
        raise NotImplementedError

    async def _start_group(self, children: Sequence[Child]) -> None:
        raise NotImplementedError

    async def _stop_all(self) -> None:
        raise NotImplementedError

    def _forget(self, child: Child) -> None:
        raise NotImplementedError

    def _owns(self, child: Child) -> bool:
        raise NotImplementedError

    def children_records(self) -> list[tuple[Any, Child]]:
        """(id, record) of every child, in order: for introspection."""
        raise NotImplementedError
