"""Function actors and inboxes: selective receive, timeouts, calls, exits."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import (
    Call,
    Context,
    Exit,
    NoProcError,
    ReceiveTimeoutError,
    Status,
    open_node,
)

from ._support import Boom, Recorder, expect_down, settle

pytestmark = pytest.mark.anyio


async def test_function_actor_receives_in_order_and_exits_normally() -> None:
    async def collect(ctx: Context, reply_to: Any, n: int) -> None:
        got = [await ctx.receive() for _ in range(n)]
        reply_to.send(got)

    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(collect, inbox.ref, 3)
            mref = inbox.monitor(ref)
            for i in range(3):
                ref.send(i)
            assert await inbox.receive(lambda m: isinstance(m, list)) == [0, 1, 2]
            down = await expect_down(inbox, ref)
            assert (down.monitor, down.reason) == (mref, "normal")


async def test_selective_receive_leaves_unmatched_messages_in_order() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            for m in ["a", 1, "b", 2, "c"]:
                inbox.ref.send(m)
            assert await inbox.receive(lambda m: isinstance(m, int)) == 1
            assert await inbox.receive(lambda m: isinstance(m, int)) == 2
            assert [await inbox.receive() for _ in range(3)] == ["a", "b", "c"]


async def test_receive_waits_for_a_matching_message() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            node.send_after(1, inbox.ref, "skip")
            node.send_after(2, inbox.ref, "take")
            before = node.now()
            assert await inbox.receive(lambda m: m == "take", timeout=5) == "take"
            assert node.now() - before == pytest.approx(2, abs=0.01)
            assert await inbox.receive(timeout=0) == "skip"


async def test_receive_timeout_is_total_not_per_message() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            for t in (0.5, 1.0, 1.5):
                node.send_after(t, inbox.ref, "noise")
            before = node.now()
            with pytest.raises(ReceiveTimeoutError):
                await inbox.receive(lambda m: m == "never", timeout=2)
            assert node.now() - before == pytest.approx(2, abs=0.01)
            assert node.statistics().timers == 0


async def test_function_actor_crash_is_its_exit_reason() -> None:
    async def crashes(ctx: Context) -> None:
        await ctx.receive()
        raise Boom("fn")

    async with open_node() as node:
        with node.inbox() as inbox:
            ref = inbox.spawn_link(crashes)
            ref.send("go")
            exit_ = await inbox.receive(lambda m: isinstance(m, Exit))
            assert exit_.ref == ref
            assert isinstance(exit_.reason, Boom)


async def test_function_actor_answers_calls() -> None:
    async def server(ctx: Context) -> None:
        while True:
            message = await ctx.receive()
            if isinstance(message, Call):
                message.reply_to.reply(message.request * 2)

    async with open_node() as node:
        ref = node.spawn(server)
        assert await ref.call(21) == 42


async def test_function_actor_trapping_exits_sees_exit_messages_first() -> None:
    async def trapper(ctx: Context, reply_to: Any) -> None:
        ctx.trap_exit = True
        child = ctx.spawn_link(Recorder)
        ctx.ref.send("queued before")
        child.cast(("crash", "child"))
        await anyio.sleep(1)  # both the message and the Exit are waiting now
        first = await ctx.receive()
        second = await ctx.receive()
        reply_to.send((first, second, child))

    async with open_node() as node:
        with node.inbox() as inbox:
            node.spawn(trapper, inbox.ref)
            first, second, child = await inbox.receive()
            assert isinstance(first, Exit)
            assert first.ref == child
            assert isinstance(first.reason, Boom)
            assert second == "queued before"


async def test_function_actor_stop_exits_with_the_reason() -> None:
    async def stops(ctx: Context) -> None:
        await ctx.receive()
        ctx.stop("done")
        await ctx.receive()  # never returns: the actor has stopped

    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(stops)
            inbox.monitor(ref)
            ref.send("go")
            ref.send("again")
            down = await expect_down(inbox, ref)
            assert down.reason == "done"


async def test_function_actor_killed_in_a_sync_section_keeps_the_reason() -> None:
    # Killing a linked actor propagates synchronously back to this one; the function then
    # returns before its next checkpoint. The exit reason must stay "killed", not "normal".
    async def kills_its_link(ctx: Context) -> None:
        other = ctx.spawn_link(Recorder)  # hibernated: it dies synchronously
        await ctx.receive()
        ctx.exit(other, "kill")

    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(kills_its_link)
            inbox.monitor(ref)
            ref.send("go")
            down = await expect_down(inbox, ref)
            assert down.reason == "killed"


async def test_inbox_receive_after_close_raises_noproc() -> None:
    async with open_node() as node:
        inbox = node.inbox()
        inbox.close()
        assert not inbox.ref.alive
        with pytest.raises(NoProcError):
            await inbox.receive()
        inbox.ref.send("x")
        assert node.statistics().dead_letters == {"noproc": 1}


async def test_receive_is_not_for_class_actors() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        with pytest.raises(RuntimeError):
            await node.context(ref).receive()


async def test_function_actor_status_and_behaviour_name() -> None:
    async def waits(ctx: Context) -> None:
        await ctx.receive()

    async with open_node() as node:
        ref = node.spawn(waits)
        await settle()
        info = node.context(ref).info()
        assert info.behaviour.endswith("waits")
        assert info.status in (Status.RUNNING, Status.WAITING)
        ref.send(1)
        await settle()
        assert not ref.alive
