"""SQLite's other writes while the writer process appends: on that process (the backend's
path) against the SQLAlchemy engine's own connection (the path before), side by side in one
run, on one database.

    python tests/bench/bench_sqlite_writes.py [--json] [--quick] [--repeat N]

Two tasks append 200-message batches back to back through the writer process, as a busy
shard's committer does with two transactions in flight. Meanwhile a caller creates
``--creates`` (50) group conversations one after another, and adds each to a member's list
(``create_conversation`` then ``add_user_conversations``, as ``conv_create`` does). The
engine path uses a second backend on the same file with its writer process closed, so only
those writes take the engine. The two paths alternate in rounds of 10. Per path: p50, p99 and
the highest latency of one create-and-add in ms, and how many failed (``Unavailable``:
"database is locked" after the busy timeout). The same again with no appends running is the
idle figure. Prints a table, then (with ``--json``) one JSON object.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage import Conversation, Message, Unavailable, backend_from_url
from storage._sql import SqlBackend
from tests.bench._report import emit_json, make_parser, note, percentile, print_table
from tests.bench.bench_watermarks import engine_only

BATCH = 200
ROUND = 10


async def measure(url: str, creates: int, busy: bool) -> dict[str, dict[str, Any]]:
    writer_path = backend_from_url(url)
    engine_path = engine_only(url)()
    assert isinstance(writer_path, SqlBackend)
    assert isinstance(engine_path, SqlBackend)
    await writer_path.open()
    await engine_path.open()
    samples: dict[str, list[float]] = {"writer process": [], "engine (bridge)": []}
    failed = dict.fromkeys(samples, 0)
    done = trio.Event()
    appended = 0

    async def appender(lane: int) -> None:
        nonlocal appended
        seq = 0
        while not done.is_set():
            batch = [
                Message(
                    f"a{lane}",
                    seq + i,
                    f"{lane}-{seq + i}",
                    "u",
                    f"m{seq + i}",
                    "text",
                    "x" * 200,
                    0,
                )
                for i in range(1, BATCH + 1)
            ]
            await writer_path.append_messages(batch)
            seq += BATCH
            appended += BATCH

    try:
        async with trio.open_nursery() as nursery:
            if busy:
                for lane in (1, 2):
                    nursery.start_soon(appender, lane)
                await trio.sleep(0.5)
            for index in range(creates):
                name = "writer process" if (index // ROUND) % 2 == 0 else "engine (bridge)"
                backend = writer_path if name == "writer process" else engine_path
                conv = f"{'b' if busy else 'i'}{index}"
                started = time.perf_counter()
                try:
                    made = await backend.create_conversation(
                        Conversation(conv, "group", "t", 1, members=frozenset({"x", "y"}))
                    )
                    await backend.add_user_conversations("x", [made.conv])
                except Unavailable:
                    failed[name] += 1
                samples[name].append(1000 * (time.perf_counter() - started))
            done.set()
    finally:
        await engine_path.aclose()
        await writer_path.aclose()
    if busy:
        note(f"  {appended:,} messages appended meanwhile")
    return {
        name: {
            "p50_ms": round(percentile(values, 50), 1),
            "p99_ms": round(percentile(values, 99), 1),
            "max_ms": round(max(values), 1),
            "failed": failed[name],
        }
        for name, values in samples.items()
    }


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=50)
    args = parser.parse_args()
    creates = 20 if args.quick else args.creates
    rows = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        for load in ("idle", "appending"):
            url = f"sqlite+aiosqlite:///{tmp}/{load}.db"
            note(f"{load}: {creates} creates, the paths alternating in rounds of {ROUND}")
            measured = trio.run(measure, url, creates, load == "appending")
            results[load] = measured
            rows.extend({"load": load, "path": path, **row} for path, row in measured.items())
    print_table("SQLite conversation writes, create_conversation + add_user_conversations", rows)
    if args.json:
        emit_json(results)


if __name__ == "__main__":
    main()
