"""Overhead of the storage bridge per call: ``await bridge.run(coro_fn)`` from trio and from
asyncio, against awaiting the same coroutine directly on an asyncio loop.

    python tests/bench/bench_bridge.py [--calls N] [--concurrency C] [--json]

Prints a table, then (last line) one JSON object: per mode, calls/s and µs per call, and the
bridge's added cost per call over the direct await.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage import AsyncioBridge


async def work() -> int:
    await asyncio.sleep(0)  # one loop iteration on the asyncio side, like a tiny DB round trip
    return 1


async def direct(calls: int, concurrency: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            await work()

    start = time.perf_counter()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    return time.perf_counter() - start


def via_trio(bridge: AsyncioBridge, calls: int, concurrency: int) -> float:
    async def main() -> float:
        async def worker(n: int) -> None:
            for _ in range(n):
                await bridge.run(work)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker, calls // concurrency)
        return time.perf_counter() - start

    return trio.run(main)


def via_asyncio(bridge: AsyncioBridge, calls: int, concurrency: int) -> float:
    async def main() -> float:
        async def worker(n: int) -> None:
            for _ in range(n):
                await bridge.run(work)

        start = time.perf_counter()
        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
        return time.perf_counter() - start

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=1, help="callers in flight at once")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed)")
    args = parser.parse_args()
    bridge = AsyncioBridge()
    bridge.acquire()
    try:
        rows: dict[str, dict[str, float]] = {}
        for conc in sorted({1, args.concurrency, 100}):
            timings = {
                "direct_asyncio": asyncio.run(direct(args.calls, conc)),
                "bridge_from_trio": via_trio(bridge, args.calls, conc),
                "bridge_from_asyncio": via_asyncio(bridge, args.calls, conc),
            }
            for mode, seconds in timings.items():
                rows[f"{mode}@c{conc}"] = {
                    "calls_per_s": round(args.calls / seconds),
                    "us_per_call": round(seconds / args.calls * 1e6, 2),
                }
    finally:
        bridge.release()
    print(f"{'mode':<28} {'calls/s':>12} {'µs/call':>10}")
    for mode, row in rows.items():
        print(f"{mode:<28} {row['calls_per_s']:>12,} {row['us_per_call']:>10.2f}")
    overhead = {
        key: round(rows[key]["us_per_call"] - rows[f"direct_asyncio@{key.split('@')[1]}"]
                   ["us_per_call"], 2)
        for key in rows
        if key.startswith("bridge")
    }  # fmt: skip
    print(json.dumps({"calls": args.calls, "modes": rows, "overhead_us_per_call": overhead}))


if __name__ == "__main__":
    main()
