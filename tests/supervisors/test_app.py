"""run_application: start a tree, stop it in reverse order, report the root's reason."""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio
import pytest

from actors import SHUTDOWN, Actor, Node, Ref, SpawnError
from supervisors import ChildSpec, Strategy, Supervisor, SupervisorFlags, run_application

from ._support import Boom, FailingInit

pytestmark = pytest.mark.anyio


class Noted(Actor):
    """Traps exits and notes its start and its terminate in a list shared with the test."""

    def init(self, name: str, notes: list[Any], crash_after: float | None = None) -> None:
        self.ctx.trap_exit = True
        self.name = name
        self.notes = notes
        notes.append(("started", name))
        if crash_after is not None:
            self.ctx.send_after(crash_after, self.ref, "crash")

    def handle_info(self, message: Any) -> None:
        if message == "crash":
            raise Boom(self.name)

    def terminate(self, reason: object) -> None:
        self.notes.append(("terminated", self.name, reason))


class Signaller(Actor):
    """Sends SIGTERM to its own process after ``delay`` seconds."""

    def init(self, delay: float) -> None:
        self.ctx.send_after(delay, self.ref, "signal")

    def handle_info(self, message: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def noted(name: str, notes: list[Any], crash_after: float | None = None) -> ChildSpec:
    return ChildSpec(id=name, start=Noted, args=(name, notes, crash_after))


def root_spec(children: list[ChildSpec], **flags: Any) -> ChildSpec:
    return ChildSpec(id="root", start=Supervisor, args=(SupervisorFlags(**flags), children))


async def test_stop_event_stops_the_tree_in_reverse_order() -> None:
    notes: list[Any] = []
    stop = anyio.Event()
    seen: list[tuple[Node, Ref]] = []

    def ready(node: Node, root: Ref) -> None:
        seen.append((node, root))
        notes.append("ready")
        stop.set()

    inner = ChildSpec(
        id="inner",
        start=Supervisor,
        args=(SupervisorFlags(Strategy.ONE_FOR_ALL), [noted("x", notes), noted("y", notes)]),
    )
    root = root_spec([noted("a", notes), inner, noted("b", notes)])
    reason = await run_application(root, stop=stop, stop_signals=(), ready=ready)
    assert reason == SHUTDOWN
    assert notes == [
        ("started", "a"),
        ("started", "x"),
        ("started", "y"),
        ("started", "b"),
        "ready",
        ("terminated", "b", SHUTDOWN),
        ("terminated", "y", SHUTDOWN),
        ("terminated", "x", SHUTDOWN),
        ("terminated", "a", SHUTDOWN),
    ]
    ((_node, ref),) = seen
    assert not ref.alive


async def test_returns_when_the_root_gives_up_by_itself() -> None:
    notes: list[Any] = []
    root = root_spec([noted("a", notes), noted("b", notes, crash_after=10)], intensity=0)
    with anyio.fail_after(60):
        reason = await run_application(root, stop=anyio.Event(), stop_signals=())
    assert reason == SHUTDOWN
    assert notes[-1] == ("terminated", "a", SHUTDOWN)


async def test_a_root_that_cannot_start_raises() -> None:
    """Regression: the SpawnError came out wrapped in the node task group's ExceptionGroup."""
    root = ChildSpec(id="root", start=FailingInit, args=("root",))
    with pytest.raises(SpawnError) as caught:
        await run_application(root, stop=anyio.Event(), stop_signals=())
    assert isinstance(caught.value.reason, Boom)


async def test_a_root_that_outlives_its_deadline_is_killed() -> None:
    notes: list[Any] = []
    stop = anyio.Event()

    async def stubborn_root(ctx: Any) -> None:
        ctx.trap_exit = True
        notes.append("started")
        stop.set()
        while True:
            await ctx.receive()

    root = ChildSpec(id="root", start=stubborn_root, shutdown=3.0)
    before = anyio.current_time()
    reason = await run_application(root, stop=stop, stop_signals=())
    assert reason == "killed"
    assert anyio.current_time() - before == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize("anyio_backend", [("trio", {})], indirect=True)
async def test_sigterm_stops_the_tree() -> None:
    """A real SIGTERM to this process, sent by a child once the application runs."""
    notes: list[Any] = []
    root = root_spec([noted("a", notes), ChildSpec(id="signaller", start=Signaller, args=(1.0,))])
    with anyio.fail_after(60):
        reason = await run_application(root, stop_signals=(signal.SIGTERM,))
    assert reason == SHUTDOWN
    assert notes == [("started", "a"), ("terminated", "a", SHUTDOWN)]
