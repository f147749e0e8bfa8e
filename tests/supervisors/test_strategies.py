"""Strategies, restart types, intensity and escalation, start failures and retries."""

from __future__ import annotations

from typing import Any

import pytest

from actors import KILL, SHUTDOWN, CallError, Context, Exit, Node, Ref, SpawnError, open_node
from supervisors import (
    ChildSpec,
    Restart,
    StartChildError,
    Strategy,
    Supervisor,
    SupervisorFlags,
    which_children,
)

from ._support import (
    Boom,
    FailingInit,
    Flaky,
    Worker,
    exit_of,
    no_more,
    started,
    terminated,
    worker,
)

pytestmark = pytest.mark.anyio

GENEROUS = 100


async def refs(sup: Ref) -> dict[Any, Ref | None]:
    return {info.id: info.ref for info in await which_children(sup)}


async def kill(node: Node, ref: Ref | None) -> None:
    """Kill ``ref`` and wait until its supervisor has the exit signal queued."""
    assert ref is not None
    node.exit(ref, KILL)
    await node.wait_exit(ref)


async def start_abc(
    node: Node, log: Context, strategy: Strategy, *, trap: bool = True, intensity: int = GENEROUS
) -> Ref:
    specs = [worker(name, log.ref, trap=trap) for name in "abc"]
    sup = await log.start_link(Supervisor, SupervisorFlags(strategy, intensity=intensity), specs)
    assert await started(log, 3) == ["a", "b", "c"]
    return sup


async def test_one_for_one_restarts_only_the_failed_child() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await start_abc(node, log, Strategy.ONE_FOR_ONE)
            before = await refs(sup)
            await kill(node, before["b"])
            after = await refs(sup)
            assert await started(log, 1) == ["b"]
            assert after["a"] == before["a"]
            assert after["c"] == before["c"]
            assert after["b"] not in (None, before["b"])
            assert no_more(log, "terminated")


async def test_one_for_all_stops_others_in_reverse_then_starts_all_in_order() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await start_abc(node, log, Strategy.ONE_FOR_ALL)
            before = await refs(sup)
            await kill(node, before["b"])
            after = await refs(sup)
            assert await terminated(log, 2) == [("c", SHUTDOWN), ("a", SHUTDOWN)]
            assert await started(log, 3) == ["a", "b", "c"]
            assert all(after[k] != before[k] for k in "abc")
            assert not any(ref.alive for ref in before.values() if ref is not None)


async def test_rest_for_one_restarts_the_failed_child_and_later_ones() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await start_abc(node, log, Strategy.REST_FOR_ONE)
            before = await refs(sup)
            await kill(node, before["b"])
            after = await refs(sup)
            assert await terminated(log, 1) == [("c", SHUTDOWN)]
            assert await started(log, 2) == ["b", "c"]
            assert after["a"] == before["a"]
            assert after["b"] != before["b"]
            assert after["c"] != before["c"]
            # The last child failing restarts only itself.
            await kill(node, after["c"])
            assert (await refs(sup))["b"] == after["b"]
            assert await started(log, 1) == ["c"]


async def test_crash_through_a_call_restarts_with_the_exception_as_reason() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await start_abc(node, log, Strategy.ONE_FOR_ONE)
            before = await refs(sup)
            with pytest.raises(CallError) as caught:
                await before["a"].call("crash")  # type: ignore[union-attr]
            assert isinstance(caught.value.reason, Boom)
            (info,) = [i for i in await which_children(sup) if i.id == "a"]
            assert info.restarts == 1
            assert isinstance(info.last_reason, Boom)
            assert info.ref is not None
            assert info.ref != before["a"]


# -- intensity --


@pytest.mark.parametrize("intensity", [0, 1, 3])
async def test_intensity_at_the_limit_does_not_escalate(intensity: int) -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await start_abc(node, log, Strategy.ONE_FOR_ONE, intensity=intensity)
            for _ in range(intensity):
                await kill(node, (await refs(sup))["a"])
            assert sup.alive
            assert all(ref is not None for ref in (await refs(sup)).values())


@pytest.mark.parametrize("intensity", [0, 1, 3])
async def test_one_past_the_intensity_escalates(intensity: int) -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await start_abc(node, log, Strategy.ONE_FOR_ONE, intensity=intensity)
            children = await refs(sup)
            for _ in range(intensity):
                await kill(node, (await refs(sup))["a"])
            survivors = await refs(sup)
            await kill(node, survivors["a"])
            assert await exit_of(log, sup) == SHUTDOWN
            # It stopped its other children (in reverse order) before exiting.
            assert await terminated(log, 2) == [("c", SHUTDOWN), ("b", SHUTDOWN)]
            assert not any(ref.alive for ref in survivors.values() if ref is not None)
            assert children["b"] == survivors["b"]


async def test_the_period_slides_in_virtual_time() -> None:
    """Two restarts allowed per 10 s: restarts spaced just over 5 s never escalate; three
    within 10 s do."""
    async with open_node() as node:
        with node.inbox() as log:
            specs = [worker("a", log.ref)]
            flags = SupervisorFlags(intensity=2, period=10.0)
            sup = await log.start_link(Supervisor, flags, specs)
            start = node.now()
            for _ in range(10):
                await kill(node, (await refs(sup))["a"])
                await _sleep(node, 5.01)
            assert sup.alive
            assert node.now() - start > 50
            # Now three within one period: the third is one too many.
            await _sleep(node, 10.01)
            await kill(node, (await refs(sup))["a"])
            await _sleep(node, 4.0)
            await kill(node, (await refs(sup))["a"])
            assert sup.alive
            await _sleep(node, 4.0)
            await kill(node, (await refs(sup))["a"])
            assert await exit_of(log, sup) == SHUTDOWN


async def test_restarts_older_than_the_period_are_forgotten() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            flags = SupervisorFlags(intensity=1, period=5.0)
            sup = await log.start_link(Supervisor, flags, [worker("a", log.ref)])
            await kill(node, (await refs(sup))["a"])
            await _sleep(node, 4.9)
            assert sup.alive
            await kill(node, (await refs(sup))["a"])  # 2 within 5 s
            assert await exit_of(log, sup) == SHUTDOWN


async def _sleep(node: Node, seconds: float) -> None:
    """Let ``seconds`` of virtual time pass (costs nothing)."""
    import anyio

    target = node.now() + seconds
    await anyio.sleep(seconds)
    assert node.now() >= target


# -- restart types --


@pytest.mark.parametrize("reason", ["normal", SHUTDOWN, (SHUTDOWN, "done")])
async def test_transient_is_not_restarted_after_a_clean_exit(reason: object) -> None:
    async with open_node() as node:
        with node.inbox() as log:
            spec = worker("t", log.ref, restart=Restart.TRANSIENT)
            sup = await log.start_link(Supervisor, SupervisorFlags(), [spec])
            (ref,) = (await refs(sup)).values()
            assert ref is not None
            await ref.call(("stop", reason))
            await node.wait_exit(ref)
            (info,) = await which_children(sup)
            assert (info.ref, info.status, info.restarts) == (None, "stopped", 0)
            assert info.last_reason == reason


async def test_transient_is_restarted_after_a_crash() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            spec = worker("t", log.ref, restart=Restart.TRANSIENT)
            sup = await log.start_link(Supervisor, SupervisorFlags(), [spec])
            await kill(node, (await refs(sup))["t"])
            (info,) = await which_children(sup)
            assert info.status == "running"
            assert info.restarts == 1
            assert info.last_reason == "killed"


@pytest.mark.parametrize("reason", ["normal", "crash", KILL])
async def test_temporary_is_never_restarted_and_its_spec_is_removed(reason: str) -> None:
    async with open_node() as node:
        with node.inbox() as log:
            specs = [worker("tmp", log.ref, restart=Restart.TEMPORARY), worker("p", log.ref)]
            sup = await log.start_link(Supervisor, SupervisorFlags(intensity=0), specs)
            ref = (await refs(sup))["tmp"]
            assert ref is not None
            if reason == KILL:
                node.exit(ref, KILL)
            elif reason == "crash":
                with pytest.raises(CallError):
                    await ref.call("crash")
            else:
                await ref.call(("stop", reason))
            await node.wait_exit(ref)
            assert list(await refs(sup)) == ["p"]
            assert sup.alive  # not even counted against the intensity


async def test_one_for_all_does_not_restart_a_temporary_sibling() -> None:
    """OTP's terminate_children drops temporary children: a group restart stops a temporary
    sibling and removes it instead of starting it again."""
    async with open_node() as node:
        with node.inbox() as log:
            specs = [
                worker("a", log.ref, trap=True),
                worker("tmp", log.ref, trap=True, restart=Restart.TEMPORARY),
                worker("c", log.ref, trap=True),
            ]
            flags = SupervisorFlags(Strategy.ONE_FOR_ALL, intensity=GENEROUS)
            sup = await log.start_link(Supervisor, flags, specs)
            assert await started(log, 3) == ["a", "tmp", "c"]
            await kill(node, (await refs(sup))["c"])
            assert await terminated(log, 2) == [("tmp", SHUTDOWN), ("a", SHUTDOWN)]
            assert list(await refs(sup)) == ["a", "c"]
            assert await started(log, 2) == ["a", "c"]


async def test_group_restart_starts_a_stopped_transient_sibling() -> None:
    """As in OTP, a one_for_all restart starts every non-temporary child, including a transient
    one that had exited normally."""
    async with open_node() as node:
        with node.inbox() as log:
            specs = [worker("t", log.ref, restart=Restart.TRANSIENT), worker("p", log.ref)]
            flags = SupervisorFlags(Strategy.ONE_FOR_ALL, intensity=GENEROUS)
            sup = await log.start_link(Supervisor, flags, specs)
            await started(log, 2)
            t = (await refs(sup))["t"]
            assert t is not None
            await t.call(("stop", "normal"))
            await node.wait_exit(t)
            assert (await refs(sup))["t"] is None
            await kill(node, (await refs(sup))["p"])
            assert await started(log, 2) == ["t", "p"]
            assert all(ref is not None for ref in (await refs(sup)).values())


# -- start failures --


async def test_failing_start_stops_started_children_in_reverse_and_raises() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            specs = [
                worker("a", log.ref, trap=True),
                worker("b", log.ref, trap=True),
                ChildSpec(id="bad", start=FailingInit, args=("bad", log.ref)),
                worker("never", log.ref),
            ]
            with pytest.raises(SpawnError) as caught:
                await node.start(Supervisor, SupervisorFlags(), specs)
            error = caught.value.reason
            assert isinstance(error, StartChildError)
            assert error.child_id == "bad"
            assert isinstance(error.reason, Boom)
            assert await started(log, 2) == ["a", "b"]
            assert await terminated(log, 2) == [("b", SHUTDOWN), ("a", SHUTDOWN)]
            assert no_more(log, "started")


async def test_failed_restart_is_retried_without_blocking() -> None:
    """A restart whose start fails is retried through the supervisor's mailbox: between
    attempts it answers calls and reports the child as restarting."""
    async with open_node() as node:
        with node.inbox() as log:
            state = {"failures": 3}
            specs = [
                worker("a", log.ref),
                ChildSpec(id="flaky", start=Flaky, args=("flaky", state)),
            ]
            sup = await log.start_link(Supervisor, SupervisorFlags(intensity=10), specs)
            first = (await refs(sup))["flaky"]
            await kill(node, first)
            statuses = []
            for _ in range(10):
                infos = {i.id: i for i in await which_children(sup)}
                assert infos["a"].status == "running"
                statuses.append(infos["flaky"].status)
                if statuses[-1] == "running":
                    break
            assert statuses[0] == "restarting"
            assert statuses[-1] == "running"
            assert state["starts"] == 1 + 3 + 1
            assert infos["flaky"].restarts == 1
            assert isinstance(infos["flaky"].last_reason, Boom)  # the last failed attempt


async def test_failed_restarts_count_toward_the_intensity() -> None:
    """A child whose init always fails after its first start: the restart and each retry count,
    so the supervisor eventually gives up (and stops its other children)."""
    async with open_node() as node:
        with node.inbox() as log:
            state: dict[str, int] = {}
            specs = [
                worker("a", log.ref, trap=True),
                ChildSpec(id="flaky", start=Flaky, args=("flaky", state)),
            ]
            sup = await log.start_link(Supervisor, SupervisorFlags(intensity=5), specs)
            await kill(node, (await refs(sup))["flaky"])
            assert await exit_of(log, sup) == SHUTDOWN
            # The restart and four retries fit in the intensity of 5; the next one gives up.
            assert state["starts"] == 1 + 5
            assert await terminated(log, 1) == [("a", SHUTDOWN)]


async def test_failed_restart_in_one_for_all_restarts_the_group_again() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            state: dict[str, int] = {}
            specs = [
                worker("a", log.ref),
                ChildSpec(id="flaky", start=Flaky, args=("flaky", state)),
                worker("c", log.ref),
            ]
            flags = SupervisorFlags(Strategy.ONE_FOR_ALL, intensity=2)
            sup = await log.start_link(Supervisor, flags, specs)
            assert await started(log, 2) == ["a", "c"]
            await kill(node, (await refs(sup))["c"])
            assert await exit_of(log, sup) == SHUTDOWN
            # The restart and one retry each started "a" again, then failed on "flaky".
            assert await started(log, 2) == ["a", "a"]
            assert no_more(log, "started")
            assert state["starts"] == 3


async def test_failed_restart_in_rest_for_one_retries_from_the_failed_child() -> None:
    """As OTP's try_again_restart: the retry restarts the child that failed to start and those
    after it; an earlier member of the group that started keeps running."""
    async with open_node() as node:
        with node.inbox() as log:
            state = {"failures": 1}
            specs = [
                worker("a", log.ref),
                worker("b", log.ref),
                ChildSpec(id="flaky", start=Flaky, args=("flaky", state)),
                worker("d", log.ref),
            ]
            flags = SupervisorFlags(Strategy.REST_FOR_ONE, intensity=GENEROUS)
            sup = await log.start_link(Supervisor, flags, specs)
            assert await started(log, 3) == ["a", "b", "d"]
            await kill(node, (await refs(sup))["b"])
            b = (await refs(sup))["b"]
            for _ in range(10):
                infos = await which_children(sup)
                if all(info.status == "running" for info in infos):
                    break
            assert {info.id: info.ref for info in infos}["b"] == b
            assert await started(log, 2) == ["b", "d"]
            assert no_more(log, "started")
            assert state["starts"] == 3


# -- nesting --


async def test_nested_supervisors_escalate_two_levels() -> None:
    """leaf gives up → mid restarts it (one_for_all: its sibling too) → leaf gives up again →
    mid gives up → top restarts mid (and its own sibling) → top gives up at the next."""
    async with open_node() as node:
        with node.inbox() as log:
            leaf = ChildSpec(
                id="leaf",
                start=Supervisor,
                args=(SupervisorFlags(intensity=0), [worker("w", log.ref)]),
            )
            mid = ChildSpec(
                id="mid",
                start=Supervisor,
                args=(
                    SupervisorFlags(Strategy.ONE_FOR_ALL, intensity=1),
                    [leaf, worker("m", log.ref)],
                ),
            )
            top_flags = SupervisorFlags(Strategy.REST_FOR_ONE, intensity=1)
            top = await log.start_link(Supervisor, top_flags, [worker("t0", log.ref), mid])
            assert await started(log, 3) == ["t0", "w", "m"]

            async def leaf_worker() -> tuple[Ref, Ref, Ref]:
                mid_ref = (await refs(top))["mid"]
                assert mid_ref is not None
                leaf_ref = (await refs(mid_ref))["leaf"]
                assert leaf_ref is not None
                w = (await refs(leaf_ref))["w"]
                assert w is not None
                return mid_ref, leaf_ref, w

            mid1, leaf1, w1 = await leaf_worker()
            await kill(node, w1)  # leaf gives up at once (intensity 0)
            await node.wait_exit(leaf1)
            assert await started(log, 2) == ["w", "m"]  # mid: one_for_all
            mid2, leaf2, w2 = await leaf_worker()
            assert mid2 == mid1
            assert leaf2 != leaf1
            t0 = (await refs(top))["t0"]

            await kill(node, w2)  # leaf gives up, mid's second restart: one too many
            await node.wait_exit(leaf2)
            await node.wait_exit(mid1)
            assert mid1._ctx.exit_reason == SHUTDOWN
            mid3, leaf3, w3 = await leaf_worker()
            assert mid3 != mid1
            assert (await refs(top))["t0"] == t0  # rest_for_one: the earlier sibling stays
            assert await started(log, 2) == ["w", "m"]

            await kill(node, w3)  # leaf gives up (mid: 1 restart, fine)
            await node.wait_exit(leaf3)
            await kill(node, (await leaf_worker())[2])  # mid gives up again → top too
            assert await exit_of(log, top) == SHUTDOWN
            assert not any(r.alive for r in (t0, mid3) if r is not None)


async def test_exits_of_unrelated_actors_are_ignored() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await log.start_link(Supervisor, SupervisorFlags(), [worker("a", log.ref)])
            before = await refs(sup)
            stranger = node.spawn(Worker, "x")
            node.context(sup).link(stranger)
            await kill(node, stranger)
            node.exit(sup, "some reason")  # from outside (not the parent): a message, ignored
            assert await refs(sup) == before
            assert not any(isinstance(m, Exit) for m in list(log._signals or ()))
