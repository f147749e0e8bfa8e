"""Monitors: Down with the reason, noproc, demonitor with and without flush."""

from __future__ import annotations

import pytest

from actors import Down, MonitorRef, open_node

from ._support import Boom, Recorder, expect_down, settle

pytestmark = pytest.mark.anyio


async def test_down_carries_the_monitor_ref_and_reason_for_any_exit() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            refs = [node.spawn(Recorder) for _ in range(3)]
            mrefs = [inbox.monitor(r) for r in refs]
            assert len(set(mrefs)) == 3
            refs[0].cast(("stop", "normal"))
            refs[1].cast(("crash", "c"))
            node.exit(refs[2], "kill")
            downs = [await expect_down(inbox, r) for r in refs]
            assert [d.monitor for d in downs] == mrefs
            assert downs[0].reason == "normal"
            assert isinstance(downs[1].reason, Boom)
            assert downs[2].reason == "killed"


async def test_monitoring_a_dead_actor_sends_noproc_at_once() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(Recorder)
            node.exit(ref, "kill")
            mref = inbox.monitor(ref)
            assert await inbox.receive(timeout=0) == Down(mref, ref, "noproc")


async def test_a_monitor_is_one_way_and_does_not_kill() -> None:
    async with open_node() as node:
        watcher = node.spawn(Recorder)
        target = node.spawn(Recorder)
        mref = node.context(watcher).monitor(target)
        assert node.context(target).info().monitored_by == (watcher,)
        assert node.context(watcher).info().monitors == (target,)
        target.cast(("crash", "t"))
        await settle()
        assert watcher.alive
        [down] = await watcher.call("infos")
        assert down.monitor == mref
        assert node.context(watcher).info().monitors == ()


async def test_demonitor_stops_the_down() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(Recorder)
            mref = inbox.monitor(ref)
            assert inbox.demonitor(mref) is True
            assert inbox.demonitor(mref) is False
            assert node.context(ref).info().monitored_by == ()
            node.exit(ref, "kill")
            with pytest.raises(TimeoutError):
                await inbox.receive(timeout=1)


async def test_demonitor_flush_drops_a_queued_down() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            a = node.spawn(Recorder)
            b = node.spawn(Recorder)
            ma = inbox.monitor(a)
            mb = inbox.monitor(b)
            node.exit(a, "kill")
            node.exit(b, "kill")
            assert inbox.demonitor(ma, flush=True) is False  # already fired
            inbox.demonitor(mb)  # no flush: the Down stays
            assert await inbox.receive(timeout=0) == Down(mb, b, "killed")
            with pytest.raises(TimeoutError):
                await inbox.receive(timeout=1)


async def test_two_monitors_on_one_target_give_two_downs() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(Recorder)
            m1 = inbox.monitor(ref)
            m2 = inbox.monitor(ref)
            node.exit(ref, "bye")
            got = {(await expect_down(inbox, ref)).monitor for _ in range(2)}
            assert got == {m1, m2}
            assert all(isinstance(m, MonitorRef) for m in got)


async def test_a_dying_watcher_drops_its_monitors() -> None:
    async with open_node() as node:
        watcher = node.spawn(Recorder)
        target = node.spawn(Recorder)
        node.context(watcher).monitor(target)
        node.exit(watcher, "kill")
        assert node.context(target).info().monitored_by == ()
