"""cast/send: order, dead letters, non-blocking variants, fairness between busy actors."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import structlog.testing

from actors import BUDGET, Actor, From, WouldBlock, open_node

from ._support import Recorder, settle

pytestmark = pytest.mark.anyio


async def test_cast_and_send_arrive_in_order_at_their_handlers() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        for i in range(5):
            ref.cast(i)
            ref.send(-i)
        assert await ref.call("got") == [0, 0, 1, -1, 2, -2, 3, -3, 4, -4]
        assert await ref.call("infos") == [0, -1, -2, -3, -4]


async def test_messages_to_a_dead_actor_are_dead_letters() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        node.exit(ref, "kill")
        ref.cast("c")
        ref.send("s")
        ref.cast_nowait("n")
        await ref.cast_wait("w")
        assert node.statistics().dead_letters == {"noproc": 4}
        letters = node.dead_letters()
        assert [(d.to, d.message, d.reason) for d in letters] == [
            (ref, "c", "noproc"),
            (ref, "s", "noproc"),
            (ref, "n", "noproc"),
            (ref, "w", "noproc"),
        ]


async def test_messages_queued_when_an_actor_exits_are_dead_letters() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        node.context(ref).suspend()
        ref.cast(1)
        ref.send(2)
        node.exit(ref, "kill")
        assert node.statistics().dead_letters == {"exited": 2}


async def test_nowait_variants_raise_would_block_when_full() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder, mailbox_size=2)
        node.context(ref).suspend()
        ref.cast_nowait(1)
        ref.send_nowait(2)
        with pytest.raises(WouldBlock):
            ref.cast_nowait(3)
        with pytest.raises(WouldBlock):
            ref.send_nowait(4)
        assert node.statistics().dead_letters == {}
        node.context(ref).resume()
        await settle()
        assert await ref.call("got") == [1, 2]


async def test_unexpected_info_is_logged_and_the_actor_carries_on() -> None:
    class NoInfo(Actor):
        def handle_call(self, request: Any, from_: From) -> Any:
            return "alive"

    async with open_node() as node:
        ref = node.spawn(NoInfo)
        with structlog.testing.capture_logs() as logs:
            ref.send("stray")
            assert await ref.call("?") == "alive"
        assert [e["event"] for e in logs] == ["unexpected_info"]


async def test_default_handle_cast_crashes() -> None:
    class NoCast(Actor):
        pass

    async with open_node() as node:
        with node.inbox() as inbox:
            ref = node.spawn(NoCast)
            inbox.monitor(ref)
            with structlog.testing.capture_logs():
                ref.cast("x")
                down = await inbox.receive()
            assert isinstance(down.reason, NotImplementedError)


class Tally(Actor):
    """Appends (its tag, count) to a shared log every 100 messages."""

    def init(self, tag: str, log: list[tuple[str, int]]) -> None:
        self.tag = tag
        self.log = log
        self.n = 0

    def handle_cast(self, message: Any) -> None:
        self.n += 1
        if self.n % 100 == 0:
            self.log.append((self.tag, self.n))


async def test_busy_actors_share_the_loop_in_batches() -> None:
    n = 3 * BUDGET
    async with open_node() as node:
        log: list[tuple[str, int]] = []
        a = node.spawn(Tally, "a", log)
        b = node.spawn(Tally, "b", log)
        for _ in range(n):
            a.cast(None)
            b.cast(None)
        await settle()
        tags = [tag for tag, _ in log]
        assert tags.count("a") == tags.count("b") == n // 100
        # Each ran one budget at a time (trio may run the same task at the end of one scheduler
        # batch and the start of the next: two budgets); neither finished before the other.
        assert max(_runs(tags)) <= 2 * BUDGET // 100
        assert log.index(("a", n)) > log.index(("b", BUDGET))
        assert log.index(("b", n)) > log.index(("a", BUDGET))


def _runs(tags: list[str]) -> list[int]:
    runs = [1]
    for x, y in itertools.pairwise(tags):
        if x == y:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


async def test_refs_compare_by_actor_and_report_liveness() -> None:
    async with open_node() as node:
        a = node.spawn(Recorder, name="a")
        b = node.spawn(Recorder)
        assert a == node.whereis("a")
        assert a != b
        assert "a" in repr(a)
        assert a.name == "a"
        assert b.name is None
        assert a.alive
        node.exit(a, "kill")
        assert not a.alive
        assert node.lookup(b.pid) == b
        assert node.lookup(a.pid) is None
