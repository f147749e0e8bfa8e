"""Orphans: the linked children an abnormal exit leaves still exiting, and monitors on them."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import KILL, KILLED, Actor, Context, Down, Ref, Status, open_node

from ._support import expect_down, settle

pytestmark = pytest.mark.anyio


class SlowTerminate(Actor):
    """Traps exits, registers ``name``, and takes ``seconds`` to terminate."""

    def init(self, name: str, seconds: float) -> None:
        self.ctx.trap_exit = True
        self.ctx.register(name)
        self.seconds = seconds

    async def terminate(self, reason: object) -> None:
        await anyio.sleep(self.seconds)


class Parent(Actor):
    """Links a :class:`SlowTerminate` child ``slow``, a plain child, and spawns an unlinked one."""

    def init(self) -> None:
        self.slow = self.ctx.spawn_link(SlowTerminate, "slow", 2.0)
        self.plain = self.ctx.spawn_link(Idle)
        self.unlinked = self.ctx.spawn(Idle)

    def handle_call(self, request: Any, from_: Any) -> Any:
        return (self.slow, self.plain, self.unlinked)


class Idle(Actor):
    pass


async def test_a_killed_actors_orphans_are_its_linked_children_still_exiting() -> None:
    async with open_node() as node:
        parent = node.spawn(Parent)
        slow, plain, unlinked = await parent.call("children")
        assert node.orphans(parent) == []  # alive: none
        node.exit(parent, KILL)
        await settle()
        assert not plain.alive  # did not trap: gone at once
        assert unlinked.alive  # not linked: not told to exit, not an orphan
        assert node.orphans(parent) == [slow]
        assert node.context(slow).status() is Status.EXITING
        assert node.whereis("slow") == slow  # still holds its name while it terminates
        assert await node.wait_exit(slow) == KILLED
        assert node.orphans(parent) == []
        assert node.whereis("slow") is None


async def test_a_normal_exit_leaves_no_orphans() -> None:
    async def spawner(ctx: Context, out: Ref) -> None:
        out.send(ctx.spawn_link(SlowTerminate, "slow", 2.0))

    async with open_node() as node:
        with node.inbox() as inbox:
            ref = inbox.spawn(spawner, inbox.ref)
            child = await inbox.receive(timeout=1)
            await node.wait_exit(ref)
            assert node.orphans(ref) == []
            await settle()
            assert child.alive


async def test_a_monitor_on_an_exiting_actor_fires_once_it_has_exited() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(SlowTerminate, "slow", 2.0)
            node.context(ref).stop("done")  # terminate takes 2 s
            await settle()
            assert node.context(ref).status() is Status.EXITING
            mref = inbox.monitor(ref)
            started = node.now()
            assert await expect_down(inbox, ref, timeout=5) == Down(mref, ref, "done")
            assert node.now() - started == pytest.approx(2.0, abs=0.01)
