"""Stopping children: polite shutdown, deadline then kill, brutal_kill, infinity, order."""

from __future__ import annotations

import math

import pytest

from actors import KILLED, SHUTDOWN, open_node
from supervisors import (
    BRUTAL_KILL,
    INFINITY,
    ChildSpec,
    Supervisor,
    SupervisorFlags,
    terminate_child,
    which_children,
)

from ._support import SlowStop, exit_of, no_more, started, stubborn, terminated, worker

pytestmark = pytest.mark.anyio


async def test_a_child_that_ignores_shutdown_is_killed_after_its_deadline() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            spec = ChildSpec(id="s", start=stubborn, args=("s", log.ref), shutdown=2.0)
            sup = await log.start_link(Supervisor, SupervisorFlags(), [spec])
            await started(log, 1)
            (info,) = await which_children(sup)
            assert info.ref is not None
            before = node.now()
            await terminate_child(sup, "s")
            assert node.now() - before == pytest.approx(2.0, abs=0.002)
            assert await node.wait_exit(info.ref) == KILLED
            (info,) = await which_children(sup)
            assert (info.status, info.last_reason) == ("stopped", KILLED)


async def test_a_child_that_stops_in_time_is_not_killed() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            spec = ChildSpec(id="s", start=SlowStop, args=("s", log.ref, 1.5), shutdown=2.0)
            sup = await log.start_link(Supervisor, SupervisorFlags(), [spec])
            before = node.now()
            await terminate_child(sup, "s")
            assert node.now() - before == pytest.approx(1.5, abs=0.002)
            assert await terminated(log, 1) == [("s", SHUTDOWN)]


async def test_brutal_kill_does_not_wait_or_run_terminate() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            spec = worker("w", log.ref, trap=True, shutdown=BRUTAL_KILL)
            sup = await log.start_link(Supervisor, SupervisorFlags(), [spec])
            ref = (await which_children(sup))[0].ref
            assert ref is not None
            before = node.now()
            await terminate_child(sup, "w")
            assert node.now() == before
            assert await node.wait_exit(ref) == KILLED
            assert no_more(log, "terminated")


async def test_infinity_waits_as_long_as_the_child_needs() -> None:
    """Regression: terminate_child used the default 5 s call timeout, so it failed with
    CallTimeoutError while a child with a longer shutdown was still stopping."""
    async with open_node() as node:
        with node.inbox() as log:
            spec = ChildSpec(id="s", start=SlowStop, args=("s", log.ref, 3600.0), shutdown=INFINITY)
            sup = await log.start_link(Supervisor, SupervisorFlags(), [spec])
            before = node.now()
            await terminate_child(sup, "s")
            assert node.now() - before == pytest.approx(3600.0, abs=0.002)
            assert await terminated(log, 1) == [("s", SHUTDOWN)]


async def test_supervisor_shutdown_stops_children_in_reverse_order() -> None:
    """Each trapping gen_server child's terminate() runs with reason shutdown, last child
    first; a stubborn one is killed at its deadline, and the others still stop in order."""
    async with open_node() as node:
        with node.inbox() as log:
            specs = [
                worker("a", log.ref, trap=True),
                ChildSpec(id="s", start=stubborn, args=("s", log.ref), shutdown=3.0),
                ChildSpec(id="b", start=SlowStop, args=("b", log.ref, 1.0)),
                worker("c", log.ref, trap=True),
            ]
            sup = await log.start_link(Supervisor, SupervisorFlags(), specs)
            await started(log, 3)
            refs = [info.ref for info in await which_children(sup)]
            before = node.now()
            log.exit(sup, SHUTDOWN)
            assert await exit_of(log, sup) == SHUTDOWN
            assert node.now() - before == pytest.approx(1.0 + 3.0, abs=0.01)
            assert await terminated(log, 3) == [("c", SHUTDOWN), ("b", SHUTDOWN), ("a", SHUTDOWN)]
            assert not any(ref.alive for ref in refs if ref is not None)


async def test_nested_supervisor_shutdown_reaches_the_leaves_first() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            inner = ChildSpec(
                id="inner",
                start=Supervisor,
                args=(
                    SupervisorFlags(),
                    [worker("x", log.ref, trap=True), worker("y", log.ref, trap=True)],
                ),
            )
            assert inner.shutdown == math.inf
            specs = [worker("a", log.ref, trap=True), inner, worker("z", log.ref, trap=True)]
            sup = await log.start_link(Supervisor, SupervisorFlags(), specs)
            assert await started(log, 4) == ["a", "x", "y", "z"]
            log.exit(sup, SHUTDOWN)
            assert await exit_of(log, sup) == SHUTDOWN
            names = [name for name, _ in await terminated(log, 4)]
            assert names == ["z", "y", "x", "a"]


async def test_killed_supervisor_takes_its_children_down() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            specs = [worker("a", log.ref, trap=True), worker("b", log.ref)]
            sup = await log.start_link(Supervisor, SupervisorFlags(), specs)
            refs = [info.ref for info in await which_children(sup)]
            log.exit(sup, "kill")
            assert await exit_of(log, sup) == KILLED
            for ref in refs:
                assert ref is not None
                assert await node.wait_exit(ref) == KILLED
            # The trapping gen_server child still ran terminate (its parent exited).
            assert await terminated(log, 1) == [("a", KILLED)]
