"""Introspection: ActorInfo, node.actors(), statistics, dead letters, format_status."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from actors import ActorInfo, From, NoProcError, Overflow, Status, open_node

from ._support import Recorder, settle

pytestmark = pytest.mark.anyio


class Summarised(Recorder):
    def format_status(self) -> Mapping[str, Any] | None:
        return {"got": len(self.got)}

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "status":
            return self.ctx.status()
        return super().handle_call(request, from_)


async def test_info_is_a_frozen_snapshot_of_everything() -> None:
    async with open_node() as node:
        await anyio.sleep(3)
        parent = node.spawn(Recorder)
        ref = node.context(parent).spawn_link(
            Summarised, True, name="s", mailbox_size=5, overflow=Overflow.DROP_OLDEST
        )
        watcher = node.spawn(Recorder)
        node.context(watcher).monitor(ref)
        node.context(ref).monitor(parent)
        ref.cast("x")
        ref.cast("y")
        await settle()
        info = node.context(ref).info()
        assert isinstance(info, ActorInfo)
        assert info.ref == ref
        assert info.name == "s"
        assert info.behaviour.endswith("Summarised")
        assert info.status is Status.WAITING
        assert info.mailbox.capacity == 5
        assert info.mailbox.overflow is Overflow.DROP_OLDEST
        assert info.mailbox.high_water_mark == 2
        assert info.processed == 2
        assert info.links == (parent,)
        assert info.monitors == (parent,)
        assert info.monitored_by == (watcher,)
        assert info.parent == parent
        assert info.trap_exit is True
        assert info.started_at == pytest.approx(3, abs=0.01)
        assert info.summary == {"got": 2}
        with pytest.raises(dataclasses.FrozenInstanceError):
            info.name = "other"  # type: ignore[misc]


async def test_status_while_running_and_after_exit() -> None:
    async with open_node() as node:
        ref = node.spawn(Summarised)
        assert await ref.call("status") is Status.RUNNING
        ctx = node.context(ref)
        node.exit(ref, "kill")
        assert ctx.status() is Status.EXITING  # its task has yet to unwind
        assert ref.alive
        await settle()
        assert ctx.status() is Status.EXITED
        assert not ref.alive
        assert ctx.exit_reason == "killed"
        with pytest.raises(NoProcError):
            node.context(ref)


async def test_format_status_errors_are_reported_not_raised() -> None:
    class Broken(Recorder):
        def format_status(self) -> Mapping[str, Any] | None:
            raise RuntimeError("oops")

    async with open_node() as node:
        ref = node.spawn(Broken)
        assert node.context(ref).info().summary == {"format_status_error": "RuntimeError('oops')"}


async def test_actors_and_statistics() -> None:
    async with open_node() as node:
        refs = [node.spawn(Recorder) for _ in range(4)]
        assert list(node.actors()) == refs
        await refs[0].call("ping")
        node.context(refs[1]).suspend()
        node.exit(refs[2], "kill")
        refs[2].cast("lost")
        stats = node.statistics()
        assert stats.actors == 3
        assert stats.by_status == {"waiting": 1, "suspended": 1, "hibernated": 1}
        assert stats.spawned == 4
        assert stats.exited == 1
        assert stats.dead_letters == {"noproc": 1}
        assert stats.timers == 0
        for ref in node.actors():  # a snapshot: safe while actors exit
            node.exit(ref, "kill")
        await settle()
        assert list(node.actors()) == []


async def test_dead_letters_keep_the_most_recent_hundred() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        node.exit(ref, "kill")
        for i in range(150):
            ref.cast(i)
        letters = node.dead_letters()
        assert len(letters) == 100
        assert [d.message for d in letters] == list(range(50, 150))
        assert node.statistics().dead_letters == {"noproc": 150}
        assert letters[0].at == node.now()
