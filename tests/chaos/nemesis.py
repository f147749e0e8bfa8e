"""The nemesis: a seeded schedule of faults (issue 7 §2) and the code that injects each one.

The schedule is a pure function of the seed, the duration and the backend
(:func:`make_schedule`), so a seed names the same faults at the same offsets every time; the
outcomes still vary with real timing. Each fault is recorded as a ``fault`` event with phase
``start`` then ``end``; the ``end`` detail holds what the fault did (the chaos monkey's kill
records and storm results, the supervisor's children before and after, exit codes...).

Faults that restart a child of the root supervisor (intensity 3 in 10 s) — a presence kill, a
supervisor kill, a storm above the gateway's intensity, and, to keep the storms' counts clean,
both storms and the node kill — are "heavy": they are spaced at least :data:`HEAVY_SPACING`
seconds apart, so the faults alone never take the node down.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from ._faults import BACKOFF_S
from ._history import HistoryWriter
from .node import NodeControl, find_child, supervisors

#: Seconds between two heavy faults (the root's period is 10 s).
HEAVY_SPACING: Final = 11.0
#: Seconds between the end of a fault and the next one, at least and at most.
LIGHT_GAP: Final = (1.0, 2.5)
#: Seconds the node stays SIGSTOPped.
PAUSE_S: Final = 2.0
#: Seconds to let restarts settle before reading a supervisor's children again.
SETTLE_S: Final = 1.0
#: Seconds the monkey waits to see a killed actor restarted (then it reports none).
KILL_WAIT_S: Final = 5.0
#: The gateway supervisor's restart intensity (gateway/_tree.py); a storm's result says it too.
GATEWAY_INTENSITY: Final = 3

#: Seconds each fault usually takes (the schedule leaves room for them); others: about 0.5 s.
TAKES: Final = {
    "kill.presence": 1.5,
    "kill.storage": 1.5,
    "kill.supervisor": 1.5,
    "storm.below": 1.5,
    "storm.above": 2.0,
    "havoc": 3.0,
    "failpoint.after_commit": 1.5,
    "failpoint.after_reply": 1.5,
    "db.restart": 5.0,
    "slow_consumer": 8.0,
    "node.pause": PAUSE_S,
    "node.kill": 3.0,
}

HEAVY: Final = (
    "kill.presence",
    "kill.supervisor",
    "storm.below",
    "storm.above",
    "node.kill",
    "havoc",
)
#: Runs shorter than this leave havoc out (their few heavy slots go to the others).
HAVOC_MIN_DURATION: Final = 120.0
LIGHT: Final = (
    "kill.connection",
    "kill.session",
    "kill.conversation",
    "kill.storage",
    "failpoint.after_commit",
    "failpoint.after_reply",
    "db.drop_connections",
    "db.restart",
    "slow_consumer",
    "node.pause",
)


def applicable(kind: str, backend: str) -> bool:
    """Whether ``kind`` can be injected on ``backend``."""
    if kind == "db.drop_connections":
        return backend == "postgresql"
    if kind == "db.restart":
        return backend in ("postgresql", "cassandra")
    return True


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start of the chaos phase
    kind: str


def make_schedule(
    seed: int, duration: float, backend: str, *, only: frozenset[str] | None = None
) -> list[Fault]:
    """The faults of a run: heavy ones every :data:`HEAVY_SPACING` s (each heavy kind once
    before any repeats, in a seeded order), light ones in between every 2 to 4 s (each light kind
    once before any repeats). Nothing is scheduled in the last 3 s."""
    rng = random.Random(f"{seed}-nemesis")

    def wanted(kind: str) -> bool:
        if kind == "havoc" and duration < HAVOC_MIN_DURATION and (only is None or kind not in only):
            return False
        return applicable(kind, backend) and (only is None or kind in only)

    def cycle(kinds: tuple[str, ...]) -> Callable[[], str | None]:
        pool = [k for k in kinds if wanted(k)]
        queue: list[str] = []

        def take() -> str | None:
            if not pool:
                return None
            if not queue:
                queue.extend(rng.sample(pool, len(pool)))
            return queue.pop(0)

        return take

    heavy, light = cycle(HEAVY), cycle(LIGHT)
    faults: list[Fault] = []
    end = duration - 3.0
    heavy_at = 3.0 + rng.uniform(0, 2)
    t = 1.0 + rng.uniform(*LIGHT_GAP)  # when the next fault may start
    while t < end:
        if heavy_at <= t + 1.0:
            kind = heavy()
            at = max(t, heavy_at)
            heavy_at = at + HEAVY_SPACING + rng.uniform(0, 1)
        else:
            kind = light()
            at = t
            # a long light fault pushes the next heavy one back rather than overlapping it
            heavy_at = max(heavy_at, at + TAKES.get(kind or "", 0.5) + LIGHT_GAP[0])
        if kind is None:
            t += rng.uniform(*LIGHT_GAP)
            continue
        if at < end:
            faults.append(Fault(round(at, 2), kind))
        t = at + TAKES.get(kind, 0.5) + rng.uniform(*LIGHT_GAP)
    return faults


class Nemesis:
    """Runs a schedule against a node, recording each fault in the history (process
    ``nemesis``).

    ``slow_consumer`` runs the slow-consumer fault (provided by the harness, which owns the
    devices); ``db`` is the backend's database control, or None (SQLite).
    """

    def __init__(
        self,
        node: NodeControl,
        history: HistoryWriter,
        seed: int,
        *,
        backend: str,
        root: Path,
        slow_consumer: Callable[[], Awaitable[dict[str, Any]]],
        db: Any = None,
        lock: trio.Lock | None = None,
    ) -> None:
        self.node = node
        self.lock = lock or trio.Lock()
        self.history = history
        self.rng = random.Random(f"{seed}-nemesis-run")
        self.backend = backend
        self.root = root
        self.slow_consumer = slow_consumer
        self.db = db
        self.injected: dict[str, int] = {}
        self.errors: list[str] = []
        self._ids = 0
        self._last_heavy = -HEAVY_SPACING

    async def run(self, schedule: list[Fault], stop: trio.Event) -> None:
        """Inject ``schedule`` (offsets from now) until it ends or ``stop`` is set."""
        start = trio.current_time()
        last_end = start
        for fault in schedule:
            at = max(start + fault.at, last_end + LIGHT_GAP[0] / 2)
            if fault.kind in HEAVY:
                at = max(at, self._last_heavy + HEAVY_SPACING)
            with trio.move_on_at(at):
                await stop.wait()
            if stop.is_set():
                return
            await self.inject(fault.kind)
            last_end = trio.current_time()
            if fault.kind in HEAVY:
                self._last_heavy = last_end

    async def inject(self, kind: str) -> dict[str, Any]:
        """One fault, recorded as ``fault`` start and end events; its end detail."""
        self._ids += 1
        fid = self._ids
        self.history.event(
            "nemesis", "fault", {"id": fid, "kind": kind, "phase": "start", "detail": {}}
        )
        try:
            async with self.lock:
                detail = await self._do(kind)
        except Exception as exc:  # recorded: the checker sees the fault did not happen as meant
            detail = {"error": f"{type(exc).__name__}: {exc}"}
            self.errors.append(f"fault {fid} {kind}: {detail['error']}")
        self.injected[kind] = self.injected.get(kind, 0) + 1
        self.history.event(
            "nemesis", "fault", {"id": fid, "kind": kind, "phase": "end", "detail": detail}
        )
        return detail

    def _seed(self) -> int:
        return self.rng.randrange(2**31)

    async def _do(self, kind: str) -> dict[str, Any]:
        node = self.node
        if kind in ("kill.connection", "kill.session", "kill.conversation"):
            return await node.chaos_kill(kind.split(".", 1)[1], seed=self._seed())
        if kind in ("kill.storage", "kill.presence", "kill.supervisor"):
            return await self._kill_static(kind.split(".", 1)[1])
        if kind in ("storm.below", "storm.above"):
            return await self._storm(below=kind == "storm.below")
        if kind == "havoc":
            return await self._havoc()
        if kind.startswith("failpoint."):
            return await self._failpoint("storage." + kind.split(".", 1)[1])
        if kind == "db.drop_connections":
            dropped: dict[str, Any] = await self.db.drop_connections(node.pid)
            return dropped
        if kind == "db.restart":
            restarted: dict[str, Any] = await self.db.restart()
            return restarted
        if kind == "slow_consumer":
            return await self.slow_consumer()
        if kind == "node.pause":
            node.pause()
            await trio.sleep(PAUSE_S)
            node.resume()
            return {"paused_s": PAUSE_S}
        if kind == "node.kill":
            t0 = trio.current_time()
            code = node.kill()
            await trio.to_thread.run_sync(node.start)
            return {"exit_code": code, "restart_s": round(trio.current_time() - t0, 3)}
        raise ValueError(f"unknown fault {kind!r}")

    async def _children(self, supervisor_pid: int | None, supervisor_id: str) -> dict[str, Any]:
        """A supervisor's place in the tree (found by pid, else by child id)."""
        tree = await self.node.tree()
        for sup in supervisors(tree).values():
            if supervisor_pid is not None and sup.get("pid") == supervisor_pid:
                return sup
        found = find_child(tree, supervisor_id)
        return found or {}

    @staticmethod
    def _pids(sup: dict[str, Any]) -> dict[str, Any]:
        return {str(c.get("id")): c.get("pid") for c in sup.get("children", [])}

    async def _kill_static(self, kind: str) -> dict[str, Any]:
        """A kill of a static supervisor's child, with the siblings before and after."""
        parent_id = {"storage": "storage", "presence": "root"}.get(kind)
        tree = await self.node.tree()
        befores = {sid: self._pids(s) for sid, s in supervisors(tree).items()}
        sups = supervisors(tree)
        # The monkey waits this long for the restart; a storage shard's comes after its backoff.
        wait = KILL_WAIT_S + BACKOFF_S.get(kind, 0.0)
        result = await self.node.chaos_kill(kind, seed=self._seed(), wait=wait)
        kills = result.get("kills") or []
        if not kills:
            return result
        record = kills[0]
        if parent_id is None:  # a supervisor: its parent is whoever lists it as a child
            sup_pid = record.get("supervisor")
            parent = next(
                (s for s in sups.values() if sup_pid is not None and s.get("pid") == sup_pid),
                None,
            )
            parent_id = str(parent.get("id")) if parent is not None else "root"
        await trio.sleep(SETTLE_S)
        after_sup = await self._children(None, parent_id)
        strategy = sups.get(parent_id, {}).get("strategy")
        result["siblings"] = {
            "supervisor": parent_id,
            "strategy": strategy,
            "killed": record.get("child_id"),
            "before": befores.get(parent_id, {}),
            "after": self._pids(after_sup),
        }
        return result

    async def _storm(self, *, below: bool) -> dict[str, Any]:
        """Kill the gateway's first child intensity∓1 times back to back."""
        tree = await self.node.tree()
        sups = supervisors(tree)
        before = self._pids(sups.get("gateway", {}))
        root_before = self._pids(tree)
        kills = GATEWAY_INTENSITY - 1 if below else GATEWAY_INTENSITY + 1
        result = await self.node.chaos_storm("gateway", kills=kills)
        intensity = result.get("intensity")
        if isinstance(intensity, int) and intensity != GATEWAY_INTENSITY:
            self.errors.append(
                f"the gateway's intensity is {intensity}, the nemesis assumed {GATEWAY_INTENSITY}"
            )
        await trio.sleep(SETTLE_S)
        tree = await self.node.tree()
        after = self._pids(supervisors(tree).get("gateway", {}))
        killed = next(iter(before), None)
        result["siblings"] = {
            "supervisor": "gateway",
            "strategy": "rest_for_one",
            "killed": killed,
            "before": before,
            "after": after,
        }
        result["root_siblings"] = {
            "supervisor": "root",
            "strategy": "one_for_one",
            "killed": "gateway",
            "before": root_before,
            "after": self._pids(tree),
        }
        result["expected_escalation"] = not below
        return result

    async def _havoc(self) -> dict[str, Any]:
        """Kill the gateway's restartable children up to its intensity - 1 (no escalation)."""
        tree = await self.node.tree()
        root_before = self._pids(tree)
        result = await self.node.chaos_havoc("gateway", seed=self._seed())
        await trio.sleep(SETTLE_S)
        result["root_siblings"] = {
            "supervisor": "root",
            "strategy": "one_for_one",
            "killed": None,
            "before": root_before,
            "after": self._pids(await self.node.tree()),
        }
        result["expected_escalation"] = False
        return result

    async def _failpoint(self, name: str) -> dict[str, Any]:
        """Arm a storage failpoint and wait (at most 10 s) until traffic hits it."""
        armed = await self.node.chaos_failpoint(name, count=1)
        hits = 0
        with trio.move_on_after(10.0):
            while True:
                await trio.sleep(0.2)
                points = await self.node.chaos_failpoints()
                hits = int((points.get(name) or {}).get("hits", 0))
                if hits >= 1:
                    break
        await trio.sleep(SETTLE_S)
        return {"armed": armed, "hits": hits}


# ------------------------------------------------------------------------------------------------
# Database control


class PostgresControl:
    """Drops the node's PostgreSQL connections and restarts the server (``pg_ctlcluster``)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn  # a plain asyncpg DSN: postgresql://user@host:port/db

    async def drop_connections(self, node_pid: int | None) -> dict[str, Any]:
        """``pg_terminate_backend`` for every backend whose client socket the node holds."""
        import psutil  # type: ignore[import-untyped]

        ports: set[int] = set()
        if node_pid is not None:
            proc = psutil.Process(node_pid)
            for conn in proc.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == 5432 and conn.laddr:
                    ports.add(conn.laddr.port)

        async def go() -> list[int]:
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            try:
                rows = await conn.fetch(
                    "SELECT pid, client_port FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                )
                victims = [r["pid"] for r in rows if r["client_port"] in ports]
                for pid in victims:
                    await conn.execute("SELECT pg_terminate_backend($1)", pid)
                return victims
            finally:
                await conn.close()

        victims = await _on_asyncio(go)
        return {"node_sockets": len(ports), "terminated": len(victims)}

    async def restart(self) -> dict[str, Any]:
        version = sorted(os.listdir("/etc/postgresql"))[0]
        t0 = trio.current_time()
        await trio.run_process(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                version,
                "main",
                "restart",
                "-m",
                "fast",
            ],
            capture_stdout=True,
            capture_stderr=True,
        )
        return {"server": f"postgresql {version}", "down_s": round(trio.current_time() - t0, 3)}


class CassandraControl:
    """Restarts the local Cassandra with ``bash .ci/cassandra stop`` / ``start``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port

    async def drop_connections(self, node_pid: int | None) -> dict[str, Any]:
        return {"skipped": "not available on cassandra"}

    async def restart(self) -> dict[str, Any]:
        full = {**os.environ, "PARLEY_CASSANDRA_PORT": str(self.port)}
        t0 = trio.current_time()
        script = str(self.root / ".ci" / "cassandra")
        await trio.run_process(["bash", script, "stop"], env=full, capture_stdout=True)
        await trio.run_process(["bash", script, "start"], env=full, capture_stdout=True)
        return {"server": "cassandra", "down_s": round(trio.current_time() - t0, 3)}


async def _on_asyncio(fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run an asyncio coroutine function (asyncpg) from trio, on storage's asyncio bridge."""
    from storage import AsyncioBridge

    bridge = AsyncioBridge.shared()
    bridge.acquire()
    try:
        return await bridge.run(fn)
    finally:
        bridge.release()
