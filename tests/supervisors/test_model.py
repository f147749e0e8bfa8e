"""A stateful property test of supervision trees against a model (the idea of ferd/sups).

Hypothesis builds a random tree (a static root; static and dynamic supervisors below it, with
random strategies, intensities, periods and restart types; workers), then applies random
failures: a worker killed, crashed through a call or stopped normally, a supervisor killed,
dynamic children added, virtual time passing. After each step the real tree is walked with
``which_children`` until it is quiescent, and compared with the model: the same children exist,
exactly the ones the model restarted have new refs, and a supervisor gives up (escalates)
exactly when the model says so. Each example runs in a fresh node behind a blocking portal.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import trio.testing
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from actors import KILL, CallError, Context, Node, NoProcError, Ref, open_node
from supervisors import (
    ChildSpec,
    DynamicSupervisor,
    Restart,
    Strategy,
    Supervisor,
    SupervisorFlags,
    start_child,
    which_children,
)
from tests._virtual_time import VirtualTimeLoop

from ._support import Worker

Path = tuple[str, ...]

# -- blueprints (what Hypothesis draws) --


@dataclass(frozen=True)
class WorkerBP:
    restart: Restart


@dataclass(frozen=True)
class DynamicBP:
    intensity: int
    period: float
    initial: int
    restart: Restart


@dataclass(frozen=True)
class StaticBP:
    strategy: Strategy
    intensity: int
    period: float
    children: tuple[Any, ...]
    restart: Restart = Restart.PERMANENT


intensities = st.sampled_from([0, 1, 1, 2, 3, 100])
periods = st.sampled_from([1.0, 5.0, 30.0])
restarts = st.sampled_from([Restart.PERMANENT, Restart.PERMANENT, Restart.TRANSIENT])
workers = st.builds(WorkerBP, restarts)
dynamics = st.builds(DynamicBP, intensities, periods, st.integers(0, 3), restarts)


def statics(children: st.SearchStrategy[Any], *, root: bool = False) -> st.SearchStrategy[Any]:
    return st.builds(
        StaticBP,
        st.sampled_from(Strategy),
        st.sampled_from([1, 2, 3, 100]) if root else intensities,
        periods,
        st.lists(children, min_size=2 if root else 1, max_size=4).map(tuple),
        restarts if not root else st.just(Restart.PERMANENT),
    )


leaf_supervisors = statics(st.one_of(workers, dynamics))
trees = statics(st.one_of(workers, workers, dynamics, leaf_supervisors), root=True)


def child_id(index: int, bp: Any) -> str:
    prefix = {WorkerBP: "w", DynamicBP: "d", StaticBP: "s"}[type(bp)]
    return f"{prefix}{index}"


def dynamic_child_spec() -> ChildSpec:
    return ChildSpec(id="dw", start=Worker, args=("dw", None, False))


def spec_of(index: int, bp: Any) -> ChildSpec:
    cid = child_id(index, bp)
    if isinstance(bp, WorkerBP):
        return ChildSpec(id=cid, start=Worker, args=(cid, None, False), restart=bp.restart)
    if isinstance(bp, DynamicBP):
        flags = SupervisorFlags(intensity=bp.intensity, period=bp.period)
        return ChildSpec(
            id=cid,
            start=DynamicSupervisor,
            args=(flags, dynamic_child_spec()),
            restart=bp.restart,
        )
    return ChildSpec(id=cid, start=Supervisor, args=static_args(bp), restart=bp.restart)


def static_args(bp: StaticBP) -> tuple[SupervisorFlags, list[ChildSpec]]:
    flags = SupervisorFlags(bp.strategy, intensity=bp.intensity, period=bp.period)
    return flags, [spec_of(i, child) for i, child in enumerate(bp.children)]


# -- the model --

_tokens = itertools.count(1)


@dataclass
class MNode:
    """One child in the model: a token that changes on every (re)start; None when stopped."""

    bp: Any
    token: int | None = None
    children: dict[str, MNode] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.token = next(_tokens)
        self.restarts = []
        self.children = {}
        if isinstance(self.bp, StaticBP):
            for i, bp in enumerate(self.bp.children):
                child = MNode(bp)
                child.start()
                self.children[child_id(i, bp)] = child

    def stop(self) -> None:
        self.token = None
        self.children = {}

    def walk(self, path: Path) -> Iterator[tuple[Path, MNode]]:
        yield path, self
        for key, child in self.children.items():
            yield from child.walk((*path, key))


class Model:
    def __init__(self, blueprint: StaticBP) -> None:
        self.root = MNode(blueprint)
        self.root.start()
        self.root_alive = True

    def find(self, path: Path) -> MNode:
        node = self.root
        for key in path:
            node = node.children[key]
        return node

    def snapshot(self) -> dict[Path, int | None]:
        return {path: node.token for path, node in self.root.walk(())}

    def exited(self, path: Path, clean: bool, now: float) -> None:
        """The child at ``path`` exited (clean: ``normal``/``shutdown``)."""
        if not path:
            self.root.stop()
            self.root_alive = False
            return
        sup = self.find(path[:-1])
        key = path[-1]
        child = sup.children[key]
        child.stop()
        if isinstance(sup.bp, DynamicBP):
            if clean and child.bp.restart is Restart.TRANSIENT:
                del sup.children[key]
                return
        elif clean and child.bp.restart is Restart.TRANSIENT:
            return
        # OTP's add_restart: a sliding window (now - period, now].
        sup.restarts = [t for t in sup.restarts if t > now - sup.bp.period] + [now]
        if len(sup.restarts) > sup.bp.intensity:
            self.exited(path[:-1], True, now)  # it gives up: exits "shutdown"
            return
        if isinstance(sup.bp, DynamicBP):
            child.start()
            return
        keys = list(sup.children)
        if sup.bp.strategy is Strategy.ONE_FOR_ONE:
            group = [key]
        elif sup.bp.strategy is Strategy.ONE_FOR_ALL:
            group = keys
        else:
            group = keys[keys.index(key) :]
        for member in group:
            sup.children[member].start()


# -- the real tree --


async def walk(root: Ref) -> dict[Path, Ref | None]:
    found: dict[Path, Ref | None] = {(): root}

    async def visit(sup: Ref, path: Path) -> None:
        for info in await which_children(sup):
            if isinstance(info.id, Ref):  # a dynamic child: named by its extra argument
                assert info.ref is not None
                _, (name,) = await info.ref.call("whoami", timeout=None)
                found[(*path, name)] = info.ref
                continue
            child_path = (*path, info.id)
            found[child_path] = info.ref
            if info.type == "supervisor" and info.ref is not None:
                await visit(info.ref, child_path)

    await visit(root, ())
    return found


async def settle(root: Ref) -> dict[Path, Ref | None] | None:
    """Walk the tree until two walks agree (every supervisor answered after handling the exits
    queued for it); None once the root has exited."""
    previous = None
    for _ in range(200):
        if not root.alive:
            return None
        try:
            current = await walk(root)
        except (CallError, NoProcError):
            previous = None
            continue
        if current == previous:
            return current
        previous = current
    raise AssertionError("the tree did not settle")


class SupervisionMachine(RuleBasedStateMachine):
    backend = "trio"

    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        options: dict[str, Any] = (
            {"clock": trio.testing.MockClock(autojump_threshold=0)}
            if self.backend == "trio"
            else {"loop_factory": VirtualTimeLoop}
        )
        self.portal: BlockingPortal = self.stack.enter_context(
            start_blocking_portal(self.backend, options)
        )
        self.node: Node = self.stack.enter_context(
            self.portal.wrap_async_context_manager(open_node())
        )
        self.log: Context = self.portal.call(self.node.inbox)
        self.names = itertools.count()
        self.blueprint: StaticBP | None = None
        self.model: Model | None = None
        self.refs: dict[Path, Ref | None] = {}
        self.tokens: dict[Path, int | None] = {}

    def teardown(self) -> None:
        self.stack.close()

    # -- helpers --

    def run(self, fn: Any, *args: Any) -> Any:
        return self.portal.call(fn, *args)

    def build(self) -> None:
        assert self.blueprint is not None
        self.model = Model(self.blueprint)
        initial: list[tuple[Path, int]] = [
            (path, node.bp.initial)
            for path, node in self.model.root.walk(())
            if isinstance(node.bp, DynamicBP)
        ]

        async def start() -> Ref:
            root = await self.log.start_link(Supervisor, *static_args(self.blueprint))
            return root

        self.root = self.run(start)
        refs = self.run(settle, self.root)
        for path, count in initial:
            for _ in range(count):
                self.add_dynamic_child(path, refs[path])
        self.check()

    def add_dynamic_child(self, path: Path, sup: Ref | None) -> None:
        assert self.model is not None
        assert sup is not None
        name = f"n{next(self.names)}"
        self.run(start_child, sup, name)
        child = MNode(WorkerBP(Restart.PERMANENT))
        child.start()
        self.model.find(path).children[name] = child

    def check(self) -> None:
        """Compare the settled tree with the model, and what changed since the last check."""
        assert self.model is not None
        before_refs, before_tokens = self.refs, self.tokens
        refs = self.run(settle, self.root)
        if not self.model.root_alive:
            assert refs is None, "the model gave up at the root, the tree did not"
            assert self.run(self.node.wait_exit, self.root) == "shutdown"
            self.refs, self.tokens = {}, {}
            return
        assert refs is not None, "the root gave up, the model did not"
        tokens = self.model.snapshot()
        assert set(refs) == set(tokens)
        for path, token in tokens.items():
            assert (refs[path] is None) == (token is None), path
            if path in before_tokens:
                model_restarted = before_tokens[path] != token
                real_restarted = before_refs.get(path) is not refs[path]
                assert model_restarted == real_restarted, path
        self.refs, self.tokens = refs, tokens

    def running(self, kind: type) -> list[Path]:
        assert self.model is not None
        return sorted(
            path
            for path, node in self.model.root.walk(())
            if path and isinstance(node.bp, kind) and node.token is not None
        )

    def fail(self, path: Path, clean: bool) -> None:
        assert self.model is not None
        now = self.run(self.node.now)
        self.model.exited(path, clean, now)
        self.check()
        assert self.run(self.node.now) == now  # restarts all happened at that instant

    # -- rules --

    @initialize(blueprint=trees)
    def start_tree(self, blueprint: StaticBP) -> None:
        self.blueprint = blueprint
        self.build()

    @precondition(lambda self: self.model is not None and self.model.root_alive)
    @rule(data=st.data(), how=st.sampled_from(["kill", "crash", "normal"]))
    def worker_exits(self, data: st.DataObject, how: str) -> None:
        candidates = self.running(WorkerBP)
        if not candidates:
            return
        path = data.draw(st.sampled_from(candidates))
        ref = self.refs[path]
        assert ref is not None

        async def act() -> None:
            if how == "kill":
                self.node.exit(ref, KILL)
            elif how == "crash":
                with pytest.raises(CallError):
                    await ref.call("crash", timeout=None)
            else:
                await ref.call(("stop", "normal"), timeout=None)
            await self.node.wait_exit(ref)

        self.run(act)
        self.fail(path, clean=how == "normal")

    @precondition(lambda self: self.model is not None and self.model.root_alive)
    @rule(data=st.data())
    def supervisor_killed(self, data: st.DataObject) -> None:
        candidates = self.running(StaticBP) + self.running(DynamicBP)
        if not candidates:
            return
        path = data.draw(st.sampled_from(sorted(candidates)))
        ref = self.refs[path]
        assert ref is not None

        async def act() -> None:
            self.node.exit(ref, KILL)
            await self.node.wait_exit(ref)

        self.run(act)
        self.fail(path, clean=False)

    @precondition(lambda self: self.model is not None and self.model.root_alive)
    @rule(data=st.data())
    def dynamic_child_added(self, data: st.DataObject) -> None:
        candidates = self.running(DynamicBP)
        if not candidates:
            return
        path = data.draw(st.sampled_from(candidates))
        self.add_dynamic_child(path, self.refs[path])
        self.check()

    @precondition(lambda self: self.model is not None and self.model.root_alive)
    @rule(seconds=st.sampled_from([0.5, 3.0, 20.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(anyio.sleep, seconds)
        self.check()

    @precondition(lambda self: self.model is not None and not self.model.root_alive)
    @rule()
    def restart_the_application(self) -> None:
        self.build()

    @invariant()
    def nothing_else_restarts(self) -> None:
        if self.model is not None and self.model.root_alive:
            assert self.run(settle, self.root) == self.refs


class AsyncioSupervisionMachine(SupervisionMachine):
    backend = "asyncio"


@pytest.mark.parametrize("machine", [SupervisionMachine, AsyncioSupervisionMachine])
def test_supervision_trees_match_the_model(machine: type[SupervisionMachine]) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=40,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
