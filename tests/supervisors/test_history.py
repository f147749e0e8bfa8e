"""Beyond OTP: restart backoff, restart history, and the tree as data."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from actors import KILL, KILLED, SHUTDOWN, Context, Node, Ref, open_node
from supervisors import (
    Backoff,
    ChildSpec,
    DynamicSupervisor,
    Strategy,
    Supervisor,
    SupervisorFlags,
    start_child,
    terminate_child,
    tree,
    which_children,
)

from ._support import exit_of, started, worker

pytestmark = pytest.mark.anyio


async def child_ref(sup: Ref, child_id: Any = "a") -> Ref:
    (info,) = [i for i in await which_children(sup) if i.id == child_id]
    assert info.ref is not None
    return info.ref


async def restart_delays(node: Node, log: Context, sup: Ref, times: int) -> list[float]:
    """Kill child "a" ``times`` times; the (virtual) seconds each restart took."""
    delays = []
    for _ in range(times):
        ref = await child_ref(sup)
        node.exit(ref, KILL)
        await node.wait_exit(ref)
        killed_at = node.now()
        (info,) = await which_children(sup)
        assert info.status == "restarting"
        assert info.ref is None
        await started(log, 1)
        delays.append(round(node.now() - killed_at, 3))
    return delays


async def test_backoff_delays_grow_exponentially_up_to_max_and_reset() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            backoff = Backoff(min=1, max=8, factor=2, jitter=0, reset_after=30)
            spec = worker("a", log.ref, backoff=backoff)
            sup = await log.start_link(Supervisor, SupervisorFlags(intensity=100), [spec])
            await started(log, 1)
            assert await restart_delays(node, log, sup, 6) == [1, 2, 4, 8, 8, 8]
            await anyio.sleep(30)  # a stable run resets the count
            assert await restart_delays(node, log, sup, 2) == [1, 2]


async def test_backoff_jitter_is_seeded_and_stays_in_bounds() -> None:
    async def delays(seed: int) -> list[float]:
        async with open_node() as node:
            with node.inbox() as log:
                backoff = Backoff(min=1, max=8, factor=2, jitter=0.5)
                spec = worker("a", log.ref, backoff=backoff)
                flags = SupervisorFlags(intensity=100, seed=seed)
                sup = await log.start_link(Supervisor, flags, [spec])
                await started(log, 1)
                return await restart_delays(node, log, sup, 6)

    first = await delays(7)
    assert first == await delays(7)
    assert first != await delays(8)
    for delay, base in zip(first, [1, 2, 4, 8, 8, 8], strict=True):
        assert max(1, base * 0.5) - 0.002 <= delay <= min(8, base * 1.5) + 0.002


async def test_intensity_still_applies_with_backoff() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            spec = worker("a", log.ref, backoff=Backoff(min=1, max=2, jitter=0))
            sup = await log.start_link(Supervisor, SupervisorFlags(intensity=2, period=100), [spec])
            await started(log, 1)
            await restart_delays(node, log, sup, 2)
            ref = await child_ref(sup)
            node.exit(ref, KILL)
            assert await exit_of(log, sup) == SHUTDOWN


async def test_one_for_all_with_backoff_restarts_the_group_after_the_delay() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            specs = [
                worker("a", log.ref, backoff=Backoff(min=3, jitter=0)),
                worker("b", log.ref),
            ]
            flags = SupervisorFlags(Strategy.ONE_FOR_ALL, intensity=10)
            sup = await log.start_link(Supervisor, flags, specs)
            await started(log, 2)
            node.exit(await child_ref(sup), KILL)
            before = node.now()
            assert [i.status for i in await which_children(sup)] == ["restarting", "restarting"]
            assert await started(log, 2) == ["a", "b"]
            assert node.now() - before == pytest.approx(3, abs=0.002)


async def test_restart_history_in_which_children() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            specs = [worker("a", log.ref), worker("b", log.ref)]
            sup = await log.start_link(Supervisor, SupervisorFlags(intensity=10), specs)
            for _ in range(3):
                await anyio.sleep(2.5)
                ref = await child_ref(sup)
                node.exit(ref, KILL)
                await node.wait_exit(ref)
                killed_at = node.now()
            a, b = await which_children(sup)
            assert (a.restarts, a.last_reason, a.last_exit_at) == (3, KILLED, killed_at)
            assert (b.restarts, b.last_reason, b.last_exit_at) == (0, None, None)


async def test_tree_as_data() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sessions = ChildSpec(
                id="sessions",
                start=DynamicSupervisor,
                args=(SupervisorFlags(), worker("session")),
            )
            inner = ChildSpec(
                id="inner",
                start=Supervisor,
                args=(SupervisorFlags(Strategy.REST_FOR_ONE), [worker("x"), worker("y")]),
            )
            specs = [worker("a", log.ref), inner, sessions]
            root = await log.start_link(Supervisor, SupervisorFlags(intensity=5), specs)
            node.exit(await child_ref(root), KILL)
            await which_children(root)
            snapshot = tree(node, root)
            assert (snapshot.kind, snapshot.strategy, snapshot.child_count) == (
                "supervisor",
                "one_for_one",
                3,
            )
            assert snapshot.behaviour == "Supervisor"
            a, inner_node, sessions_node = snapshot.children
            assert (a.id, a.kind, a.restarts, a.last_reason) == ("a", "worker", 1, repr(KILLED))
            assert a.status in ("hibernated", "waiting", "running")
            assert inner_node.strategy == "rest_for_one"
            assert [c.id for c in inner_node.children] == ["x", "y"]
            assert sessions_node.strategy == "simple_one_for_one"
            assert sessions_node.child_count == 0
            as_dict = snapshot.to_dict()
            assert json.loads(json.dumps(as_dict)) == as_dict
            assert as_dict["children"][0]["last_reason"] == "'killed'"
            assert as_dict["pid"] == root.pid
            assert tree(node, root, depth=0).children == ()


async def test_tree_summarises_a_big_dynamic_supervisor() -> None:
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), worker("s"))
        refs = [await start_child(sup) for _ in range(25)]
        for ref, length in [(refs[3], 5), (refs[10], 9), (refs[17], 7)]:
            node.context(ref).suspend()  # messages queue up without being taken
            for n in range(length):
                ref.send(n)
        small = tree(node, sup, top=3)
        assert small.summarised
        assert small.child_count == 25
        assert sum(small.by_status.values()) == 25
        assert small.by_status.get("suspended") == 3
        assert [(c.ref, c.mailbox_length) for c in small.children] == [
            (refs[10], 9),
            (refs[17], 7),
            (refs[3], 5),
        ]
        assert small.to_dict()["by_status"] == dict(small.by_status)
        # At the threshold (20) it is not summarised: every child is shown.
        for ref in refs[20:]:
            await terminate_child(sup, ref)
        full = tree(node, sup, top=3)
        assert not full.summarised
        assert full.child_count == 20
        assert len(full.children) == 20
