"""What static and dynamic supervisors share: exit handling, intensity, backoff, retries,
escalation, and the request/reply protocol of the client API.

Follows OTP's supervisor.erl: a child's exit is checked against its restart type; a restart is
counted against the intensity first (``add_restart``), and one too many makes the supervisor stop
its children and exit ``shutdown``; a restart whose start fails is retried through the
supervisor's own mailbox (OTP's ``try_again_restart``), so the supervisor never blocks on it, and
each retry counts too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from actors import SHUTDOWN, Actor, Exit, From, SpawnError, is_clean_exit

from ._errors import StartChildError, SupervisorError
from ._restarts import Child, Intensity
from ._shutdown import shutdown_child
from ._spec import Restart, SupervisorFlags

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

    def _setup(self, flags: SupervisorFlags) -> None:
        if not isinstance(flags, SupervisorFlags):
            raise TypeError(f"expected SupervisorFlags, got {flags!r}")
        self.ctx.trap_exit = True
        self.flags = flags
        self._intensity = Intensity(flags.intensity, flags.period)
        self._rng = random.Random(flags.seed)
        self._by_pid = {}

    # -- messages --

    async def handle_info(self, message: Any) -> None:
        if type(message) is Exit:
            child = self._by_pid.pop(message.ref.pid, None) if message.ref is not None else None
            if child is not None:  # exits of non-children are ignored, as in OTP
                await self._child_exited(child, message.reason)
        elif type(message) is RestartDue:
            await self._restart_due(message)
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

    async def _child_exited(self, child: Child, reason: object) -> None:
        child.ref = None
        child.last_reason = reason
        child.last_exit_at = self.ctx.node.now()
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
        return reason

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
        self.stop(SHUTDOWN)

    async def terminate(self, reason: object) -> None:
        await self._stop_all()

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
