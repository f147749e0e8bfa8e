"""A child's remains: the linked children a killed child leaves behind, still exiting.

Killing a supervisor child with ``kill`` does not stop its subtree: its children get the
``killed`` signal and take their own time (a child supervisor stops its children first), holding
their registered names meanwhile. The parent starts the new incarnation only once they are gone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from actors import (
    KILL,
    KILLED,
    SHUTDOWN,
    Actor,
    Context,
    NameTakenError,
    Ref,
    SpawnError,
    open_node,
)
from supervisors import (
    BRUTAL_KILL,
    ChildSpec,
    DynamicSupervisor,
    StartChildError,
    Strategy,
    Supervisor,
    SupervisorFlags,
    start_child,
    which_children,
)

from ._support import SlowStop, started, terminated

pytestmark = pytest.mark.anyio

#: Seconds each grandchild's terminate takes.
SLOW = 2.0


class NamedPool(DynamicSupervisor):
    """A dynamic supervisor that registers itself in ``init``: ``(name, flags, spec)``."""

    def configure(self, *args: Any) -> tuple[SupervisorFlags, ChildSpec]:
        name, flags, spec = args
        self.registered_as = name
        return flags, spec

    def init(self, *args: Any) -> None:
        super().init(*args)
        self.ctx.register(self.registered_as)


class Announcer(SlowStop):
    """A :class:`SlowStop` registered as ``mid.{name}`` that reports ``("started", name, ref)``
    to ``log``."""

    def init(self, name: str, log: Ref, seconds: float, *extra: Any) -> None:
        super().init(name, log, seconds, *extra)
        self.ctx.register(f"mid.{name}")
        log.send(("started", name, self.ref))


class PoolChild(SlowStop):
    """A :class:`SlowStop` started by a dynamic supervisor: ``(log, seconds, name)``."""

    def init(self, log: Ref, seconds: float, name: str, *extra: Any) -> None:  # type: ignore[override]
        super().init(name, log, seconds)


def gateway_like(log: Ref) -> ChildSpec:
    """A rest_for_one supervisor: a worker registered as ``mid.worker``, then
    a dynamic supervisor registered as ``mid.pool`` (in its init) whose children are slow to
    stop."""
    pool = ChildSpec(
        id="pool",
        start=NamedPool,
        args=(
            "mid.pool",
            SupervisorFlags(intensity=100, period=5.0),
            ChildSpec(id="slow", start=PoolChild, args=(log, SLOW), shutdown=SLOW + 1.0),
        ),
    )
    return ChildSpec(
        id="mid",
        start=Supervisor,
        args=(
            SupervisorFlags(Strategy.REST_FOR_ONE, intensity=3, period=10.0),
            [
                ChildSpec(id="worker", start=Announcer, args=("worker", log, SLOW)),
                pool,
            ],
        ),
    )


async def test_a_killed_supervisor_restarts_once_its_registered_children_are_gone() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            flags = SupervisorFlags(Strategy.ONE_FOR_ONE, intensity=3, period=10.0)
            root = await log.start_link(Supervisor, flags, [gateway_like(log.ref)])
            await started(log, 1)
            pool = node.whereis("mid.pool")
            assert pool is not None
            for n in range(50):
                await start_child(pool, f"conn{n}")
            (old,) = await which_children(root)
            assert old.ref is not None
            killed_at = node.now()
            node.exit(old.ref, KILL)
            assert await node.wait_exit(old.ref) == KILLED
            # The old pool stops its 50 children (SLOW s, in parallel) and the old worker runs
            # its terminate (SLOW s), both holding their names: mid is not started meanwhile.
            await anyio.sleep(SLOW / 2)
            (waiting,) = await which_children(root)
            assert (waiting.ref, waiting.status) == (None, "restarting")
            assert node.whereis("mid.pool") == pool
            assert await started(log, 1) == ["worker"]  # the new incarnation, once they are gone
            assert node.now() - killed_at >= SLOW
            reasons = Counter(reason for _, reason in await terminated(log, 51))
            assert reasons == {KILLED: 1, SHUTDOWN: 50}  # the worker; the pool's children
            (new,) = await which_children(root)
            assert root.alive
            assert new.status == "running"
            assert new.restarts == 1
            assert new.ref is not None
            assert new.ref != old.ref
            assert {child.id: child.status for child in await which_children(new.ref)} == {
                "worker": "running",
                "pool": "running",
            }
            new_pool = node.whereis("mid.pool")
            assert new_pool is not None
            assert new_pool != pool
            assert node.context(root).behaviour.format_status()["recent_restarts"] == 1


async def helper_owner(ctx: Context, log: Ref) -> None:
    """A worker that links a registered helper which ignores every exit signal."""
    ctx.spawn_link(stubborn_helper, log, name="helper")
    log.send(("started", "owner", ctx.ref))
    while True:
        await ctx.receive()


async def stubborn_helper(ctx: Context, log: Ref) -> None:
    ctx.trap_exit = True
    while True:
        await ctx.receive()


async def test_remains_that_outlive_the_childs_shutdown_are_killed() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            spec = ChildSpec(id="owner", start=helper_owner, args=(log.ref,), shutdown=3.0)
            root = await log.start_link(Supervisor, SupervisorFlags(intensity=1), [spec])
            await started(log, 1)
            (old,) = await which_children(root)
            helper = node.whereis("helper")
            assert old.ref is not None
            assert helper is not None
            killed_at = node.now()
            node.exit(old.ref, KILL)
            assert await started(log, 1) == ["owner"]
            assert node.now() - killed_at == pytest.approx(3.0, abs=0.01)
            assert await node.wait_exit(helper) == KILLED
            new_helper = node.whereis("helper")
            assert new_helper is not None
            assert new_helper != helper
            assert root.alive


async def test_brutal_kill_kills_the_remains_at_once() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            spec = ChildSpec(id="owner", start=helper_owner, args=(log.ref,), shutdown=BRUTAL_KILL)
            root = await log.start_link(Supervisor, SupervisorFlags(intensity=1), [spec])
            await started(log, 1)
            (old,) = await which_children(root)
            assert old.ref is not None
            killed_at = node.now()
            node.exit(old.ref, KILL)
            assert await started(log, 1) == ["owner"]
            assert node.now() == pytest.approx(killed_at, abs=0.01)


class Holder(Actor):
    """Holds a registered name and does nothing else."""


async def test_a_name_held_by_a_live_actor_still_fails_the_start_at_once() -> None:
    async with open_node() as node:
        with node.inbox() as log:
            node.spawn(Holder, name="mid.worker")
            before = node.now()
            with pytest.raises(SpawnError) as caught:
                await log.start_link(Supervisor, SupervisorFlags(), gateway_like(log.ref).args[1])
            error = caught.value.reason
            assert isinstance(error, StartChildError)
            assert error.child_id == "worker"
            assert isinstance(error.reason, NameTakenError)
            assert node.now() == before
