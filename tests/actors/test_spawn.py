"""Spawning: sync init inline, async init in the task, start, SpawnError, parents."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog.testing

from actors import (
    Actor,
    Down,
    Exit,
    From,
    NodeClosedError,
    SpawnError,
    Status,
    open_node,
)

from ._support import Boom, Recorder, actor_of, expect_down, settle

pytestmark = pytest.mark.anyio


class Counter(Actor):
    def init(self, start: int = 0) -> None:
        self.n = start

    def handle_cast(self, message: Any) -> None:
        self.n += message

    def handle_call(self, request: Any, from_: From) -> Any:
        return self.n


class FailingInit(Actor):
    def init(self) -> None:
        raise Boom("no")


class AsyncInit(Actor):
    async def init(self, delay: float) -> None:
        await anyio.sleep(delay)
        self.ready = True

    def handle_call(self, request: Any, from_: From) -> Any:
        return self.ready


class AsyncFailingInit(Actor):
    async def init(self) -> None:
        await anyio.sleep(1)
        raise Boom("late")


async def test_spawn_runs_sync_init_inline_with_args() -> None:
    async with open_node() as node:
        ref = node.spawn(Counter, 41)
        assert actor_of(ref).n == 41  # before any checkpoint
        ref.cast(1)
        assert await ref.call("n") == 42


async def test_sync_init_actor_starts_hibernated() -> None:
    async with open_node() as node:
        ref = node.spawn(Counter)
        assert node.context(ref).status() is Status.HIBERNATED
        assert not ref._ctx._has_task
        assert await ref.call("n") == 0
        assert node.context(ref).status() is Status.WAITING


async def test_sync_init_failure_raises_at_call_site_and_the_actor_never_existed() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            with pytest.raises(SpawnError) as info:
                inbox.spawn_link(FailingInit, name="failing")
            assert isinstance(info.value.reason, Boom)
            assert info.value.__cause__ is info.value.reason
            assert node.whereis("failing") is None
            assert list(node.actors()) == [inbox.ref]
            assert inbox.info().links == ()
            await settle()
            with pytest.raises(TimeoutError):
                await inbox.receive(timeout=1)  # no Exit from the failed child


async def test_start_waits_for_async_init() -> None:
    async with open_node() as node:
        before = node.now()
        ref = await node.start(AsyncInit, 2.0)
        assert node.now() - before == pytest.approx(2.0, abs=0.01)
        assert actor_of(ref).ready is True


async def test_spawn_does_not_wait_for_async_init_but_messages_wait_for_it() -> None:
    async with open_node() as node:
        ref = node.spawn(AsyncInit, 1.0)
        assert node.context(ref).status() is Status.STARTING
        assert await ref.call("ready?") is True


async def test_start_raises_spawn_error_when_async_init_fails_without_signals() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            with pytest.raises(SpawnError) as info:
                await inbox.start_link(AsyncFailingInit)
            assert isinstance(info.value.reason, Boom)
            assert inbox.info().links == ()
            with pytest.raises(TimeoutError):
                await inbox.receive(timeout=1)


async def test_spawned_async_init_failure_is_an_ordinary_crash() -> None:
    # spawn (not start) cannot raise later: the failure reaches links and monitors instead.
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = inbox.spawn_link(AsyncFailingInit)
            mref = inbox.monitor(ref)
            down = await expect_down(inbox, ref, timeout=5)
            assert down.monitor == mref
            assert isinstance(down.reason, Boom)


async def test_start_of_sync_and_function_actors_returns_a_live_ref() -> None:
    async def fn(ctx: Any) -> None:
        await ctx.receive()

    async with open_node() as node:
        ref = await node.start(Counter, 3)
        assert await ref.call("n") == 3
        fref = await node.start(fn)
        assert fref.alive
        fref.send("go")
        await settle()
        assert not fref.alive


async def test_spawn_rejects_what_is_not_an_actor() -> None:
    def not_async(ctx: Any) -> None:
        pass

    async with open_node() as node:
        with pytest.raises(TypeError):
            node.spawn(not_async)
        with pytest.raises(TypeError):
            node.spawn(object)
        with pytest.raises(ValueError, match="mailbox_size"):
            node.spawn(Counter, mailbox_size=0)


async def test_default_init_rejects_arguments() -> None:
    class Plain(Actor):
        pass

    async with open_node() as node:
        with pytest.raises(SpawnError) as info:
            node.spawn(Plain, 1)
        assert isinstance(info.value.reason, TypeError)


async def test_spawn_after_the_node_closed_raises() -> None:
    async with open_node() as node:
        pass
    with pytest.raises(NodeClosedError):
        node.spawn(Counter)


async def test_children_know_their_parent() -> None:
    async with open_node() as node:
        parent = node.spawn(Recorder)
        child = node.context(parent).spawn(Recorder)
        assert node.context(child).parent == parent
        assert node.context(parent).parent is None


async def test_spawn_monitor_from_a_context() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref, mref = inbox.spawn_monitor(Recorder)
            ref.cast(("crash", "x"))
            down = await expect_down(inbox, ref)
            assert down.monitor == mref
            assert isinstance(down.reason, Boom)


class CastsToItself(Actor):
    """A sync init that sends to itself and links to a dead actor (both start a task early)."""

    def init(self, dead: Any) -> None:
        self.ctx.trap_exit = True
        self.active = 0
        self.overlaps = 0
        self.handled: list[Any] = []
        self.ref.cast("first")
        self.ref.cast("second")
        self.ctx.link(dead)  # trapping: Exit(dead, "noproc") arrives as a signal

    async def handle_cast(self, message: Any) -> None:
        self.active += 1
        if self.active > 1:
            self.overlaps += 1
        await anyio.sleep(1)
        self.handled.append(message)
        self.active -= 1

    async def handle_info(self, message: Any) -> None:
        await self.handle_cast(message)

    def handle_call(self, request: Any, from_: From) -> Any:
        return (self.handled, self.overlaps)


async def test_messages_sent_during_sync_init_are_handled_by_one_task() -> None:
    async with open_node() as node:
        dead = node.spawn(Recorder)
        node.exit(dead, "kill")
        ref = node.spawn(CastsToItself, dead)
        handled, overlaps = await ref.call("state", timeout=None)
        assert handled == [Exit(dead, "noproc"), "first", "second"]
        assert overlaps == 0


async def test_spawn_monitor_of_a_child_that_fails_in_init_sends_nothing() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            with pytest.raises(SpawnError):
                inbox.spawn_monitor(FailingInit)
            assert inbox.info().monitors == ()
            with pytest.raises(TimeoutError):
                await inbox.receive(lambda m: isinstance(m, Down), timeout=1)


class SpawnsThenFails(Actor):
    """init links children, then fails (raising, or stopping when ``how == "stop"``)."""

    def init(self, children: list[Any], how: str) -> None:
        children.append(self.ctx.spawn_link(Recorder))
        children.append(self.ctx.spawn_link(Recorder))
        children[-1].cast("has a task")
        if how == "stop":
            self.stop("no thanks")
        else:
            raise Boom(how)


class AsyncSpawnsThenFails(Actor):
    async def init(self, children: list[Any]) -> None:
        children.append(self.ctx.spawn_link(Recorder))
        await anyio.sleep(1)
        raise Boom("async")


async def test_children_linked_in_a_failing_init_get_the_exit_signal() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            children: list[Any] = []
            with pytest.raises(SpawnError) as info:
                inbox.spawn_link(SpawnsThenFails, children, "raise")
            await settle()
            assert [c.alive for c in children] == [False, False]
            assert children[0]._ctx.exit_reason is info.value.reason
            children.clear()
            with pytest.raises(SpawnError):
                await inbox.start_link(AsyncSpawnsThenFails, children)
            await settle()
            assert not children[0].alive
            with pytest.raises(TimeoutError):
                await inbox.receive(timeout=1)  # the caller itself got no signal


async def test_stop_in_a_sync_init_fails_the_spawn_with_its_reason() -> None:
    async with open_node() as node:
        children: list[Any] = []
        with pytest.raises(SpawnError) as info:
            node.spawn(SpawnsThenFails, children, "stop")
        assert info.value.reason == "no thanks"
        await settle()
        assert list(node.actors()) == []
        assert node.statistics().actors == 0


async def test_a_failed_init_is_not_logged_as_a_crash() -> None:
    async with open_node() as node:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(SpawnError):
                node.spawn(FailingInit)
            with pytest.raises(SpawnError):
                await node.start(AsyncFailingInit)
        assert [e for e in logs if e["event"] == "actor_crashed"] == []
