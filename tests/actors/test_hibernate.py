"""Hibernation: idle actors give up their task, keep their state, revive in order."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import Actor, Exit, From, Status, open_node
from actors._process import HIBERNATE_SLACK

from ._support import Recorder, expect_exit, settle

pytestmark = pytest.mark.anyio


class Sleepy(Actor):
    hibernate_after = 1.0

    def init(self) -> None:
        self.seen: list[Any] = []

    def handle_cast(self, message: Any) -> None:
        self.seen.append(message)

    def handle_call(self, request: Any, from_: From) -> Any:
        return list(self.seen)


async def test_idle_actor_hibernates_and_revives_with_state_and_order() -> None:
    async with open_node() as node:
        ref = node.spawn(Sleepy)
        ctx = node.context(ref)
        assert ctx.status() is Status.HIBERNATED
        ref.cast(1)
        await settle()
        assert ctx.status() is Status.WAITING
        await anyio.sleep(0.5)
        assert ctx.status() is Status.WAITING  # not idle long enough
        await anyio.sleep(0.6)
        assert ctx.status() is Status.HIBERNATED
        assert not ctx._has_task
        assert ctx._mailbox is None
        for i in range(2, 6):
            ref.cast(i)
        assert ctx.mailbox_statistics().length == 4
        assert await ref.call("seen") == [1, 2, 3, 4, 5]
        assert node.statistics().by_status == {"waiting": 1}


async def test_activity_postpones_hibernation() -> None:
    async with open_node() as node:
        ref = node.spawn(Sleepy)
        ctx = node.context(ref)
        for i in range(5):
            ref.cast(i)
            await anyio.sleep(0.9)
            assert ctx.status() is Status.WAITING
        await anyio.sleep(0.2)
        assert ctx.status() is Status.HIBERNATED


async def test_hibernate_after_option_overrides_the_class_and_none_never_hibernates() -> None:
    async with open_node() as node:
        fast = node.spawn(Sleepy, hibernate_after=0)
        never = node.spawn(Recorder)
        fast.cast("x")
        never.cast("x")
        await anyio.sleep(100)
        assert node.context(fast).status() is Status.HIBERNATED
        assert node.context(never).status() is Status.WAITING
        with pytest.raises(ValueError, match="hibernate_after"):
            node.spawn(Sleepy, hibernate_after=-1)


async def test_hibernated_actor_obeys_exit_signals_and_trapped_exits_revive_it() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            plain = node.spawn(Sleepy)
            trapper = node.spawn(Recorder, True, hibernate_after=1)
            node.context(trapper).link(plain)
            inbox.link(trapper)
            await trapper.call("ping")
            await anyio.sleep(2)
            assert node.context(trapper).status() is Status.HIBERNATED
            node.exit(plain, "shutdown")
            await settle()
            assert await trapper.call("infos") == [Exit(plain, "shutdown")]
            node.exit(trapper, "kill")
            assert (await expect_exit(inbox, trapper)).reason == "killed"


async def test_a_message_at_the_hibernation_deadline_is_not_lost() -> None:
    async with open_node() as node:
        ref = node.spawn(Sleepy)
        ctx = node.context(ref)
        ref.cast("a")
        await settle()
        t0 = node.now()
        await anyio.sleep(1.0 - (node.now() - t0) - 0.0005)
        ref.cast("b")  # just before the deadline
        await anyio.sleep(1.0)
        assert ctx.status() is Status.WAITING  # the deadline moved
        await anyio.sleep(HIBERNATE_SLACK + 0.01)  # hibernation may come up to the slack late
        assert ctx.status() is Status.HIBERNATED
        ref.cast("c")
        assert await ref.call("seen") == ["a", "b", "c"]


async def test_an_actor_keeps_one_hibernation_timer_while_it_has_a_task() -> None:
    async with open_node() as node:
        ref = node.spawn(Sleepy)
        ctx = node.context(ref)
        ref.cast(1)
        await settle()
        timer = ctx._hibernate_timer
        assert timer is not None
        assert timer.pending
        for i in range(2, 5):
            ref.cast(i)
            await settle()
            assert ctx._hibernate_timer is timer  # moved, not replaced
        await anyio.sleep(1.1)
        assert ctx.status() is Status.HIBERNATED
        assert ctx._hibernate_timer is None  # a hibernated actor keeps none
        assert len(node._timers) == 0
        ref.cast(5)
        assert await ref.call("seen") == [1, 2, 3, 4, 5]
        assert ctx._hibernate_timer is not None
        ctx.stop()  # exits with a task: the timer (whose callback refers to it) is dropped
        await settle()
        assert ctx.status() is Status.EXITED
        assert ctx._hibernate_timer is None
        assert len(node._timers) == 0
