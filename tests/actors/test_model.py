"""A Hypothesis state machine: random spawn/link/monitor/trap_exit/exit/crash sequences against
a small model of Erlang's signal semantics.

Each example runs a node on a blocking portal (trio or asyncio, virtual time); every rule acts
through the runtime's synchronous API, lets the node settle, and then the whole runtime is
compared with the model: who is alive, every link and monitor, each live actor's trap_exit and
the exact multiset of ``Exit``/``Down`` messages it handled, and each dead actor's exit reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import structlog.testing
import trio.testing
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors import Actor, Down, Exit, MonitorRef, NoProcError, Ref, open_node
from tests._virtual_time import VirtualTimeLoop

REASONS = st.sampled_from(["normal", "shutdown", "kill", "custom"])


class Crash(Exception):
    pass


class Probe(Actor):
    """Records every Exit/Down it handles; a cast makes it crash with ``Crash(text)``."""

    def init(self, trap: bool) -> None:
        self.ctx.trap_exit = trap
        self.seen: list[Any] = []

    def handle_info(self, message: Any) -> None:
        self.seen.append(message)

    def handle_cast(self, message: Any) -> None:
        raise Crash(message)


def norm(reason: object) -> object:
    return ("crash", str(reason)) if isinstance(reason, Exception) else reason


def norm_message(message: Any) -> tuple[Any, ...]:
    if isinstance(message, Exit):
        return ("exit", message.ref.pid if message.ref is not None else None, norm(message.reason))
    assert isinstance(message, Down), message
    return ("down", message.monitor.id, message.ref.pid, norm(message.reason))


class Model:
    """Erlang's signal rules for actors spawned in one node, as plain data."""

    def __init__(self) -> None:
        self.alive: set[int] = set()
        self.trap: dict[int, bool] = {}
        self.parent: dict[int, int | None] = {}
        self.links: set[frozenset[int]] = set()
        self.monitors: dict[int, tuple[int, int]] = {}  # monitor id -> (watcher, target)
        self.seen: dict[int, Counter[tuple[Any, ...]]] = {}
        self.reason: dict[int, object] = {}

    def spawn(self, pid: int, parent: int | None, trap: bool, link: bool) -> None:
        self.alive.add(pid)
        self.trap[pid] = trap
        self.parent[pid] = parent
        self.seen[pid] = Counter()
        if link and parent is not None:
            self.links.add(frozenset((pid, parent)))

    def crash(self, pid: int, reason: object) -> None:
        queue: list[Any] = []
        self._die(pid, reason, queue)
        self._propagate(queue)

    def exit_signal(self, target: int, sender: int | None, reason: object, direct: bool) -> None:
        self._propagate([(target, sender, reason, direct)])

    def _propagate(self, queue: list[Any]) -> None:
        while queue:
            target, sender, reason, direct = queue.pop(0)
            if target not in self.alive:
                continue
            if direct and reason == "kill":
                self._die(target, "killed", queue)
            elif self.trap[target]:
                if sender is not None and sender == self.parent[target]:
                    self._die(target, reason, queue)  # a gen_server's parent: terminate
                else:
                    self.seen[target][("exit", sender, reason)] += 1
            elif reason != "normal" or sender == target:
                self._die(target, reason, queue)

    def _die(self, pid: int, reason: object, queue: list[Any]) -> None:
        self.alive.discard(pid)
        self.reason[pid] = reason
        for link in [link for link in self.links if pid in link]:
            self.links.discard(link)
            (other,) = link - {pid}
            queue.append((other, pid, reason, False))
        for mid, (watcher, target) in list(self.monitors.items()):
            if target == pid:
                del self.monitors[mid]
                if watcher in self.alive:
                    self.seen[watcher][("down", mid, pid, reason)] += 1
            elif watcher == pid:
                del self.monitors[mid]


class SignalMachine(RuleBasedStateMachine):
    backend = "trio"

    def __init__(self) -> None:
        super().__init__()
        options: dict[str, Any] = (
            {"clock": trio.testing.MockClock(autojump_threshold=0)}
            if self.backend == "trio"
            else {"loop_factory": VirtualTimeLoop}
        )
        self._portal_cm = start_blocking_portal(self.backend, options)
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self._node_cm = self.portal.wrap_async_context_manager(open_node())
        self.node = self._node_cm.__enter__()
        self.refs: list[Ref] = []
        self.mrefs: list[tuple[int, MonitorRef]] = []  # (watcher, monitor)
        self.model = Model()

    def teardown(self) -> None:
        self._node_cm.__exit__(None, None, None)
        self._portal_cm.__exit__(None, None, None)

    # -- helpers --

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        result = self.portal.call(fn, *args)
        self.portal.call(anyio.sleep, 0.01)  # virtual time: runs until every actor is idle
        return result

    def pick_alive(self, data: st.DataObject) -> Ref:
        return data.draw(st.sampled_from([r for r in self.refs if r.pid in self.model.alive]))

    def pick_any(self, data: st.DataObject) -> Ref:
        return data.draw(st.sampled_from(self.refs))

    def any_alive(self) -> bool:
        return bool(self.model.alive)

    # -- rules --

    @rule(trap=st.booleans())
    def spawn(self, trap: bool) -> None:
        ref = self.run(lambda: self.node.spawn(Probe, trap))
        self.refs.append(ref)
        self.model.spawn(ref.pid, None, trap, link=False)

    @precondition(any_alive)
    @rule(data=st.data(), trap=st.booleans(), link=st.booleans())
    def spawn_child(self, data: st.DataObject, trap: bool, link: bool) -> None:
        parent = self.pick_alive(data)
        ctx = self.node.context(parent)
        spawn = ctx.spawn_link if link else ctx.spawn
        ref = self.run(lambda: spawn(Probe, trap))
        self.refs.append(ref)
        self.model.spawn(ref.pid, parent.pid, trap, link)

    @precondition(any_alive)
    @rule(data=st.data())
    def link(self, data: st.DataObject) -> None:
        a = self.pick_alive(data)
        b = self.pick_any(data)
        model = self.model
        if b.pid in model.alive:
            self.run(lambda: self.node.context(a).link(b))
            if a != b:
                model.links.add(frozenset((a.pid, b.pid)))
        elif model.trap[a.pid]:
            self.run(lambda: self.node.context(a).link(b))
            model.seen[a.pid][("exit", b.pid, "noproc")] += 1
        else:
            with pytest.raises(NoProcError):
                self.run(lambda: self.node.context(a).link(b))

    @precondition(any_alive)
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        a = self.pick_alive(data)
        b = self.pick_any(data)
        self.run(lambda: self.node.context(a).unlink(b))
        self.model.links.discard(frozenset((a.pid, b.pid)))

    @precondition(any_alive)
    @rule(data=st.data())
    def monitor(self, data: st.DataObject) -> None:
        a = self.pick_alive(data)
        b = self.pick_any(data)
        mref = self.run(lambda: self.node.context(a).monitor(b))
        self.mrefs.append((a.pid, mref))
        if b.pid in self.model.alive:
            self.model.monitors[mref.id] = (a.pid, b.pid)
        else:
            self.model.seen[a.pid][("down", mref.id, b.pid, "noproc")] += 1

    @precondition(lambda self: any(w in self.model.alive for w, _ in self.mrefs))
    @rule(data=st.data(), flush=st.booleans())
    def demonitor(self, data: st.DataObject, flush: bool) -> None:
        watcher, mref = data.draw(
            st.sampled_from([(w, m) for w, m in self.mrefs if w in self.model.alive])
        )
        ref = next(r for r in self.refs if r.pid == watcher)
        active = self.run(lambda: self.node.context(ref).demonitor(mref, flush=flush))
        assert active == (mref.id in self.model.monitors)
        self.model.monitors.pop(mref.id, None)

    @precondition(any_alive)
    @rule(data=st.data(), trap=st.booleans())
    def trap_exit(self, data: st.DataObject, trap: bool) -> None:
        a = self.pick_alive(data)

        def set_trap() -> None:
            self.node.context(a).trap_exit = trap

        self.run(set_trap)
        self.model.trap[a.pid] = trap

    @precondition(lambda self: bool(self.refs))
    @rule(data=st.data(), reason=REASONS)
    def exit_from_outside(self, data: st.DataObject, reason: str) -> None:
        target = self.pick_any(data)
        self.run(self.node.exit, target, reason)
        self.model.exit_signal(target.pid, None, reason, direct=True)

    @precondition(any_alive)
    @rule(data=st.data(), reason=REASONS)
    def exit_from_actor(self, data: st.DataObject, reason: str) -> None:
        sender = self.pick_alive(data)
        target = self.pick_any(data)
        self.run(lambda: self.node.context(sender).exit(target, reason))
        self.model.exit_signal(target.pid, sender.pid, reason, direct=True)

    @precondition(lambda self: bool(self.refs))
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        target = self.pick_any(data)
        self.run(target.cast, f"boom {target.pid}")
        if target.pid in self.model.alive:
            self.model.crash(target.pid, ("crash", f"boom {target.pid}"))

    # -- the comparison --

    @invariant()
    def runtime_matches_model(self) -> None:
        model = self.model
        for ref in self.refs:
            pid = ref.pid
            assert ref.alive == (pid in model.alive), (ref, model.reason.get(pid))
            if pid not in model.alive:
                assert norm(ref._ctx.exit_reason) == norm(model.reason[pid]), ref
                continue
            info = self.node.context(ref).info()
            links = {r.pid for r in info.links}
            assert links == {p for link in model.links if pid in link for p in link - {pid}}
            assert info.trap_exit == model.trap[pid]
            assert sorted(r.pid for r in info.monitors) == sorted(
                t for w, t in model.monitors.values() if w == pid
            )
            assert sorted(r.pid for r in info.monitored_by) == sorted(
                w for w, t in model.monitors.values() if t == pid
            )
            seen = Counter(norm_message(m) for m in self.node.context(ref).behaviour.seen)
            expected = Counter(
                {(k[0], *k[1:-1], norm(k[-1])): n for k, n in model.seen[pid].items()}
            )
            assert seen == expected, ref


SETTINGS = settings(
    max_examples=50,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TrioSignals(SignalMachine):
    backend = "trio"


class AsyncioSignals(SignalMachine):
    backend = "asyncio"


def _run(machine: type[SignalMachine]) -> None:
    with structlog.testing.capture_logs():  # crash logs are expected; keep them quiet
        machine.TestCase.settings = SETTINGS
        machine.TestCase().runTest()


def test_signal_semantics_on_trio() -> None:
    _run(TrioSignals)


def test_signal_semantics_on_asyncio() -> None:
    _run(AsyncioSignals)
