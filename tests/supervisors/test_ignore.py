"""OTP's ``ignore``: a child whose ``init`` raises :class:`supervisors.Ignore` is not started,
and a restart that meets it is neither a failure nor retried."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import KILL, Actor, Ref, open_node
from supervisors import (
    ChildSpec,
    DynamicSupervisor,
    Ignore,
    Restart,
    StartChildError,
    Supervisor,
    SupervisorFlags,
    count_children,
    start_child,
    which_children,
)

from ._support import SlowStop

pytestmark = pytest.mark.anyio


class Once(Actor):
    """Registers ``name``; when the name is taken (a newer incarnation serves it), ignores.
    With a ``log``, it links a child that takes a second to stop: its remains when killed,
    which its supervisor waits for before the restart (the window a squatter takes)."""

    def init(self, name: str, starts: list[str], log: Ref | None = None) -> None:
        starts.append(name)
        if self.ctx.node.whereis(name) is not None:
            raise Ignore(name)
        self.ctx.register(name)
        if log is not None:
            self.ctx.spawn_link(SlowStop, f"{name}.helper", log, 1.0)


class Pool(DynamicSupervisor):
    def configure(self, *args: Any) -> tuple[SupervisorFlags, ChildSpec]:
        (starts,) = args
        spec = ChildSpec(id="once", start=Once, args=(), restart=Restart.TRANSIENT)
        self.starts = starts
        return SupervisorFlags(intensity=1, period=5.0), spec


async def test_a_dynamic_restart_that_ignores_is_forgotten_without_a_failure() -> None:
    starts: list[str] = []
    async with open_node() as node:
        with node.inbox() as inbox:
            pool = await inbox.start_link(Pool, starts)
            first = await start_child(pool, "conv:1", starts, inbox.ref)
            # While it is down, someone else takes the name (as find-or-start does on demand).
            node.exit(first, KILL)
            await node.wait_exit(first)
            squatter = node.spawn(Once, "conv:1", [])
            for _ in range(500):  # the restart waits for the helper to stop (1 s)
                if len(starts) == 2:
                    break
                await anyio.sleep(0.01)
            assert starts == ["conv:1", "conv:1"]
            assert node.whereis("conv:1") == squatter
            # Forgotten, and intensity 1 was not exceeded by a retry loop: the pool lives.
            counts = await count_children(pool)
            assert counts.active == 0
            assert counts.specs == 1
            assert pool.alive
            # A start that ignores is an error for the caller, with Ignore as the reason.
            with pytest.raises(StartChildError) as info:
                await start_child(pool, "conv:1", starts)
            assert isinstance(info.value.reason, Ignore)
            assert pool.alive


async def test_a_static_restart_that_ignores_leaves_the_child_not_running() -> None:
    starts: list[str] = []
    async with open_node() as node:
        with node.inbox() as inbox:
            spec = ChildSpec(id="once", start=Once, args=("solo", starts, inbox.ref))
            sup = await inbox.start_link(
                Supervisor, SupervisorFlags(intensity=1, period=5.0), [spec]
            )
            (child,) = [c.ref for c in await which_children(sup)]
            assert child is not None
            node.exit(child, KILL)
            await node.wait_exit(child)
            squatter = node.spawn(Once, "solo", [])
            for _ in range(500):
                if len(starts) == 2:
                    break
                await anyio.sleep(0.01)
            assert starts == ["solo", "solo"]
            assert node.whereis("solo") == squatter
            (record,) = await which_children(sup)
            assert record.id == "once"
            assert record.ref is None
            assert sup.alive
