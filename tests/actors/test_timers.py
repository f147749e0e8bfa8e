"""Timers on the loop's clock: send_after, cancel, names resolved when fired."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actors import Actor, open_node

from ._support import Recorder

pytestmark = pytest.mark.anyio


async def test_send_after_delivers_at_the_deadline() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            start = node.now()
            node.send_after(2.5, inbox.ref, "late")
            node.send_after(1.0, inbox.ref, "early")
            assert await inbox.receive() == "early"
            assert node.now() - start == pytest.approx(1.0, abs=0.002)
            assert await inbox.receive() == "late"
            assert node.now() - start == pytest.approx(2.5, abs=0.002)


async def test_cancel_returns_the_time_left_and_stops_delivery() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            timer = node.send_after(10, inbox.ref, "never")
            assert timer.pending
            assert node.statistics().timers == 1
            await anyio.sleep(4)
            assert timer.cancel() == pytest.approx(6, abs=0.002)
            assert not timer.pending
            assert timer.cancel() is None
            assert node.statistics().timers == 0
            with pytest.raises(TimeoutError):
                await inbox.receive(timeout=20)


async def test_cancel_after_firing_returns_none() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            timer = node.send_after(1, inbox.ref, "x")
            assert await inbox.receive() == "x"
            assert timer.cancel() is None


async def test_timer_to_a_name_resolves_when_it_fires() -> None:
    async with open_node() as node:
        node.send_after(1, "later", "hello")
        node.send_after(1, "nobody", "lost")
        ref = node.spawn(Recorder, name="later")
        await anyio.sleep(2)
        assert await ref.call("infos") == ["hello"]
        assert node.statistics().dead_letters == {"noproc": 1}
        assert node.dead_letters()[0].to == "nobody"


async def test_timer_to_a_dead_actor_is_a_dead_letter() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        node.send_after(1, ref, "x")
        node.exit(ref, "kill")
        await anyio.sleep(2)
        assert node.statistics().dead_letters == {"noproc": 1}


async def test_negative_delay_is_rejected_and_zero_fires_soon() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            with pytest.raises(ValueError, match="delay"):
                node.send_after(-1, inbox.ref, "x")
            node.send_after(0, inbox.ref, "now")
            assert await inbox.receive(timeout=0.01) == "now"


class Ticker(Actor):
    """Re-arms a timer on every tick; ``"stop"`` cancels it."""

    def init(self, period: float) -> None:
        self.period = period
        self.ticks: list[float] = []
        self.timer = self.ctx.send_after(period, self.ref, "tick")
        self.left: float | None = None

    def handle_info(self, message: Any) -> None:
        self.ticks.append(self.ctx.node.now())
        self.timer = self.ctx.send_after(self.period, self.ref, "tick")

    def handle_cast(self, message: Any) -> None:
        self.left = self.timer.cancel()


async def test_periodic_timer_from_inside_an_actor_and_cancel() -> None:
    async with open_node() as node:
        start = node.now()
        ref = node.spawn(Ticker, 1.0)
        await anyio.sleep(3.5)
        ref.cast("stop")
        await anyio.sleep(5)
        actor = ref._ctx._behaviour
        assert [t - start for t in actor.ticks] == pytest.approx([1, 2, 3], abs=0.003)
        assert actor.left == pytest.approx(0.5, abs=0.003)
        assert node.statistics().timers == 0


async def test_many_timers_fire_in_deadline_order() -> None:
    async with open_node() as node:
        with node.inbox() as inbox:
            delays = [0.0105, 0.0101, 0.5, 0.0102, 3.0, 0.0001]
            for d in delays:
                node.send_after(d, inbox.ref, d)
            got = [await inbox.receive() for _ in delays]
            assert got == sorted(delays)


async def test_a_timer_with_slack_fires_late_by_at_most_the_slack_never_early() -> None:
    async with open_node() as node:
        timers = node._timers
        fired: dict[str, float] = {}
        start = node.now()
        for name, delay in (("a", 0.101), ("b", 0.13), ("c", 0.149)):
            timers.add(start + delay, lambda n=name: fired.setdefault(n, node.now()), slack=0.05)
        # The three share one bucket of 50 ms; a timer without slack keeps its own tick.
        exact = timers.add(start + 0.101, lambda: fired.setdefault("exact", node.now()))
        assert len(timers._buckets) == 2
        await anyio.sleep(0.25)
        for name, delay in (("a", 0.101), ("b", 0.13), ("c", 0.149)):
            assert delay <= fired[name] - start <= delay + 0.05 + 0.001
        assert 0.101 <= fired["exact"] - start <= 0.102 + 0.001
        assert exact.pending is False


async def test_rearm_moves_a_pending_or_spent_timer_and_keeps_its_callback() -> None:
    async with open_node() as node:
        timers = node._timers
        fired: list[float] = []
        start = node.now()
        timer = timers.add(start + 0.1, lambda: fired.append(node.now() - start))
        timers.rearm(timer, start + 0.3)  # pending: moved later
        await anyio.sleep(0.2)
        assert fired == []
        assert timer.pending
        await anyio.sleep(0.15)
        assert len(fired) == 1
        assert 0.3 <= fired[0] <= 0.302
        assert not timer.pending
        timers.rearm(timer, node.now() + 0.05)  # spent: armed again
        assert timer.pending
        await anyio.sleep(0.1)
        assert len(fired) == 2
        assert len(timers) == 0
