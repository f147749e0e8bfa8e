"""The dynamic supervisor (OTP's simple_one_for_one)."""

from __future__ import annotations

import pytest

from actors import KILL, KILLED, SHUTDOWN, CallError, Ref, open_node
from supervisors import (
    ChildNotFoundError,
    ChildSpec,
    DynamicSupervisor,
    NotAllowedError,
    Restart,
    SpecError,
    StartChildError,
    SupervisorFlags,
    count_children,
    delete_child,
    get_childspec,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)

from ._support import Boom, FailingInit, SlowStop, Worker, exit_of, terminated

pytestmark = pytest.mark.anyio


def conn_spec(restart: Restart = Restart.PERMANENT) -> ChildSpec:
    return ChildSpec(id="conn", start=Worker, args=("conn", None, False), restart=restart)


async def test_start_child_appends_extra_args() -> None:
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), conn_spec())
        ref = await start_child(sup, "alice", 1)
        assert await ref.call("whoami") == ("conn", ("alice", 1))
        assert (await get_childspec(sup, ref)).id == "conn"
        (info,) = await which_children(sup)
        assert info.id == ref
        assert (info.ref, info.status, info.restart) == (ref, "running", "permanent")
        counts = await count_children(sup)
        assert (counts.specs, counts.active, counts.workers, counts.supervisors) == (1, 1, 1, 0)


async def test_a_killed_child_is_restarted_with_the_same_args() -> None:
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), conn_spec())
        a = await start_child(sup, "alice")
        b = await start_child(sup, "bob")
        node.exit(a, KILL)
        await node.wait_exit(a)
        infos = await which_children(sup)
        assert len(infos) == 2
        (new,) = [i for i in infos if i.ref != b]
        assert new.ref is not None
        assert new.ref != a
        assert new.restarts == 1
        assert new.last_reason == KILLED
        assert await new.ref.call("whoami") == ("conn", ("alice",))


async def test_max_children_caps_the_number_of_children() -> None:
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(max_children=2), conn_spec())
        a = await start_child(sup, "a")
        await start_child(sup, "b")
        with pytest.raises(NotAllowedError, match="max_children"):
            await start_child(sup, "c")
        await terminate_child(sup, a)
        await start_child(sup, "c")
        assert (await count_children(sup)).active == 2


async def test_terminate_child_by_ref_and_errors() -> None:
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), conn_spec())
        a = await start_child(sup, "a")
        await terminate_child(sup, a)
        assert not a.alive
        assert await which_children(sup) == []
        with pytest.raises(ChildNotFoundError):
            await terminate_child(sup, a)
        with pytest.raises(ChildNotFoundError, match="Ref"):
            await terminate_child(sup, "conn")
        with pytest.raises(ChildNotFoundError):
            await get_childspec(sup, sup)


async def test_restart_and_delete_child_are_not_allowed() -> None:
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), conn_spec())
        a = await start_child(sup, "a")
        with pytest.raises(NotAllowedError):
            await restart_child(sup, a)
        with pytest.raises(NotAllowedError):
            await delete_child(sup, a)
        assert a.alive


async def test_failed_start_child_adds_nothing() -> None:
    async with open_node() as node:
        spec = ChildSpec(id="bad", start=FailingInit)
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), spec)
        with pytest.raises(StartChildError) as caught:
            await start_child(sup, "x")
        assert isinstance(caught.value.reason, Boom)
        assert await which_children(sup) == []


async def test_start_child_with_a_spec_is_refused_without_crashing() -> None:
    """Regression: a ChildSpec sent to a dynamic supervisor's start_child crashed it (and so
    took all its children down)."""
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), conn_spec())
        a = await start_child(sup, "a")
        with pytest.raises(SpecError):
            await start_child(sup, conn_spec())
        assert a.alive
        assert len(await which_children(sup)) == 1


@pytest.mark.parametrize("reason", ["normal", SHUTDOWN])
async def test_transient_child_is_removed_after_a_clean_exit(reason: str) -> None:
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), conn_spec(Restart.TRANSIENT))
        a = await start_child(sup, "a")
        await a.call(("stop", reason))
        await node.wait_exit(a)
        assert await which_children(sup) == []


async def test_transient_child_is_restarted_after_a_crash() -> None:
    async with open_node() as node:
        sup = await node.start(DynamicSupervisor, SupervisorFlags(), conn_spec(Restart.TRANSIENT))
        a = await start_child(sup, "a")
        with pytest.raises(CallError):
            await a.call("crash")
        (info,) = await which_children(sup)
        assert info.ref is not None
        assert info.ref != a
        assert isinstance(info.last_reason, Boom)


async def test_temporary_child_is_never_restarted() -> None:
    async with open_node() as node:
        flags = SupervisorFlags(intensity=0)
        sup = await node.start(DynamicSupervisor, flags, conn_spec(Restart.TEMPORARY))
        a = await start_child(sup, "a")
        with pytest.raises(CallError):
            await a.call("crash")
        assert await which_children(sup) == []
        assert sup.alive  # not counted against the intensity either


async def test_dynamic_supervisor_escalates_past_its_intensity() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            flags = SupervisorFlags(intensity=2)
            sup = await log.start_link(DynamicSupervisor, flags, conn_spec())
            children = [await start_child(sup, str(n)) for n in range(5)]
            for _ in range(3):
                (victim, *_) = [i.ref for i in await which_children(sup)]
                assert victim is not None
                node.exit(victim, KILL)
                await node.wait_exit(victim)
            assert await exit_of(log, sup) == SHUTDOWN
            assert not any(ref.alive for ref in children)


async def test_ten_thousand_children_start_and_stop_in_parallel() -> None:
    """10,000 children, each taking 1 s of (virtual) time to terminate: a polite shutdown of
    the supervisor stops them all in parallel, so it takes about 1 s, not 10,000."""
    count = 10_000
    async with open_node() as node:
        with node.inbox(mailbox_size=2 * count) as log:
            spec = ChildSpec(id="slow", start=SlowStop, args=("slow", log.ref, 1.0))
            sup = await log.start_link(DynamicSupervisor, SupervisorFlags(), spec)
            refs: list[Ref] = [await start_child(sup) for _ in range(count)]
            assert len(set(refs)) == count
            assert (await count_children(sup)).active == count
            before = node.now()
            log.exit(sup, SHUTDOWN)
            assert await exit_of(log, sup) == SHUTDOWN
            assert node.now() - before == pytest.approx(1.0, abs=0.01)
            assert not any(ref.alive for ref in refs)
            assert len(await terminated(log, count)) == count


async def test_stubborn_children_are_killed_after_one_shared_deadline() -> None:
    count = 1_000
    async with open_node() as node:
        with node.inbox(mailbox_size=2 * count) as log:
            spec = ChildSpec(id="slow", start=SlowStop, args=("slow", log.ref, 60.0), shutdown=2.0)
            sup = await log.start_link(DynamicSupervisor, SupervisorFlags(), spec)
            refs = [await start_child(sup) for _ in range(count)]
            before = node.now()
            log.exit(sup, SHUTDOWN)
            assert await exit_of(log, sup) == SHUTDOWN
            assert node.now() - before == pytest.approx(2.0, abs=0.01)
            for ref in refs[:: count // 10]:
                assert await node.wait_exit(ref) == KILLED
