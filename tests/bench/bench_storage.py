"""Messages per second through the storage actors, commit latency at half that rate, and the same
inserts done directly with each driver, per backend (SQLite, PostgreSQL, Cassandra).

    python tests/bench/bench_storage.py [--json] [--quick] [--backends sqlite,postgresql,cassandra]
                                        [--convs N] [--seconds S] [--shards N]

* ``msgs_per_s``: ``--convs`` conversations (default 1,000), one writer each (as the
  conversation actor), appending one 200-byte message per call through ``Storage`` to one shard
  actor (group commit, batches of up to 500), for a fixed number of messages. ``--shards N``
  spreads the conversations over N shard actors instead (SQLite: one file each; PostgreSQL: one
  schema each; Cassandra: one keyspace each), all in this one process.
* ``txn_p50_ms``: the shard's own view of a group-commit transaction (the backend call only,
  without queueing); with ``--shards`` the median over shards.
* ``commit_p50_ms`` / ``commit_p99_ms``: the same writers paced at half that rate for
  ``--seconds``: the time from ``append_messages`` to its reply (queueing + commit).
* ``raw_msgs_per_s``: the same rows written directly with the driver, batched as well as it can
  be: sqlite3 ``executemany`` in 500-row transactions; asyncpg ``executemany`` in 500-row
  transactions; cassandra-driver ``execute_concurrent`` of the same statements the backend runs
  per message (the dedupe claim ``IF NOT EXISTS`` and the message insert).

Prints a table, then (last line with ``--json``) one JSON object keyed by backend.
Servers: PostgreSQL ``PARLEY_TEST_POSTGRES`` (default root@127.0.0.1:5432/test), Cassandra
``PARLEY_TEST_CASSANDRA`` (default 127.0.0.1:9042, protocol 3). An unreachable one is skipped.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors import open_node
from storage import (
    Message,
    ShardOptions,
    Storage,
    StorageError,
    StorageShard,
    backend_from_url,
    shard_name,
)
from tests.bench._report import emit_json, make_parser, note, percentile, print_table

BODY = "x" * 200
POSTGRES = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql+asyncpg://root@127.0.0.1:5432/test")
CASSANDRA = os.environ.get("PARLEY_TEST_CASSANDRA", "127.0.0.1:9042")


def message(run: str, conv: int, seq: int) -> Message:
    c = f"{run}-c{conv}"
    return Message(c, seq, f"{c}-{seq}", "u", f"m{seq}", "text", BODY, seq)


# -- through the storage actors ----------------------------------------------------------------


async def through_actors(
    urls: list[str], convs: int, per_conv: int, seconds: float
) -> dict[str, Any]:
    async with open_node() as node:
        for index, url in enumerate(urls):
            await node.start(StorageShard, index, url, ShardOptions(max_queue=100_000))
        storage = Storage(node, shards=len(urls))
        run = secrets.token_hex(3)
        next_seq = [1] * convs

        async def writer(conv: int, count: int) -> None:
            for _ in range(count):
                seq = next_seq[conv]
                next_seq[conv] = seq + 1
                await storage.append_messages([message(run, conv, seq)])

        # warm-up: connections, statement caches
        async with trio.open_nursery() as nursery:
            for conv in range(convs):
                nursery.start_soon(writer, conv, 1)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for conv in range(convs):
                nursery.start_soon(writer, conv, per_conv)
        elapsed = time.perf_counter() - start
        rate = convs * per_conv / elapsed
        statuses = [
            dict(node.context(shard_name(i)).info().summary or {}) for i in range(len(urls))
        ]
        mean_batch = round(sum(s["mean_batch"] for s in statuses) / len(statuses), 1)
        txn_p50_ms = sorted(s["commit_p50_ms"] for s in statuses)[len(statuses) // 2]

        # paced at half the rate: each writer sends every convs / (rate / 2) seconds
        latencies: list[float] = []
        interval = convs / (rate / 2)

        async def paced(conv: int, offset: float) -> None:
            await trio.sleep(offset)
            deadline = trio.current_time() + seconds
            tick = trio.current_time()
            while trio.current_time() < deadline:
                seq = next_seq[conv]
                next_seq[conv] = seq + 1
                t0 = time.perf_counter()
                await storage.append_messages([message(run, conv, seq)])
                latencies.append(time.perf_counter() - t0)
                tick += interval
                await trio.sleep_until(max(tick, trio.current_time()))

        async with trio.open_nursery() as nursery:
            for conv in range(convs):
                nursery.start_soon(paced, conv, interval * conv / convs)
        return {
            "msgs_per_s": round(rate),
            "mean_batch": mean_batch,
            "txn_p50_ms": txn_p50_ms,
            "commit_p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "commit_p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "paced_msgs_per_s": round(len(latencies) / seconds),
        }


# -- the same inserts, directly with the driver ------------------------------------------------


def rows(run: str, convs: int, per_conv: int) -> list[Message]:
    return [message(run, c, s) for s in range(1, per_conv + 1) for c in range(convs)]


def raw_sqlite(path: str, convs: int, per_conv: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    data = [
        (m.conv, m.seq, m.id, m.sender, m.cmid, m.kind, m.body.encode(), True, m.ts)  # type: ignore[union-attr]
        for m in rows(secrets.token_hex(3), convs, per_conv)
    ]
    sql = (
        "INSERT INTO messages (conv, seq, id, sender, cmid, kind, body, body_is_text, ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    start = time.perf_counter()
    for i in range(0, len(data), 500):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(sql, data[i : i + 500])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return len(data) / elapsed


def raw_postgres(schema: str, convs: int, per_conv: int) -> float:
    import asyncpg

    dsn = POSTGRES.replace("postgresql+asyncpg://", "postgresql://").split("?")[0]

    async def go() -> float:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        data = [
            (m.conv, m.seq, m.id, m.sender, m.cmid, m.kind, m.body.encode(), True, m.ts)  # type: ignore[union-attr]
            for m in rows(secrets.token_hex(3), convs, per_conv)
        ]
        sql = (
            "INSERT INTO messages (conv, seq, id, sender, cmid, kind, body, body_is_text, ts) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        start = time.perf_counter()
        for i in range(0, len(data), 500):
            async with conn.transaction():
                await conn.executemany(sql, data[i : i + 500])
        elapsed = time.perf_counter() - start
        await conn.close()
        return len(data) / elapsed

    return asyncio.run(go())


def message_row(m: Message) -> tuple[Any, ...]:
    from storage import BUCKET_SIZE

    body = m.body.encode() if isinstance(m.body, str) else m.body
    return (m.conv, m.seq // BUCKET_SIZE, m.seq, m.id, m.sender, m.cmid, m.kind, body, True, m.ts)


def raw_cassandra(keyspace: str, convs: int, per_conv: int) -> float:
    from cassandra.cluster import Cluster
    from cassandra.concurrent import execute_concurrent_with_args
    from cassandra.io.libevreactor import LibevConnection

    host, _, port = CASSANDRA.partition(":")
    cluster = Cluster(
        [host], port=int(port or 9042), protocol_version=3, connection_class=LibevConnection
    )
    try:
        session = cluster.connect(keyspace)
        claim = session.prepare(
            "INSERT INTO message_dedupe (conv, sender, cmid, seq, id) VALUES (?, ?, ?, ?, ?) "
            "IF NOT EXISTS"
        )
        insert = session.prepare(
            "INSERT INTO messages (conv, bucket, seq, id, sender, cmid, kind, body, "
            "body_is_text, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        data = rows(secrets.token_hex(3), convs, per_conv)
        start = time.perf_counter()
        execute_concurrent_with_args(
            session, claim, [(m.conv, m.sender, m.cmid, m.seq, m.id) for m in data], 100
        )
        execute_concurrent_with_args(
            session,
            insert,
            [message_row(m) for m in data],
            100,
        )
        elapsed = time.perf_counter() - start
    finally:
        cluster.shutdown()
    return len(data) / elapsed


# -- driver ------------------------------------------------------------------------------------


TARGETS: dict[str, dict[str, float]] = {
    "sqlite": {"msgs_per_s": 100_000, "ratio": 0.5, "p99": 20.0},
    "postgresql": {"msgs_per_s": 30_000, "ratio": 0.5, "p99": 20.0},
    "cassandra": {"ratio": 0.8},
}


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql,cassandra")
    parser.add_argument("--convs", type=int, default=None, help="conversations (1000)")
    parser.add_argument("--seconds", type=float, default=None, help="paced run length (3)")
    parser.add_argument("--shards", type=int, default=1, help="shard actors (1)")
    args = parser.parse_args()
    quick = args.quick
    convs = args.convs or (100 if quick else 1000)
    seconds = args.seconds or (0.5 if quick else 3.0)
    results: dict[str, dict[str, Any]] = {}
    tmp = tempfile.mkdtemp(prefix="parley-bench-")
    for kind in args.backends.split(","):
        per_conv = {"sqlite": 20, "postgresql": 20, "cassandra": 5}[kind] // (4 if quick else 1)
        name = f"b_{secrets.token_hex(4)}"
        names = [name] + [f"{name}_{i}" for i in range(1, args.shards)]
        if kind == "sqlite":
            urls = [f"sqlite+aiosqlite:///{tmp}/actors{i}.db" for i in range(args.shards)]
            raw_url = f"sqlite+aiosqlite:///{tmp}/raw.db"
        elif kind == "postgresql":
            urls = [f"{POSTGRES}?schema={n}" for n in names]
            raw_url = urls[0]
        else:
            urls = [f"cassandra://{CASSANDRA}/{n}?protocol_version=3" for n in names]
            raw_url = urls[0]
        try:
            prepared = backend_from_url(raw_url)
            trio.run(prepared.open)
            trio.run(prepared.aclose)
        except StorageError as exc:
            note(f"{kind}: skipped ({exc})")
            continue
        note(f"{kind}: {convs} conversations x {per_conv} messages, {args.shards} shard(s) ...")
        row = trio.run(through_actors, urls, convs, per_conv, seconds)
        if kind == "sqlite":
            raw = raw_sqlite(f"{tmp}/raw.db", convs, per_conv)
        elif kind == "postgresql":
            raw = raw_postgres(name, convs, per_conv)
        else:
            raw = raw_cassandra(name, convs, per_conv)
        row["raw_msgs_per_s"] = round(raw)
        row["ratio_to_raw"] = round(row["msgs_per_s"] / raw, 3)
        target = TARGETS[kind]
        row["meets_targets"] = (
            row["msgs_per_s"] >= target.get("msgs_per_s", 0)
            and row["ratio_to_raw"] >= target["ratio"]
            and row["commit_p99_ms"] <= target.get("p99", math.inf)
        )
        results[kind] = row
        for n in names:
            cleanup(kind, n)
    print_table(
        f"Storage actors: group commit vs the raw driver ({args.shards} shard(s))",
        [{"backend": k, **v} for k, v in results.items()],
    )
    if args.json:
        emit_json(results)


def cleanup(kind: str, name: str) -> None:
    if kind == "postgresql":
        import asyncpg

        dsn = POSTGRES.replace("postgresql+asyncpg://", "postgresql://").split("?")[0]

        async def drop() -> None:
            conn = await asyncpg.connect(dsn)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            await conn.close()

        asyncio.run(drop())
    elif kind == "cassandra":
        from cassandra.cluster import Cluster
        from cassandra.io.libevreactor import LibevConnection

        host, _, port = CASSANDRA.partition(":")
        cluster = Cluster(
            [host], port=int(port or 9042), protocol_version=3, connection_class=LibevConnection
        )
        try:
            cluster.connect().execute(f'DROP KEYSPACE IF EXISTS "{name}"')
        finally:
            cluster.shutdown()


if __name__ == "__main__":
    main()
