"""One chaos run, end to end: a real node, the clients, the nemesis, the storage dump, the
checker.

Phases (each a mark in ``history.jsonl``):

1. set-up: start ``parley serve`` on a fresh data directory (and a fresh PostgreSQL schema or
   Cassandra keyspace), record the observer's baseline (``node_stats`` ``baseline``), connect
   every device, create the conversations;
2. chaos (``duration`` seconds): the devices run their random operations while the nemesis
   injects its seeded schedule and the observer samples the node every few seconds;
3. quiet: faults have stopped (``quiet``); every device reconnects if it must, sends ``sync``
   with its cursors and keeps going for :data:`QUIET_S` seconds without membership changes;
   the devices connected then are ``online``;
4. final (``final``): the workload stops; every user reads each of its conversations whole;
   the devices report their raw redeliveries and close; once conversations passivated, the
   observer's ``node_stats`` ``end``; the node is stopped with SIGTERM and the storage is read
   straight from the database (``storage_dump``, ``members``);
5. the checker (``python -m tests.chaos.checker RUN_DIR``) writes ``results.json``; the run
   exits with its code (0 valid, 1 invalid, 2 unknown).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from storage import ShardedStorage, sqlite_shard_urls

from ._history import HISTORY_FILE, HistoryWriter
from .nemesis import CassandraControl, Nemesis, PostgresControl, make_schedule
from .node import NodeControl, NodeDown, PausableProxy, supervisors
from .workload import Device, SlowConsumer, World, create_conversations, make_plan

ROOT: Final = Path(__file__).resolve().parents[2]
#: Seconds of traffic after the faults stopped, before the final reads.
QUIET_S: Final = 8.0
#: Seconds within which an online device must get a message once the faults stopped.
DELIVERY_BOUND_S: Final = 10.0
#: Seconds within which a killed actor must be back (a gateway or connections supervisor waits
#: for its connections to shut down first: up to about 6 s, docs/inspector.md).
RESTART_BOUND_S: Final = 10.0
#: Seconds the chaos phase may run past its duration for the schedule's last faults.
OVERRUN_S: Final = 20.0
#: Seconds between the observer's samples of the node.
SAMPLE_EVERY_S: Final = 5.0
#: Seconds to wait for the node's actors to return to their baseline at the end.
SETTLE_END_S: Final = 30.0
#: Storage shards of the node under test (two, so a storage kill leaves the other running).
SHARDS: Final = 2
POSTGRES: Final = os.environ.get(
    "PARLEY_TEST_POSTGRES", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)
CASSANDRA: Final = os.environ.get("PARLEY_TEST_CASSANDRA", "127.0.0.1:9042")
BACKENDS: Final = ("sqlite", "postgresql", "cassandra")


@dataclass
class RunConfig:
    backend: str
    duration: float
    seed: int
    out: Path
    clients: int = 12
    only: frozenset[str] | None = None  # fault kinds to keep (None: all that apply)
    extra_env: dict[str, str] = field(default_factory=dict)


def node_env(url: str | None) -> dict[str, str]:
    """The node's settings: a rate limit far above the workload's, conversations that
    passivate after 3 s, a small outgoing queue (so a slow consumer is cut off quickly), two
    storage shards, no metrics port (runs may overlap), JSON logs."""
    env = {
        "PARLEY_LIMITS__SEND_RATE": "600000",
        "PARLEY_LIMITS__SEND_BURST": "100000",
        "PARLEY_LIMITS__CONVERSATION_IDLE": "3",
        "PARLEY_LIMITS__OUTGOING_QUEUE": "128",
        "PARLEY_STORAGE__SHARDS": str(SHARDS),
        "PARLEY_METRICS__ENABLED": "false",
        "PARLEY_SERVER__LOG_FORMAT": "json",
    }
    if url is not None:
        env["PARLEY_STORAGE__URL"] = url
    return env


class Database:
    """The run's own database: a PostgreSQL schema or a Cassandra keyspace (dropped at the
    end), or nothing for SQLite (files in the data directory)."""

    def __init__(self, backend: str, seed: int) -> None:
        self.backend = backend
        self.name = f"chaos_{seed}_{secrets.token_hex(4)}"
        self.url: str | None = None
        self.control: Any = None
        if backend == "postgresql":
            sep = "&" if "?" in POSTGRES else "?"
            self.url = f"{POSTGRES}{sep}schema={self.name}"
            self.control = PostgresControl(POSTGRES.split("?")[0].replace("+asyncpg", ""))
        elif backend == "cassandra":
            self.url = f"cassandra://{CASSANDRA}/{self.name}?protocol_version=3"
            self.control = CassandraControl(ROOT, int(CASSANDRA.rsplit(":", 1)[1]))
        elif backend != "sqlite":
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")

    def shard_urls(self, data_dir: Path) -> list[str]:
        if self.url is None:
            return sqlite_shard_urls(data_dir, SHARDS)
        return [self.url] * SHARDS

    async def drop(self) -> None:
        if self.backend == "postgresql":
            from tests.storage.conftest import drop_postgres_schema

            await drop_postgres_schema(self.name)
        elif self.backend == "cassandra":
            from tests.storage.conftest import drop_cassandra_keyspace

            await trio.to_thread.run_sync(drop_cassandra_keyspace, self.name)


class Barrier:
    """``n`` tasks arrive; :meth:`wait` returns once all have."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.done = trio.Event()
        if n <= 0:
            self.done.set()

    def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.done.set()

    async def wait(self) -> None:
        await self.done.wait()


@dataclass
class Phases:
    devices: int
    connected: Barrier = field(init=False)
    go: trio.Event = field(default_factory=trio.Event)
    stop_chaos: trio.Event = field(default_factory=trio.Event)
    quiet: trio.Event = field(default_factory=trio.Event)
    stop_quiet: trio.Event = field(default_factory=trio.Event)
    quiet_done: Barrier = field(init=False)
    final: trio.Event = field(default_factory=trio.Event)
    read_done: Barrier = field(init=False)
    close: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.connected = Barrier(self.devices)
        self.quiet_done = Barrier(self.devices)
        self.read_done = Barrier(self.devices)


class Harness:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        out = config.out
        out.mkdir(parents=True, exist_ok=True)
        self.history = HistoryWriter(out / HISTORY_FILE)
        self.db = Database(config.backend, config.seed)
        self.env = {**node_env(self.db.url), **config.extra_env}
        self.node = NodeControl(out / "data", self.env, out / "node.log")
        self.world = World(self.history, lambda: self.node.url, self.node.token)
        self.plan = make_plan(config.seed, config.clients)
        self.world.users = list(self.plan.users)
        self.devices: list[Device] = []
        for index, (user, device) in enumerate(self.plan.devices):
            self.devices.append(Device(self.world, index, user, device, config.seed))
        n = len(self.devices)
        self.proxy = PausableProxy(lambda: self.node.port)
        self.sloth = Device(
            self.world,
            n,
            "sloth",
            "d0",
            config.seed,
            url=lambda: f"ws://127.0.0.1:{self.proxy.port}/ws",
        )
        self.flooder = Device(self.world, n + 1, "flood", "d0", config.seed)
        self.slow = SlowConsumer(self.sloth, self.flooder, self.proxy)
        self.node_lock = trio.Lock()
        self.notes: list[str] = []
        self._log_offset = 0

    # ------------------------------------------------------------------------------------------
    # The observer

    async def node_stats(self, phase: str) -> dict[str, Any] | None:
        """Record one ``node_stats`` event (None when the node could not be asked)."""
        node = self.node
        try:
            stats = await node.stats()
            tree = await node.tree()
            top = await node.top_mailbox()
        except (NodeDown, OSError, Exception) as exc:  # the node may be down or paused
            self.notes.append(f"node_stats {phase}: {type(exc).__name__}: {exc}")
            return None
        high, high_pid = 0, None
        stack = [tree]
        while stack:
            item = stack.pop()
            if item.get("mailbox_high_water_mark", 0) > high:
                high, high_pid = item["mailbox_high_water_mark"], item.get("pid")
            stack.extend(item.get("children", []))
        current = int(top["mailbox"]) if top else 0
        capacity = None
        probe = high_pid if high_pid is not None else (top or {}).get("pid")
        if probe is not None:
            with contextlib.suppress(Exception):
                info = await node.admin("info", ref=probe)
                capacity = info["mailbox"]["capacity"]
        value = {
            "phase": phase,
            "actors": stats["actors"]["total"],
            "by_kind": {
                "connections": stats["connections"],
                "sessions": stats["sessions"],
                "conversations": stats["conversations"],
                **stats["actors"]["by_behaviour"],
            },
            "max_mailbox": max(current, high),
            "mailbox_now": current,
            "mailbox_capacity": capacity,
            "restarts": {sid: s.get("restarts", 0) for sid, s in supervisors(tree).items()},
            "restarts_total": stats.get("restarts_total"),
            "dead_letters": stats.get("dead_letters", {}).get("total"),
        }
        self.history.event("observer", "node_stats", value)
        return value

    async def observe(self, stop: trio.Event) -> None:
        """Sample the node every few seconds; restart it if it died on its own."""
        while not stop.is_set():
            with trio.move_on_after(SAMPLE_EVERY_S):
                await stop.wait()
            if stop.is_set():
                return
            async with self.node_lock:
                if not self.node.alive():
                    await self._node_died()
                    continue
                await self.node_stats("sample")

    async def _node_died(self) -> None:
        code = self.node.exit_code()
        self.history.event("observer", "node_exit", {"code": code, "expected": False})
        self.notes.append(f"the node exited by itself with {code}; restarted")
        await trio.to_thread.run_sync(self.node.start)

    def closed_4008(self) -> bool:
        """Whether the node's log says it closed the slow consumer with 4008 since the last
        slow-consumer fault began."""
        try:
            with self.node.log_path.open("rb") as log:
                log.seek(self._log_offset)
                data = log.read()
        except OSError:
            return False
        return any(b"4008" in line and b"sloth" in line for line in data.splitlines())

    async def slow_consumer(self) -> dict[str, Any]:
        with contextlib.suppress(OSError):
            self._log_offset = self.node.log_path.stat().st_size
        return await self.slow.run(self.closed_4008)

    # ------------------------------------------------------------------------------------------
    # Devices

    async def device_task(self, dev: Device, phases: Phases, *, passive: bool) -> None:
        async with dev.open():
            phases.connected.arrive()
            await phases.go.wait()
            if passive:
                await dev.run_passive(phases.stop_chaos)
            else:
                await dev.run(phases.stop_chaos)
            await phases.quiet.wait()
            if await dev.ensure_connected():
                await dev.sync()
            if passive:
                await dev.run_passive(phases.stop_quiet)
            else:
                await dev.run(phases.stop_quiet, membership=False)
            phases.quiet_done.arrive()
            await phases.final.wait()
            if dev.device == "d0":
                await self.final_reads(dev)
            assert dev.client is not None
            stats = dev.client.statistics()
            self.history.event(
                dev.process,
                "redeliveries",
                {"user": dev.user, "device": dev.device, "count": stats.duplicates_dropped},
            )
            phases.read_done.arrive()
            await phases.close.wait()

    async def final_reads(self, dev: Device) -> None:
        """The user reads every conversation it is a member of, whole."""
        assert dev.client is not None
        await dev.ensure_connected()
        convs: list[str]
        try:
            convs = sorted(c.conv for c in await dev.client.convs())
        except Exception:
            convs = self.world.convs_of(dev.user)
        for conv in convs:
            await dev.read_history(conv)

    # ------------------------------------------------------------------------------------------
    # The run

    async def run(self) -> int:
        config = self.config
        schedule = make_schedule(config.seed, config.duration, config.backend, only=config.only)
        self.history.event(
            "observer",
            "run",
            {
                "seed": config.seed,
                "backend": config.backend,
                "duration": config.duration,
                "clients": len(self.plan.users),
                "devices": len(self.devices) + 2,
                "settings": self.env,
                "delivery_bound_s": DELIVERY_BOUND_S,
                "restart_bound_s": RESTART_BOUND_S,
                "schedule": [[f.at, f.kind] for f in schedule],
            },
        )
        failed: str | None = None
        try:
            await trio.to_thread.run_sync(self.node.start)
            await self.node_stats("baseline")
            await self._traffic(schedule)
            await self._settle_and_stop()
            await self._dump_storage()
        except Exception:  # the run broke: judge what was recorded, but never call it valid
            failed = traceback.format_exc()
            self.notes.append(f"the harness failed: {failed}")
            print(failed, file=sys.stderr)
        finally:
            self.node.kill()
            self.history.close()
            with contextlib.suppress(Exception):
                await self.db.drop()
        code = self.check()
        return code if failed is None or code == 1 else 2

    async def _traffic(self, schedule: list[Any]) -> None:
        config = self.config
        everyone = [*self.devices, self.sloth, self.flooder]
        phases = Phases(len(everyone))
        nemesis = Nemesis(
            self.node,
            self.history,
            config.seed,
            backend=config.backend,
            root=ROOT,
            slow_consumer=self.slow_consumer,
            db=self.db.control,
            lock=self.node_lock,
        )
        self.nemesis = nemesis
        observer_stop = trio.Event()
        async with trio.open_nursery() as outer:
            await outer.start(self.proxy.serve)
            await self._phases(phases, nemesis, observer_stop, schedule)
            outer.cancel_scope.cancel()

    async def _phases(
        self, phases: Phases, nemesis: Nemesis, observer_stop: trio.Event, schedule: list[Any]
    ) -> None:
        config = self.config
        everyone = [*self.devices, self.sloth, self.flooder]
        async with trio.open_nursery() as nursery:
            for dev in self.devices:
                nursery.start_soon(
                    lambda d=dev: self.device_task(d, phases, passive=False)  # type: ignore[misc]
                )
            nursery.start_soon(lambda: self.device_task(self.sloth, phases, passive=True))
            nursery.start_soon(lambda: self.device_task(self.flooder, phases, passive=True))
            with trio.fail_after(120):
                await phases.connected.wait()
            await create_conversations(self.plan, self.devices)
            await self.slow.setup()
            phases.go.set()
            nursery.start_soon(self.observe, observer_stop)

            chaos_done = trio.Event()
            faults_stop = trio.Event()

            async def run_faults() -> None:
                await nemesis.run(schedule, faults_stop)
                chaos_done.set()

            nursery.start_soon(run_faults)
            # The chaos phase lasts `duration`, or until the schedule is through (faults that
            # took longer than planned push the later ones back), at most OVERRUN_S more.
            await trio.sleep(config.duration)
            with trio.move_on_after(OVERRUN_S):
                await chaos_done.wait()
            faults_stop.set()
            with trio.fail_after(180):
                await chaos_done.wait()
            phases.stop_chaos.set()
            async with self.node_lock:
                if not self.node.alive():
                    await self._node_died()
            self.world.chaos = False
            self.history.event("nemesis", "quiet", {})
            phases.quiet.set()
            await trio.sleep(QUIET_S)
            phases.stop_quiet.set()
            with trio.fail_after(120):
                await phases.quiet_done.wait()
            for dev in everyone:
                if dev.connected and dev.up_since is not None and not dev.is_down():
                    self.history.event(
                        "observer",
                        "online",
                        {"user": dev.user, "device": dev.device, "since": round(dev.up_since, 6)},
                    )
            self.history.event("nemesis", "final", {})
            phases.final.set()
            with trio.fail_after(600):
                await phases.read_done.wait()
            observer_stop.set()
            phases.close.set()

    async def _settle_and_stop(self) -> None:
        """Wait for the node's per-user actors and conversations to go, record the end stats,
        stop the node gracefully."""
        with trio.move_on_after(SETTLE_END_S):
            while True:
                with contextlib.suppress(Exception):
                    stats = await self.node.stats()
                    if stats["connections"] == stats["sessions"] == stats["conversations"] == 0:
                        break
                await trio.sleep(0.5)
        await trio.sleep(0.5)
        await self.node_stats("end")
        code = await trio.to_thread.run_sync(self.node.stop)
        self.history.event("observer", "node_stop", {"signal": "SIGTERM", "code": code})

    async def _dump_storage(self) -> None:
        """Every stored message and membership, read from the database with the node down."""
        urls = self.db.shard_urls(self.node.data_dir)
        users = [*self.plan.users, self.sloth.user, self.flooder.user]
        store = ShardedStorage.from_urls(urls)
        await store.open()
        try:
            convs = set(self.world.convs)
            for user in users:
                for uc in await store.for_user(user).user_conversations(user):
                    convs.add(uc.conv)
            for conv in sorted(convs):
                backend = store.for_conv(conv)
                messages: list[list[Any]] = []
                after = 0
                while True:
                    page = await backend.messages_after(conv, after, 1000)
                    messages.extend([m.seq, m.id, m.sender, m.cmid] for m in page)
                    if len(page) < 1000:
                        break
                    after = page[-1].seq
                self.history.event("observer", "storage_dump", {"conv": conv, "messages": messages})
                record = await backend.get_conversation(conv)
                members = sorted(record.members) if record is not None else []
                admins = sorted(record.admins) if record is not None else []
                self.history.event(
                    "observer", "members", {"conv": conv, "members": members, "admins": admins}
                )
        finally:
            await store.aclose()

    def check(self) -> int:
        """Run the checker on the run directory; its exit code."""
        out = self.config.out
        summary = {
            "faults_injected": self.nemesis.injected if hasattr(self, "nemesis") else {},
            "nemesis_errors": self.nemesis.errors if hasattr(self, "nemesis") else [],
            "notes": self.notes,
        }
        (out / "harness.json").write_text(json.dumps(summary, indent=2) + "\n")
        proc = subprocess.run(
            [sys.executable, "-m", "tests.chaos.checker", str(out)],
            cwd=ROOT,
            check=False,
        )
        return proc.returncode


def run(config: RunConfig) -> int:
    """One run (blocks); the checker's exit code: 0 valid, 1 invalid, 2 unknown."""
    harness = Harness(config)
    return trio.run(harness.run)
