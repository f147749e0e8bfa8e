"""Same-run baselines the actor benchmarks are compared against.

Each function takes a count and returns a rate per second, measured inside its event loop (loop
start-up and shutdown are not timed). Every one uses its library the idiomatic way, with nothing
slowed down and nothing special tuned:

- ``trio_channel_msgs_per_s``: one producer ``await send()``-ing ``n`` ints into a bounded
  (1024) trio memory channel, one consumer ``async for``-ing them until all ``n`` arrived.
- ``trio_channel_nowait_msgs_per_s`` (extra): the same channel used without a checkpoint per
  message, the ceiling for a non-blocking ``cast`` on trio.
- ``trio_channel_roundtrips_per_s``: ping-pong of ``n`` ints over two trio memory channels.
- ``asyncio_queue_msgs_per_s``: one producer ``await put()``-ing ``n`` ints into a bounded (1024)
  ``asyncio.Queue``, one consumer ``await get()``-ing them until all ``n`` were processed.
- ``pykka_tell_msgs_per_s``: ``n`` tells to a Pykka ``ThreadingActor``, until it processed all.
- ``pykka_ask_roundtrips_per_s``: ``n`` sequential ``ask`` round trips to a ``ThreadingActor``.

Run ``python -m tests.bench._baselines [--quick] [--json]`` to print them all.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file: make `tests.bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench._report import (
    BenchOptions,
    Timer,
    best_of,
    emit_json,
    parse_options,
    print_table,
)

CHANNEL_BUFFER = 1024
MSGS_N = 200_000
ROUNDTRIPS_N = 50_000
QUICK_MSGS_N = 20_000
QUICK_ROUNDTRIPS_N = 5_000


def trio_channel_msgs_per_s(n: int = MSGS_N) -> float:
    """Messages per second through a bounded trio memory channel, one producer to one consumer."""
    import trio

    async def main() -> float:
        send, receive = trio.open_memory_channel[int](CHANNEL_BUFFER)
        received = 0

        async def producer() -> None:
            async with send:
                for i in range(n):
                    await send.send(i)

        async def consumer() -> None:
            nonlocal received
            async with receive:
                async for _ in receive:
                    received += 1

        with Timer() as timer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer)
                nursery.start_soon(producer)
        assert received == n
        return timer.rate(n)

    return trio.run(main)


def trio_channel_nowait_msgs_per_s(n: int = MSGS_N) -> float:
    """Like :func:`trio_channel_msgs_per_s`, with both sides avoiding a checkpoint per message.

    Not one of the issues' baselines: the ceiling trio allows for a non-blocking cast. The
    producer ``send_nowait()``-s and awaits ``send()`` only when the buffer is full (a ``cast``
    never blocks); the consumer awaits one message, then drains what is buffered with
    ``receive_nowait()`` (an actor draining its mailbox in batches).
    """
    import trio

    async def main() -> float:
        send, receive = trio.open_memory_channel[int](CHANNEL_BUFFER)
        received = 0

        async def producer() -> None:
            async with send:
                for i in range(n):
                    try:
                        send.send_nowait(i)
                    except trio.WouldBlock:
                        await send.send(i)

        async def consumer() -> None:
            nonlocal received
            async with receive:
                while True:
                    try:
                        await receive.receive()
                    except trio.EndOfChannel:
                        return
                    received += 1
                    while True:
                        try:
                            receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        received += 1

        with Timer() as timer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer)
                nursery.start_soon(producer)
        assert received == n
        return timer.rate(n)

    return trio.run(main)


def trio_channel_roundtrips_per_s(n: int = ROUNDTRIPS_N) -> float:
    """Round trips per second of ping-pong over two trio memory channels."""
    import trio

    async def main() -> float:
        request_send, request_receive = trio.open_memory_channel[int](1)
        reply_send, reply_receive = trio.open_memory_channel[int](1)

        async def echo() -> None:
            async with request_receive, reply_send:
                async for value in request_receive:
                    await reply_send.send(value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            with Timer() as timer:
                async with request_send:
                    for i in range(n):
                        await request_send.send(i)
                        reply = await reply_receive.receive()
                        assert reply == i
        return timer.rate(n)

    return trio.run(main)


def asyncio_queue_msgs_per_s(n: int = MSGS_N) -> float:
    """Messages per second through a bounded ``asyncio.Queue``, one producer to one consumer."""

    async def main() -> float:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=CHANNEL_BUFFER)
        received = 0

        async def producer() -> None:
            for i in range(n):
                await queue.put(i)

        async def consumer() -> None:
            nonlocal received
            for _ in range(n):
                await queue.get()
                received += 1

        with Timer() as timer:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(consumer())
                tg.create_task(producer())
        assert received == n
        return timer.rate(n)

    return asyncio.run(main())


def pykka_tell_msgs_per_s(n: int = MSGS_N) -> float:
    """Messages per second told to a Pykka ``ThreadingActor``, until it has processed them all."""
    import pykka

    done = threading.Event()

    class Counter(pykka.ThreadingActor):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def on_receive(self, message: Any) -> None:
            self.count += 1
            if self.count == n:
                done.set()

    ref = Counter.start()
    try:
        with Timer() as timer:
            for i in range(n):
                ref.tell(i)
            done.wait()
    finally:
        ref.stop()
    return timer.rate(n)


def pykka_ask_roundtrips_per_s(n: int = ROUNDTRIPS_N) -> float:
    """Round trips per second of sequential ``ask`` calls to a Pykka ``ThreadingActor``."""
    import pykka

    class Echo(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            return message

    ref = Echo.start()
    try:
        with Timer() as timer:
            for i in range(n):
                reply = ref.ask(i)
                assert reply == i
    finally:
        ref.stop()
    return timer.rate(n)


def all_baselines(options: BenchOptions) -> dict[str, float]:
    """Every baseline above, best of ``options.repeat`` runs, keyed by its function's name."""
    msgs = options.count(MSGS_N, QUICK_MSGS_N)
    trips = options.count(ROUNDTRIPS_N, QUICK_ROUNDTRIPS_N)
    r = options.repeat
    return {
        "trio_channel_msgs_per_s": best_of(r, lambda: trio_channel_msgs_per_s(msgs)),
        "trio_channel_nowait_msgs_per_s": best_of(r, lambda: trio_channel_nowait_msgs_per_s(msgs)),
        "trio_channel_roundtrips_per_s": best_of(r, lambda: trio_channel_roundtrips_per_s(trips)),
        "asyncio_queue_msgs_per_s": best_of(r, lambda: asyncio_queue_msgs_per_s(msgs)),
        "pykka_tell_msgs_per_s": best_of(r, lambda: pykka_tell_msgs_per_s(msgs)),
        "pykka_ask_roundtrips_per_s": best_of(r, lambda: pykka_ask_roundtrips_per_s(trips)),
    }


def main(argv: list[str] | None = None) -> None:
    options = parse_options("Same-run baselines: trio channels, asyncio.Queue, Pykka.", argv)
    baselines = all_baselines(options)
    print_table(
        "Baselines (per second)", [{"baseline": k, "rate": v} for k, v in baselines.items()]
    )
    if options.json:
        emit_json({"quick": options.quick, "baselines": baselines})


if __name__ == "__main__":
    main()
