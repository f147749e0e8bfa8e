"""Exit signals: reasons, kill vs trap_exit, terminate, parents, priority, crash logs."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest
import structlog.testing

from actors import (
    KILLED,
    Actor,
    Down,
    Exit,
    From,
    Status,
    is_clean_exit,
    open_node,
)

from ._support import Boom, Recorder, actor_of, expect_down, expect_exit, settle

pytestmark = pytest.mark.anyio


class Terminating(Recorder):
    """Records terminate() in a list owned by the test (the actor's state is gone after exit)."""

    def init(self, log: list[object], trap: bool = False) -> None:
        super().init(trap)
        self.log = log

    def terminate(self, reason: object) -> None:
        self.log.append(reason)


async def test_exception_in_a_handler_becomes_the_reason_and_is_logged() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(Recorder)
            inbox.link(ref)
            inbox.monitor(ref)
            with structlog.testing.capture_logs() as logs:
                ref.cast(("crash", "handler"))
                exit_ = await expect_exit(inbox, ref)
                down = await expect_down(inbox, ref)
            assert isinstance(exit_.reason, Boom)
            assert down.reason is exit_.reason
            crashes = [e for e in logs if e["event"] == "actor_crashed"]
            assert len(crashes) == 1
            assert crashes[0]["log_level"] == "error"
            assert crashes[0]["exc_info"] is exit_.reason
            assert crashes[0]["actor"] == repr(ref)


async def test_clean_exits_are_not_logged_as_crashes() -> None:
    async with open_node() as node:
        with structlog.testing.capture_logs() as logs:
            for reason in ("normal", "shutdown", ("shutdown", "x"), "kill"):
                ref = node.spawn(Recorder)
                ref.cast(("stop", reason) if reason != "kill" else "x")
                if reason == "kill":
                    node.exit(ref, "kill")
                await settle()
                assert not ref.alive
        assert [e for e in logs if e["event"] == "actor_crashed"] == []
    assert is_clean_exit("normal")
    assert is_clean_exit(("shutdown", 1))
    assert not is_clean_exit("killed")


async def test_kill_cannot_be_trapped_and_links_see_killed() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            log: list[object] = []
            ref = node.spawn(Terminating, log, True)
            assert node.context(ref).trap_exit
            inbox.link(ref)
            node.exit(ref, "kill")
            exit_ = await expect_exit(inbox, ref)
            assert exit_.reason == KILLED
            assert log == []  # terminate does not run on kill
            assert not ref.alive


async def test_killed_from_a_link_is_trappable() -> None:
    async with open_node() as node:
        victim = node.spawn(Recorder)
        watcher = node.spawn(Recorder, True)
        node.context(watcher).link(victim)
        node.exit(victim, "kill")
        await settle()
        assert watcher.alive
        assert await watcher.call("infos") == [Exit(victim, "killed")]


async def test_killed_from_a_link_kills_a_non_trapping_actor() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            victim = node.spawn(Recorder)
            bystander = node.spawn(Recorder)
            node.context(bystander).link(victim)
            inbox.monitor(bystander)
            node.exit(victim, "kill")
            assert (await expect_down(inbox, bystander)).reason == "killed"


async def test_exit_normal_to_a_non_trapping_actor_is_ignored() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        await ref.call("ping")
        node.exit(ref, "normal")
        with node.inbox() as inbox:
            inbox.exit(ref, "normal")
        await settle()
        assert await ref.call("ping") == "pong"


async def test_exit_normal_to_a_trapping_actor_is_a_message() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(Recorder, True)
            inbox.exit(ref, "normal")
            node.exit(ref, "shutdown")
            assert await ref.call("infos") == [Exit(inbox.ref, "normal"), Exit(None, "shutdown")]


async def test_exit_with_any_other_reason_kills_a_non_trapping_actor() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            log: list[object] = []
            ref = node.spawn(Terminating, log)
            await ref.call("ping")  # now it has a task, parked
            inbox.monitor(ref)
            node.exit(ref, "shutdown")
            assert (await expect_down(inbox, ref)).reason == "shutdown"
            assert log == []  # untrapped exit signals do not run terminate


async def test_exit_to_self_with_normal_stops_the_actor() -> None:
    class SelfExit(Actor):
        def handle_cast(self, message: Any) -> None:
            self.ctx.exit(self.ref, message)

    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(SelfExit)
            inbox.monitor(ref)
            ref.cast("normal")
            assert (await expect_down(inbox, ref)).reason == "normal"


async def test_terminate_runs_on_crash_and_on_stop() -> None:
    async with open_node() as node:
        log: list[object] = []
        a = node.spawn(Terminating, log)
        a.cast(("crash", "c"))
        b = node.spawn(Terminating, log)
        b.cast(("stop", "bye"))
        await settle()
        assert len(log) == 2
        assert "bye" in log
        assert any(isinstance(r, Boom) for r in log)


async def test_stop_from_outside_a_waiting_actor_runs_terminate_and_exits() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            log: list[object] = []
            ref = node.spawn(Terminating, log)
            await ref.call("ping")
            assert node.context(ref).status() is Status.WAITING
            inbox.monitor(ref)
            node.context(ref).stop("from outside")
            down = await expect_down(inbox, ref, timeout=10)
            assert down.reason == "from outside"
            assert log == ["from outside"]


async def test_stop_from_outside_a_hibernated_actor_runs_terminate() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            log: list[object] = []
            ref = node.spawn(Terminating, log)
            assert node.context(ref).status() is Status.HIBERNATED
            inbox.monitor(ref)
            node.context(ref).stop("from outside")
            down = await expect_down(inbox, ref, timeout=10)
            assert down.reason == "from outside"
            assert log == ["from outside"]


async def test_async_terminate_and_kill_during_terminate() -> None:
    class SlowTerminate(Actor):
        def init(self, log: list[object]) -> None:
            self.log = log

        def handle_cast(self, message: Any) -> None:
            self.stop("slow")

        async def terminate(self, reason: object) -> None:
            self.log.append(("start", reason))
            await anyio.sleep(10)
            self.log.append("finished")

    async with open_node() as node:
        with node.inbox() as inbox:
            log: list[object] = []
            ref = node.spawn(SlowTerminate, log)
            inbox.monitor(ref)
            ref.cast("stop")
            await anyio.sleep(1)
            assert node.context(ref).status() is Status.EXITING
            ref.cast("ignored")  # an exiting actor takes no messages
            node.exit(ref, "shutdown")  # also ignored while terminating
            await anyio.sleep(1)
            assert ref.alive
            node.exit(ref, "kill")
            assert (await expect_down(inbox, ref)).reason == "killed"
            assert log == [("start", "slow")]


async def test_parent_exit_makes_a_trapping_class_actor_terminate() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            log: list[object] = []
            parent = node.spawn(Recorder)
            child = node.context(parent).spawn_link(Terminating, log, True)
            inbox.monitor(child)
            parent.cast(("crash", "parent"))
            down = await expect_down(inbox, child)
            assert isinstance(down.reason, Boom)
            assert log == [down.reason]


async def test_exit_from_a_non_parent_is_an_exit_message_for_a_trapping_actor() -> None:
    async with open_node() as node:
        other = node.spawn(Recorder)
        ref = node.spawn(Recorder, True)
        node.context(ref).link(other)
        other.cast(("crash", "other"))
        await settle()
        assert ref.alive
        [exit_] = await ref.call("infos")
        assert exit_.ref == other
        assert isinstance(exit_.reason, Boom)


async def test_parent_exit_signal_via_exit_also_terminates() -> None:
    async with open_node() as node:
        log: list[object] = []
        parent = node.spawn(Recorder)
        child = node.context(parent).spawn(Terminating, log, True)
        node.context(parent).exit(child, "shutdown")
        await settle()
        assert not child.alive
        assert log == ["shutdown"]


class Blocker(Actor):
    """Its first cast blocks until released; records everything it handles afterwards."""

    def init(self) -> None:
        self.ctx.trap_exit = True
        self.release = anyio.Event()
        self.seen: list[Any] = []

    async def handle_cast(self, message: Any) -> None:
        if message == "block":
            await self.release.wait()
        else:
            self.seen.append(message)

    def handle_info(self, message: Any) -> None:
        self.seen.append(message)

    def handle_call(self, request: Any, from_: From) -> Any:
        return self.seen


async def test_trapped_exits_and_downs_jump_ahead_of_queued_messages() -> None:
    async with open_node() as node:
        ref = node.spawn(Blocker)
        ctx = node.context(ref)
        linked = node.spawn(Recorder)
        watched = node.spawn(Recorder)
        ctx.link(linked)
        mref = ctx.monitor(watched)
        ref.cast("block")
        await settle()
        ref.cast("m1")
        ref.send("m2")
        node.exit(linked, "boom")
        node.exit(watched, "kill")
        actor_of(ref).release.set()
        seen = await ref.call("seen")
        assert seen == [Exit(linked, "boom"), Down(mref, watched, "killed"), "m1", "m2"]


async def test_long_link_chain_dies_without_recursion_error() -> None:
    n = 10_000
    async with open_node() as node:
        with node.inbox() as inbox:
            refs = [node.spawn(Recorder) for _ in range(n)]
            for a, b in itertools.pairwise(refs):
                node.context(a).link(b)
            await refs[-1].call("ping")  # one end has a task, the rest are hibernated
            inbox.monitor(refs[-1])
            node.exit(refs[0], "kill")
            down = await expect_down(inbox, refs[-1])
            assert down.reason == "killed"
            assert not any(r.alive for r in refs)
            assert node.statistics().actors == 1  # the inbox


async def test_long_link_chain_of_running_actors_logs_one_crash() -> None:
    # Only the actor whose code raised logs actor_crashed; those it took down do not.
    n = 2_000
    async with open_node() as node:
        with node.inbox() as inbox:
            refs = [node.spawn(Recorder) for _ in range(n)]
            for a, b in itertools.pairwise(refs):
                node.context(a).link(b)
            for r in refs:
                r.cast("wake")
            await settle()
            inbox.monitor(refs[-1])
            with structlog.testing.capture_logs() as logs:
                refs[0].cast(("crash", "first"))
                down = await expect_down(inbox, refs[-1])
            assert isinstance(down.reason, Boom)
            assert not any(r.alive for r in refs)
            crashes = [e for e in logs if e["event"] == "actor_crashed"]
            assert [e["actor"] for e in crashes] == [repr(refs[0])]


async def test_node_close_exits_everything_with_shutdown() -> None:
    reasons: list[object] = []
    async with open_node() as node:
        refs = [node.spawn(Recorder) for _ in range(3)]
        await refs[0].call("ping")
        inbox = node.inbox()
    for r in refs:
        assert not r.alive
        reasons.append(r._ctx.exit_reason)
    assert reasons == ["shutdown"] * 3
    assert not inbox.ref.alive


async def test_wait_exit_returns_the_reason() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        node.send_after(2, ref, "x")
        node.context(ref).link(node.spawn(Recorder))
        async with anyio.create_task_group() as tg:
            tg.start_soon(node.wait_exit, ref)
            node.exit(ref, "bye")
        assert await node.wait_exit(ref) == "bye"
