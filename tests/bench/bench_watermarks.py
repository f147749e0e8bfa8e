"""Watermark moves per second through a SQLite storage shard: on the writer process's
connection (the backend's path) against the SQLAlchemy engine through the asyncio bridge (the
path before), side by side in one run.

    python tests/bench/bench_watermarks.py [--json] [--quick] [--repeat N]

``--callers`` (100) tasks each move their own ``delivered`` watermark forward ``--moves`` (40)
times through ``Storage.advance_delivered``, as receipts do (one per message delivered).
Per path: ``calls_per_s`` (best of ``--repeat``, 3) and the node process's CPU per call
(``cpu_us_per_call``: every thread of this process, so the bridge's and aiosqlite's threads
count, the writer process does not). Prints a table, then (with ``--json``) one JSON object.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors import open_node
from storage import Backend, ShardOptions, Storage, StorageShard, backend_from_url
from storage._sql import SqlBackend
from tests.bench._report import emit_json, make_parser, note, print_table


def engine_only(url: str) -> Callable[[], Backend]:
    """A backend whose writer process is closed once open: its writes take the engine (the
    path before), except appends, which need that process."""

    class EngineOnly(SqlBackend):
        async def open(self) -> None:
            await super().open()
            if self._writer is not None:
                await self._writer.aclose()
                self._writer = None

    def make() -> Backend:
        backend = backend_from_url(url)
        assert isinstance(backend, SqlBackend)
        return EngineOnly(backend.url)

    return make


async def measure(
    make: Callable[[], Backend] | str, callers: int, moves: int, repeat: int
) -> dict[str, Any]:
    async with open_node() as node:
        await node.start(StorageShard, 0, make, ShardOptions())
        storage = Storage(node, shards=1)
        best = {"calls_per_s": 0.0, "cpu_us_per_call": 0.0}
        base = 0
        for _ in range(repeat):

            async def caller(index: int, first: int) -> None:
                for seq in range(first, first + moves):
                    await storage.advance_delivered(f"u{index}", "d", f"c{index}", seq)

            started, cpu = time.perf_counter(), time.process_time()
            async with trio.open_nursery() as nursery:
                for index in range(callers):
                    nursery.start_soon(caller, index, base + 1)
            elapsed = time.perf_counter() - started
            calls = callers * moves
            rate = calls / elapsed
            if rate > best["calls_per_s"]:
                best = {
                    "calls_per_s": round(rate),
                    "cpu_us_per_call": round(1e6 * (time.process_time() - cpu) / calls, 1),
                }
            base += moves
            assert await storage.advance_delivered("u0", "d", "c0", 1) == base
        return best


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--moves", type=int, default=40)
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    moves = 5 if args.quick else args.moves
    rows = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        for name, make in (
            ("writer process", f"sqlite+aiosqlite:///{tmp}/writer.db"),
            ("engine (bridge)", engine_only(f"sqlite+aiosqlite:///{tmp}/engine.db")),
        ):
            note(f"{name}: {args.callers} callers x {moves} moves, best of {repeat}")
            row = trio.run(measure, make, args.callers, moves, repeat)
            results[name] = row
            rows.append({"path": name, **row})
    writer, engine = results["writer process"], results["engine (bridge)"]
    results["ratio"] = round(writer["calls_per_s"] / max(1, engine["calls_per_s"]), 1)
    print_table("SQLite watermark moves (advance_delivered) through a storage shard", rows)
    print(f"writer process / engine: {results['ratio']}x the calls per second")
    if args.json:
        emit_json(results)


if __name__ == "__main__":
    main()
