"""The asyncio bridge: results, errors, cancellation, and never blocking the caller's loop."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

from storage import AsyncioBridge, Unavailable

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both caller loops, real clock (the bridge's own loop runs on real time anyway)."""
    return str(request.param)


@pytest.fixture
def bridge() -> Iterator[AsyncioBridge]:
    b = AsyncioBridge()
    b.acquire()
    yield b
    b.release()
    assert not b.running


async def on_bridge_loop(value: int) -> tuple[int, str]:
    await asyncio.sleep(0)
    return value * 2, threading.current_thread().name


async def test_runs_on_the_bridge_thread(bridge: AsyncioBridge) -> None:
    doubled, thread = await bridge.run(on_bridge_loop, 21)
    assert doubled == 42
    assert thread == "parley-asyncio-bridge"
    assert thread != threading.current_thread().name


async def test_exceptions_propagate_unchanged(bridge: AsyncioBridge) -> None:
    async def boom() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        await bridge.run(boom)


async def test_the_caller_loop_keeps_running(bridge: AsyncioBridge) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await bridge.run(asyncio.sleep, 0.2)
        tg.cancel_scope.cancel()
    assert ticks >= 10  # a blocked loop would have ticked once


async def test_cancelling_the_caller_cancels_and_waits_for_the_asyncio_side(
    bridge: AsyncioBridge,
) -> None:
    events: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # unwinding takes a while
            events.append("cancelled")
            raise

    start = time.monotonic()
    with anyio.move_on_after(0.1) as scope:
        await bridge.run(slow)
    assert scope.cancelled_caught
    assert events == ["cancelled"]  # done before run() returned
    assert time.monotonic() - start < 2


async def test_a_stopped_bridge_is_unavailable() -> None:
    b = AsyncioBridge()
    with pytest.raises(Unavailable, match="not running"):
        await b.run(on_bridge_loop, 1)
    b.acquire()
    assert (await b.run(on_bridge_loop, 1))[0] == 2
    b.release()
    with pytest.raises(Unavailable):
        await b.run(on_bridge_loop, 1)
    with pytest.raises(RuntimeError, match="without acquire"):
        b.release()


async def test_shared_bridge_is_one_per_process() -> None:
    assert AsyncioBridge.shared() is AsyncioBridge.shared()


async def test_calls_leave_no_reference_cycles(bridge: AsyncioBridge) -> None:
    # Each call's future, callbacks and their cells must be freed by reference counting: a
    # cycle per call made the node's collector find ~25 objects per storage call.
    await bridge.run(on_bridge_loop, 0)  # first-call set-up (loop caches) out of the count
    gc.collect()
    gc.disable()
    try:
        for i in range(200):
            await bridge.run(on_bridge_loop, i)
        assert gc.collect() < 50
    finally:
        gc.enable()
