"""Rate-limited message traces on one actor."""

from __future__ import annotations

import anyio
import pytest

from actors import NoProcError, TraceEvent, open_node

from ._support import Recorder

pytestmark = pytest.mark.anyio


async def test_trace_stops_after_count_events() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        async with node.trace(ref, count=3) as events:
            ref.cast("a")
            ref.send("b")
            await ref.call("ping")
            ref.cast("d")
            got = [ev async for ev in events]
        assert [(e.kind, e.message) for e in got] == [
            ("cast", "a"),
            ("info", "b"),
            ("call", "ping"),
        ]
        assert all(isinstance(e, TraceEvent) and e.ref == ref for e in got)
        assert ref._ctx._tracer is None


async def test_trace_is_rate_limited() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        async with node.trace(ref, count=100, rate=5) as events:
            for i in range(20):
                ref.cast(i)
            await ref.call("got")  # the call itself is over the limit too
            await anyio.sleep(1)
            for i in range(20, 40):
                ref.cast(i)
            await ref.call("got")
            tracer = ref._ctx._tracer
            assert tracer is not None
            assert tracer.dropped == 32
            node.exit(ref, "kill")  # ends the trace
            got = [ev.message async for ev in events]
        assert got == [0, 1, 2, 3, 4, 20, 21, 22, 23, 24]


async def test_trace_ends_when_the_actor_exits_and_when_the_block_is_left() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        async with node.trace(ref, count=10) as events:
            ref.cast("x")
            ref.cast(("crash", "bye"))
            got = [ev.message async for ev in events]
        assert got[0] == "x"
        other = node.spawn(Recorder)
        async with node.trace(other, count=10) as events:
            other.cast("y")
            async for ev in events:
                assert ev.message == "y"
                break
        assert other._ctx._tracer is None
        async with node.trace(other, count=1):
            pass  # never iterated


async def test_trace_function_actor_receive() -> None:
    async def fn(ctx: object) -> None:
        await ctx.receive()  # type: ignore[attr-defined]

    async with open_node() as node:
        ref = node.spawn(fn)
        async with node.trace(ref, count=1) as events:
            ref.send("m")
            assert [e.message async for e in events] == ["m"]


async def test_trace_arguments_are_checked() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        with pytest.raises(ValueError, match="count"):
            async with node.trace(ref, count=0):
                pass
        with pytest.raises(ValueError, match="rate"):
            async with node.trace(ref, count=1, rate=0):
                pass
        async with node.trace(ref, count=1):
            with pytest.raises(ValueError, match="already"):
                async with node.trace(ref, count=1):
                    pass
        node.exit(ref, "kill")
        with pytest.raises(NoProcError):
            async with node.trace(ref, count=1):
                pass
