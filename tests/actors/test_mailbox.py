"""Bounded mailboxes: each overflow policy, backpressure, high-water mark, suspend/resume."""

from __future__ import annotations

import anyio
import pytest

from actors import MAILBOX_OVERFLOW, CallError, Overflow, Status, open_node

from ._support import Recorder, expect_down, settle

pytestmark = pytest.mark.anyio


async def test_drop_newest_is_the_default() -> None:
    async with open_node(mailbox_size=3) as node:
        ref = node.spawn(Recorder)
        ctx = node.context(ref)
        assert ctx.mailbox_statistics().overflow is Overflow.DROP_NEWEST
        ctx.suspend()
        for i in range(5):
            ref.cast(i)
        assert node.statistics().dead_letters == {"mailbox_full": 2}
        assert [d.message for d in node.dead_letters()] == [3, 4]
        ctx.resume()
        await settle()
        assert await ref.call("got") == [0, 1, 2]


async def test_drop_oldest_makes_room_by_dropping_the_head() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder, mailbox_size=3, overflow=Overflow.DROP_OLDEST)
        ctx = node.context(ref)
        ctx.suspend()
        for i in range(5):
            ref.cast(i)
        assert [d.message for d in node.dead_letters()] == [0, 1]
        ctx.resume()
        await settle()
        assert ref._ctx._behaviour.got == [2, 3, 4]


async def test_drop_oldest_fails_a_dropped_call() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder, mailbox_size=1, overflow=Overflow.DROP_OLDEST)
        node.context(ref).suspend()
        async with anyio.create_task_group() as tg:
            errors: list[object] = []

            async def caller() -> None:
                try:
                    await ref.call("ping")
                except CallError as exc:
                    errors.append(exc.reason)

            tg.start_soon(caller)
            await settle()
            ref.cast("pushes the call out")
        assert errors == ["mailbox_full"]


async def test_exit_policy_exits_the_actor_with_mailbox_overflow() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(Recorder, mailbox_size=2, overflow=Overflow.EXIT)
            inbox.monitor(ref)
            node.context(ref).suspend()
            ref.cast(1)
            ref.cast(2)
            ref.cast(3)
            down = await expect_down(inbox, ref)
            assert down.reason == MAILBOX_OVERFLOW
            assert node.statistics().dead_letters == {"mailbox_full": 1, "exited": 2}


async def test_backpressure_cast_wait_waits_and_plain_cast_drops() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder, mailbox_size=2, overflow=Overflow.BACKPRESSURE)
        ctx = node.context(ref)
        ctx.suspend()
        ref.cast(1)
        ref.cast(2)
        ref.cast("dropped")  # plain cast never blocks
        assert node.statistics().dead_letters == {"mailbox_full": 1}
        done: list[float] = []

        async def producer() -> None:
            await ref.cast_wait(3)
            await ref.send_wait(4)
            done.append(node.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.sleep(5)
            assert done == []  # still waiting for room
            ctx.resume()
        assert done == [pytest.approx(5, abs=0.01)]
        assert await ref.call("got") == [1, 2, 3, 4]


async def test_cast_wait_gives_up_when_the_target_dies() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder, mailbox_size=1, overflow=Overflow.BACKPRESSURE)
        node.context(ref).suspend()
        ref.cast(1)
        node.send_after(1, ref, "x")
        async with anyio.create_task_group() as tg:
            tg.start_soon(ref.cast_wait, 2)
            await anyio.sleep(2)
            node.exit(ref, "kill")
        assert node.statistics().dead_letters["noproc"] == 1


async def test_high_water_mark_and_length() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder, mailbox_size=10)
        ctx = node.context(ref)
        ctx.suspend()
        for i in range(7):
            ref.cast(i)
        stats = ctx.mailbox_statistics()
        assert (stats.length, stats.capacity, stats.high_water_mark) == (7, 10, 7)
        assert ctx.status() is Status.SUSPENDED
        ctx.resume()
        await ref.call("ping")
        stats = ctx.mailbox_statistics()
        assert (stats.length, stats.high_water_mark) == (0, 8)  # 7 casts and the call


async def test_suspended_actor_still_obeys_exit_signals() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(Recorder)
            await ref.call("ping")
            inbox.monitor(ref)
            node.context(ref).suspend()
            ref.cast("queued")
            await settle()
            assert ref._ctx._behaviour.got == []
            node.exit(ref, "shutdown")
            assert (await expect_down(inbox, ref)).reason == "shutdown"


async def test_resume_is_idempotent_and_delivers_in_order() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)  # hibernated: no task
        ctx = node.context(ref)
        ctx.suspend()
        for i in range(3):
            ref.cast(i)
        await settle()
        assert ctx.status() is Status.SUSPENDED
        ctx.resume()
        ctx.resume()
        assert await ref.call("got") == [0, 1, 2]


async def test_mailbox_size_from_the_actor_class() -> None:
    class Small(Recorder):
        mailbox_size = 1
        overflow = Overflow.DROP_OLDEST

    async with open_node() as node:
        ref = node.spawn(Small)
        stats = node.context(ref).mailbox_statistics()
        assert (stats.capacity, stats.overflow) == (1, Overflow.DROP_OLDEST)
