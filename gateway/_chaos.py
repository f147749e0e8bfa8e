"""The chaos monkey: the root's ``chaos`` child, which kills actors on request.

It is idle unless driven through the admin endpoint (``chaos.*`` ops, ``parley chaos``):

* ``kill``: kill ``count`` random actors of one kind now (see ``_chaos_targets`` for the kinds);
* ``start``/``stop``: kill random actors of the given kinds at a seeded rate in the background;
* ``havoc``: kill a supervisor's children one after another until its restarts inside its
  period reach ``intensity - 1``;
* ``storm``: kill one child of a supervisor ``kills`` times back to back, without the guard
  (``intensity + 1`` kills make the supervisor escalate).

Every kill but a storm's passes the intensity guard first: the target's supervisor must stay at
most at ``intensity - 1`` restarts inside its period, counting restarts from any cause; a kill
the guard refuses is counted as skipped. Randomness is ``random.Random(seed)``; the same seed
on the same tree picks the same victims. Each kill is recorded with its restart latency,
measured on the node's loop clock from the kill until the supervisor's record holds a new pid.

The :class:`Monkey` is shared state of the node (``Services.chaos`` while the actor runs): the
admin endpoint's tasks call it directly, the actor's own task runs the background kills.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
import trio

from actors import Context, Node, NoProcError, Ref

from ._chaos_kill import kill as kill_target
from ._chaos_kill import restarted, until
from ._chaos_targets import (
    KINDS,
    Target,
    budget,
    candidates,
    guard_allows,
    kind_of,
    protected_pids,
    records_of,
)
from ._services import CHAOS, Services

log = structlog.get_logger("gateway")

#: Kill records kept for ``status``.
LOG_SIZE: Final = 200
#: Most kills per second of a background run.
MAX_RATE: Final = 50.0
#: Restart latencies measured at once in a background run; beyond it a kill's latency is null.
MAX_MEASURING: Final = 256
#: A havoc makes at most this many kills per unit of intensity (a bound, should restarts be
#: slower than the period).
HAVOC_KILLS_PER_INTENSITY: Final = 4


class ChaosError(Exception):
    """A chaos request the monkey refuses: ``code`` is ``not_found`` or ``refused``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Run:
    """A background run's parameters and whether it is still going."""

    seed: int
    rate: float
    kinds: tuple[str, ...]
    duration: float | None
    running: bool = True
    scope: trio.CancelScope | None = None


def _round(value: float) -> float:
    return round(value, 6)


class Monkey:
    """The chaos monkey of one node: ``root`` is its root supervisor; ``nursery`` runs the
    background kills (the chaos actor's)."""

    def __init__(self, node: Node, root: Ref, nursery: trio.Nursery, self_ref: Ref) -> None:
        self.node = node
        self.root = root
        self.self_ref = self_ref
        self._nursery = nursery
        self._rng = random.Random()
        self._lock = trio.Lock()  # one pick-kill-settle at a time, so the guard sees each
        self.kills = 0
        self.skipped = 0
        self.by_kind: dict[str, int] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self.run: Run | None = None
        self._measuring = 0

    # -- one kill ----------------------------------------------------------------------------

    def _record(self, target: Target, at: float) -> dict[str, Any]:
        child_id = target.child_id
        name = None
        with contextlib.suppress(NoProcError):
            name = self.node.context(target.ref).name
        return {
            "kind": target.kind,
            "pid": target.ref.pid,
            "name": name,
            "supervisor": target.supervisor.pid,
            "child_id": child_id.pid if isinstance(child_id, Ref) else _json_id(child_id),
            "at": _round(at),
            "restarted_pid": None,
            "restart_latency_s": None,
        }

    async def _kill(self, target: Target) -> tuple[dict[str, Any], float]:
        """Kill ``target`` (see ``_chaos_kill.kill``) and count it. Returns its record and the
        kill's time."""
        records: list[dict[str, Any]] = []

        def note(at: float) -> None:
            record = self._record(target, at)
            records.append(record)
            self.kills += 1
            self.by_kind[target.kind] = self.by_kind.get(target.kind, 0) + 1
            self.log.append(record)
            log.info(
                "chaos_kill",
                kind=target.kind,
                pid=target.ref.pid,
                name=record["name"],
                supervisor=target.supervisor.pid,
            )

        at = await kill_target(self.node, target, note)
        return records[0], at

    async def _restarted(
        self, target: Target, record: dict[str, Any], at: float, wait: float
    ) -> None:
        """Fill ``restarted_pid`` and ``restart_latency_s`` once the supervisor's record holds
        a new pid (at most ``wait`` seconds; never for a temporary child, nor once the
        supervisor has given up)."""
        ref = await restarted(target, wait)
        if ref is not None:
            record["restarted_pid"] = ref.pid
            record["restart_latency_s"] = _round(self.node.now() - at)

    async def _kill_and_wait(self, target: Target, wait: float) -> dict[str, Any]:
        async with self._lock:
            record, at = await self._kill(target)
        await self._restarted(target, record, at, wait)
        return record

    def _pick(self, rng: random.Random, kind: str) -> Target | None:
        allowed = [t for t in candidates(self.node, self.root, kind) if guard_allows(self.node, t)]
        return rng.choice(allowed) if allowed else None

    # -- ops -----------------------------------------------------------------------------------

    async def kill(
        self, kind: str, count: int = 1, seed: int | None = None, wait: float = 5.0
    ) -> dict[str, Any]:
        """Kill ``count`` random actors of ``kind``, one after another, each chosen among those
        the guard allows, waiting at most ``wait`` s for each restart. Checkpoints.

        Returns ``{"kills": [record, ...], "skipped": n}``; a kill is skipped when no actor of
        that kind is running or the guard allows none.
        """
        _check_kind(kind)
        rng = random.Random(seed) if seed is not None else self._rng
        kills: list[dict[str, Any]] = []
        skipped = 0
        for _ in range(count):
            async with self._lock:
                target = self._pick(rng, kind)
                if target is None:
                    skipped += 1
                    self.skipped += 1
                    continue
                record, at = await self._kill(target)
            await self._restarted(target, record, at, wait)
            kills.append(record)
        return {"kills": kills, "skipped": skipped}

    async def storm(
        self, sup: Ref, child: int | str | None, kills: int, wait: float = 10.0
    ) -> dict[str, Any]:
        """Kill one child of ``sup`` ``kills`` times back to back, waiting (at most ``wait`` s)
        for each restart, without the guard: more than ``intensity`` kills inside the period
        make ``sup`` give up, and its own supervisor restart it (escalation). ``child``: a
        static child's id, or a child's pid or registered name; None: the first running one.
        Checkpoints.

        Returns ``{"supervisor", "supervisor_pid_before", "supervisor_pid_after", "intensity",
        "period", "kills", "escalated", "records"}`` (``supervisor_pid_after``: the pid holding
        the supervisor's place in its parent's record afterwards, null when none does).

        Raises:
            ChaosError: ``not_found`` (no such child), ``refused`` (not a supervisor, a
                never-target, or a storm that would make the root give up).
        """
        node = self.node
        found = budget(node, sup)
        if found is None:
            raise ChaosError("refused", f"{sup.pid} is not a supervisor")
        if sup == self.root and kills >= found.intensity:
            raise ChaosError(
                "refused",
                f"{kills} kills would make the root give up (intensity {found.intensity}): "
                "that stops the node",
            )
        target = self._child(sup, child)
        place = self._place(sup)
        records: list[dict[str, Any]] = []
        for _ in range(kills):
            if not sup.alive or target.record.ref is None:
                break
            target = Target(target.kind, target.record.ref, sup, target.child_id, target.record)
            record = await self._kill_and_wait(target, wait)
            records.append(record)
            if record["restarted_pid"] is None:
                break
        after = await self._replacement(sup, place, wait)
        return {
            "supervisor": sup.pid,
            "supervisor_pid_before": sup.pid,
            "supervisor_pid_after": after.pid if after is not None else None,
            "intensity": found.intensity,
            "period": found.period,
            "kills": len(records),
            "escalated": after != sup,
            "records": records,
        }

    async def havoc(self, sup: Ref, seed: int | None = None, wait: float = 5.0) -> dict[str, Any]:
        """Kill random restartable children of ``sup`` (not temporary ones, not never-targets),
        one after another, each passing the guard and waiting at most ``wait`` s for its
        restart, until ``sup``'s restarts inside its period reach ``intensity - 1``. A killed
        supervisor takes its own subtree down with it. Checkpoints.

        Returns ``{"supervisor", "intensity", "period", "kills": [record, ...], "escalated"}``
        (``escalated``: ``sup`` is no longer alive afterwards).

        Raises:
            ChaosError: ``refused``: not a supervisor.
        """
        node = self.node
        found = budget(node, sup)
        if found is None:
            raise ChaosError("refused", f"{sup.pid} is not a supervisor")
        rng = random.Random(seed) if seed is not None else self._rng
        kills: list[dict[str, Any]] = []
        for _ in range(HAVOC_KILLS_PER_INTENSITY * max(1, found.intensity)):
            async with self._lock:
                now = budget(node, sup)
                if now is None or not now.allows_one_more:
                    break
                victims = [t for t in self._children(sup) if not t.temporary]
                if not victims:
                    break
                target = rng.choice(victims)
                record, at = await self._kill(target)
            await self._restarted(target, record, at, wait)
            kills.append(record)
        return {
            "supervisor": sup.pid,
            "intensity": found.intensity,
            "period": found.period,
            "kills": kills,
            "escalated": not sup.alive,
        }

    # -- background runs -------------------------------------------------------------------------

    def start(
        self,
        seed: int | None,
        rate: float,
        kinds: Sequence[str] = KINDS,
        duration: float | None = None,
    ) -> dict[str, Any]:
        """Start killing random actors of ``kinds`` at ``rate`` kills per second (at most
        ``MAX_RATE``) for ``duration`` s (None: until :meth:`stop`); a run already going is
        stopped first. ``seed`` None picks one (shown in the status). Returns the status."""
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE:g}] kills/s, got {rate!r}")
        if not kinds:
            raise ValueError("kinds must name at least one kind")
        for kind in kinds:
            _check_kind(kind)
        if duration is not None and not duration > 0:
            raise ValueError(f"duration must be > 0 s, got {duration!r}")
        self.stop()
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
        run = Run(seed, float(rate), tuple(dict.fromkeys(kinds)), duration)
        self.run = run
        self._nursery.start_soon(self._run, run)
        return self.status()

    def stop(self) -> dict[str, Any]:
        """Stop the background run, if any (its pending latency measurements are dropped).
        Returns the status."""
        run = self.run
        if run is not None and run.running:
            run.running = False
            if run.scope is not None:
                run.scope.cancel()
        return self.status()

    async def _run(self, run: Run) -> None:
        rng = random.Random(run.seed)
        interval = 1.0 / run.rate
        started = self.node.now()
        ends = math.inf if run.duration is None else started + run.duration
        with trio.CancelScope() as scope:
            run.scope = scope
            if not run.running:
                return
            log.info("chaos_started", seed=run.seed, rate=run.rate, kinds=list(run.kinds))
            async with trio.open_nursery() as measuring:
                due = started
                while True:
                    due += interval
                    now = self.node.now()
                    if due < now:
                        due = now  # late (a slow settle): no burst to catch up
                    if due >= ends:
                        await trio.sleep_until(ends)
                        break
                    await trio.sleep_until(due)
                    await self._tick(rng, run, measuring)
                measuring.cancel_scope.cancel()
        run.running = False
        log.info("chaos_stopped", seed=run.seed, kills=self.kills, skipped=self.skipped)

    async def _tick(self, rng: random.Random, run: Run, measuring: trio.Nursery) -> None:
        kind = rng.choice(run.kinds)
        async with self._lock:
            target = self._pick(rng, kind)
            if target is None:
                self.skipped += 1
                return
            record, at = await self._kill(target)
        if self._measuring < MAX_MEASURING and not target.temporary:
            self._measuring += 1

            async def measure() -> None:
                try:
                    await self._restarted(target, record, at, 30.0)
                finally:
                    self._measuring -= 1

            measuring.start_soon(measure)

    def status(self) -> dict[str, Any]:
        """``{"running", "seed", "rate", "kinds", "kills", "skipped", "by_kind", "log"}``: the
        last run's parameters (null before any), and counts over every kill the monkey made
        (ops and runs), the last ``LOG_SIZE`` records oldest first."""
        run = self.run
        return {
            "running": bool(run is not None and run.running),
            "seed": run.seed if run is not None else None,
            "rate": run.rate if run is not None else None,
            "kinds": list(run.kinds) if run is not None else None,
            "duration": run.duration if run is not None else None,
            "kills": self.kills,
            "skipped": self.skipped,
            "by_kind": dict(sorted(self.by_kind.items())),
            "log": list(self.log),
        }

    # -- a supervisor's children ------------------------------------------------------------------

    def by_path(self, path: str) -> Ref | None:
        """The running actor at ``path``, child ids from the root joined by ``/`` (``gateway``,
        ``gateway/connections``), or None."""
        ref: Ref | None = self.root
        for part in path.strip("/").split("/"):
            ref = next((r.ref for cid, r in records_of(self.node, ref) if cid == part), None)
            if ref is None:
                return None
        return ref

    def _children(self, sup: Ref) -> list[Target]:
        """``sup``'s running children but the never-targets, as targets, by pid."""
        never = protected_pids(self.node, self.root) | {self.self_ref.pid}
        found = []
        for cid, record in records_of(self.node, sup):
            ref = record.ref
            if ref is None or ref.pid in never:
                continue
            found.append(Target(kind_of(self.node, self.root, ref, sup), ref, sup, cid, record))
        found.sort(key=lambda t: t.ref.pid)
        return found

    def _child(self, sup: Ref, child: int | str | None) -> Target:
        children = self._children(sup)
        if child is None:
            if not children:
                raise ChaosError("not_found", f"{sup.pid} has no running child")
            first = records_of(self.node, sup)
            order = {id(record): i for i, (_, record) in enumerate(first)}
            return min(children, key=lambda t: order.get(id(t.record), 0))
        if isinstance(child, int) and child in protected_pids(self.node, self.root):
            raise ChaosError("refused", f"#{child} is never a target")
        named = self.node.whereis(child) if isinstance(child, str) else None
        for target in children:
            cid = target.child_id
            if cid == child and not isinstance(cid, Ref):
                return target
            if target.ref.pid == child or (named is not None and target.ref == named):
                return target
        if child in _ids(records_of(self.node, sup)):
            raise ChaosError("refused", f"{sup.pid}'s child {child!r} is never a target")
        raise ChaosError("not_found", f"{sup.pid} has no running child {child!r}")

    def _place(self, sup: Ref) -> Any:
        """The record holding ``sup`` in its parent supervisor (None for the root)."""
        try:
            parent = self.node.context(sup).parent
        except NoProcError:
            return None
        for _, record in records_of(self.node, parent):
            if record.ref == sup:
                return record
        return None

    async def _replacement(self, sup: Ref, place: Any, wait: float) -> Ref | None:
        """``sup`` if still alive, else the pid its parent restarted in its place (waiting at
        most ``wait`` s for it), else None."""
        if sup.alive:
            # It may be giving up right now: let it take the last exit first.
            await trio.sleep(0.01)
            if sup.alive:
                return sup
        if place is None:
            return None
        with trio.move_on_after(wait):
            await until(lambda: place.ref is not None and place.ref != sup)
        ref: Ref | None = place.ref
        return ref if ref != sup else None


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")


def _json_id(child_id: Any) -> Any:
    return child_id if isinstance(child_id, int | str) else repr(child_id)


def _ids(records: list[tuple[Any, Any]]) -> set[Any]:
    return {cid for cid, _ in records if not isinstance(cid, Ref)}


async def chaos_actor(ctx: Context, services: Services) -> None:
    """The root's ``chaos`` child: publishes its :class:`Monkey` as ``services.chaos`` and runs
    its background kills until stopped. Registered as ``chaos``."""
    root = ctx.parent
    assert isinstance(root, Ref)
    ctx.register(CHAOS)
    async with trio.open_nursery() as nursery:
        monkey = Monkey(ctx.node, root, nursery, ctx.ref)
        services.chaos = monkey
        try:
            while True:
                await ctx.receive()  # nothing is asked of it; exit signals stop it
        finally:
            if services.chaos is monkey:
                services.chaos = None
            nursery.cancel_scope.cancel()
