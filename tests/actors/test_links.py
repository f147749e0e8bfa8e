"""Links: bidirectional exit propagation, normal exits, link to dead actors, unlink."""

from __future__ import annotations

import pytest

from actors import Exit, NoProcError, open_node

from ._support import Boom, Recorder, expect_down, expect_exit, settle

pytestmark = pytest.mark.anyio


async def test_an_abnormal_exit_kills_linked_actors_both_ways() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            a, b, c = (node.spawn(Recorder) for _ in range(3))
            node.context(a).link(b)
            node.context(c).link(b)
            for r in (a, c):
                inbox.monitor(r)
            b.cast(("crash", "middle"))
            for r in (a, c):
                assert isinstance((await expect_down(inbox, r)).reason, Boom)


async def test_normal_exit_does_not_kill_linked_actors() -> None:
    async with open_node() as node:
        a = node.spawn(Recorder)
        b = node.spawn(Recorder)
        trapper = node.spawn(Recorder, True)
        node.context(a).link(b)
        node.context(trapper).link(b)
        b.cast(("stop", "normal"))
        await settle()
        assert not b.alive
        assert a.alive
        assert node.context(a).info().links == ()
        assert await trapper.call("infos") == [Exit(b, "normal")]


async def test_shutdown_exit_kills_linked_non_trapping_actors() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            a = node.spawn(Recorder)
            b = node.spawn(Recorder)
            node.context(a).link(b)
            inbox.monitor(a)
            b.cast(("stop", "shutdown"))
            assert (await expect_down(inbox, a)).reason == "shutdown"


async def test_trapping_actor_receives_exit_and_survives() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = inbox.spawn_link(Recorder)
            ref.cast(("crash", "x"))
            exit_ = await expect_exit(inbox, ref)
            assert isinstance(exit_.reason, Boom)
            assert inbox.ref.alive


async def test_link_to_a_dead_actor() -> None:
    async with open_node() as node:
        dead = node.spawn(Recorder)
        node.exit(dead, "kill")
        plain = node.spawn(Recorder)
        with pytest.raises(NoProcError):
            node.context(plain).link(dead)
        assert plain.alive
        with node.inbox() as inbox:
            inbox.link(dead)  # trapping: a message instead
            assert await expect_exit(inbox, dead) == Exit(dead, "noproc")


async def test_unlink_stops_propagation_and_is_idempotent() -> None:
    async with open_node() as node:
        a = node.spawn(Recorder)
        b = node.spawn(Recorder)
        ctx = node.context(a)
        ctx.link(b)
        assert node.context(b).info().links == (a,)
        node.context(b).unlink(a)  # either side may unlink
        ctx.unlink(b)
        assert ctx.info().links == ()
        b.cast(("crash", "alone"))
        await settle()
        assert a.alive


async def test_link_to_self_is_a_no_op_and_links_are_sets() -> None:
    async with open_node() as node:
        a = node.spawn(Recorder)
        b = node.spawn(Recorder)
        ctx = node.context(a)
        ctx.link(a)
        ctx.link(b)
        ctx.link(b)
        node.context(b).link(a)
        assert ctx.info().links == (b,)


async def test_spawn_link_links_atomically() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            ref = inbox.spawn_link(Recorder)
            assert node.context(ref).info().links == (inbox.ref,)
            assert inbox.info().links == (ref,)
            child = await inbox.start_link(Recorder)
            assert child in inbox.info().links


async def test_closing_an_inbox_is_a_normal_exit_for_its_links() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        with node.inbox() as inbox:
            inbox.link(ref)
        await settle()
        assert ref.alive
        assert node.context(ref).info().links == ()
