"""The static supervisor's operations, with OTP's rules."""

from __future__ import annotations

import pytest

from actors import KILL, SHUTDOWN, open_node
from supervisors import (
    AlreadyPresentError,
    ChildCounts,
    ChildNotFoundError,
    ChildRunningError,
    ChildSpec,
    DynamicSupervisor,
    Restart,
    SpecError,
    StartChildError,
    Supervisor,
    SupervisorFlags,
    count_children,
    delete_child,
    get_childspec,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)

from ._support import Boom, FailingInit, Flaky, Worker, started, terminated, worker

pytestmark = pytest.mark.anyio


async def test_which_and_count_children() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            dyn = ChildSpec(
                id="dyn", start=DynamicSupervisor, args=(SupervisorFlags(), worker("x"))
            )
            specs = [worker("a", log.ref), dyn, worker("t", log.ref, restart=Restart.TRANSIENT)]
            sup = await node.start(Supervisor, SupervisorFlags(), specs)
            infos = await which_children(sup)
            assert [(i.id, i.type, i.restart, i.status) for i in infos] == [
                ("a", "worker", "permanent", "running"),
                ("dyn", "supervisor", "permanent", "running"),
                ("t", "worker", "transient", "running"),
            ]
            assert all(i.restarts == 0 and i.last_reason is None for i in infos)
            assert await count_children(sup) == ChildCounts(
                specs=3, active=3, supervisors=1, workers=2
            )
            await terminate_child(sup, "t")
            assert (await count_children(sup)).active == 2


async def test_start_child_appends_and_refuses_duplicates() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await node.start(Supervisor, SupervisorFlags(), [worker("a", log.ref)])
            ref = await start_child(sup, worker("b", log.ref))
            assert await ref.call("whoami") == ("b", ())
            assert [i.id for i in await which_children(sup)] == ["a", "b"]
            with pytest.raises(AlreadyPresentError, match="started"):
                await start_child(sup, worker("b"))
            await terminate_child(sup, "b")
            with pytest.raises(AlreadyPresentError, match="present"):
                await start_child(sup, worker("b"))
            with pytest.raises(SpecError):
                await start_child(sup, "not a spec")


async def test_start_child_that_fails_adds_nothing() -> None:
    async with open_node() as node:
        sup = await node.start(Supervisor, SupervisorFlags(), [])
        with pytest.raises(StartChildError) as caught:
            await start_child(sup, ChildSpec(id="bad", start=FailingInit, args=("bad",)))
        assert caught.value.child_id == "bad"
        assert isinstance(caught.value.reason, Boom)
        assert await which_children(sup) == []


async def test_terminate_child_keeps_the_spec_and_does_not_restart() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await node.start(
                Supervisor, SupervisorFlags(intensity=0), [worker("a", log.ref, trap=True)]
            )
            (before,) = await which_children(sup)
            await terminate_child(sup, "a")
            assert await terminated(log, 1) == [("a", SHUTDOWN)]
            (info,) = await which_children(sup)
            assert (info.ref, info.status, info.restarts) == (None, "stopped", 0)
            assert info.last_reason == SHUTDOWN
            assert before.ref is not None
            assert not before.ref.alive
            await terminate_child(sup, "a")  # already stopped: fine, as OTP
            assert sup.alive


async def test_terminate_child_removes_a_temporary_child() -> None:
    async with open_node() as node:
        spec = worker("tmp", restart=Restart.TEMPORARY)
        sup = await node.start(Supervisor, SupervisorFlags(), [spec])
        await terminate_child(sup, "tmp")
        assert await which_children(sup) == []


async def test_restart_child_only_when_stopped() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await node.start(Supervisor, SupervisorFlags(), [worker("a", log.ref)])
            await started(log, 1)
            with pytest.raises(ChildRunningError):
                await restart_child(sup, "a")
            await terminate_child(sup, "a")
            ref = await restart_child(sup, "a")
            assert await started(log, 1) == ["a"]
            (info,) = await which_children(sup)
            assert info.ref == ref
            assert info.status == "running"


async def test_restart_child_with_a_failing_start_leaves_it_stopped() -> None:
    async with open_node() as node:
        state = {"failures": 1}
        sup = await node.start(Supervisor, SupervisorFlags(), [])
        await start_child(sup, ChildSpec(id="f", start=Flaky, args=("f", state)))
        await terminate_child(sup, "f")
        with pytest.raises(StartChildError) as caught:
            await restart_child(sup, "f")
        assert isinstance(caught.value.reason, Boom)
        (info,) = await which_children(sup)
        assert info.status == "stopped"
        assert isinstance(info.last_reason, Boom)
        assert (await restart_child(sup, "f")).alive


async def test_delete_child_only_when_stopped() -> None:
    async with open_node() as node:
        sup = await node.start(Supervisor, SupervisorFlags(), [worker("a"), worker("b")])
        with pytest.raises(ChildRunningError):
            await delete_child(sup, "a")
        await terminate_child(sup, "a")
        await delete_child(sup, "a")
        assert [i.id for i in await which_children(sup)] == ["b"]
        with pytest.raises(ChildNotFoundError):
            await delete_child(sup, "a")
        # The id is free again.
        await start_child(sup, worker("a"))
        assert [i.id for i in await which_children(sup)] == ["b", "a"]


async def test_get_childspec() -> None:
    async with open_node() as node:
        spec = worker("a", shutdown=1.5)
        sup = await node.start(Supervisor, SupervisorFlags(), [spec])
        assert await get_childspec(sup, "a") == spec


@pytest.mark.parametrize("operation", [terminate_child, restart_child, delete_child, get_childspec])
async def test_unknown_ids_are_not_found(operation: object) -> None:
    async with open_node() as node:
        sup = await node.start(Supervisor, SupervisorFlags(), [worker("a")])
        with pytest.raises(ChildNotFoundError):
            await operation(sup, "nope")  # type: ignore[operator]
        # Regression: an unhashable id crashed the supervisor with TypeError.
        with pytest.raises(ChildNotFoundError):
            await operation(sup, ["unhashable"])  # type: ignore[operator]
        assert sup.alive


async def test_a_child_started_later_is_supervised_and_stopped_first() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            sup = await log.start_link(
                Supervisor, SupervisorFlags(), [worker("a", log.ref, trap=True)]
            )
            late = await start_child(sup, worker("late", log.ref, trap=True))
            node.exit(late, KILL)
            await node.wait_exit(late)
            (_, info) = await which_children(sup)
            assert info.id == "late"
            assert info.restarts == 1
            log.exit(sup, SHUTDOWN)
            names = [n for n, _ in await terminated(log, 2)]
            assert names == ["late", "a"]


async def test_worker_class_is_named_in_the_spec() -> None:
    assert worker("a").start is Worker
