"""Messages per second through the storage actors, commit latency at half that rate, and the same
inserts done directly with each driver, per backend (SQLite, PostgreSQL, Cassandra).

    python tests/bench/bench_storage.py [--json] [--quick] [--repeat N] [--convs N] [--seconds S]
        [--shards N] [--per-call N] [--pipeline N] [--backends sqlite,postgresql,cassandra,noop]

* ``msgs_per_s`` (the figure compared with the targets): ``--convs`` conversations (default
  1,000), one writer each (as the conversation actor), appending one 200-byte message per call
  through ``Storage`` to one shard actor (group commit, batches of up to 500); best of
  ``--repeat`` (3). ``--shards N`` spreads the conversations over N shard actors instead
  (SQLite: one file each; PostgreSQL: one schema each; Cassandra: one keyspace each), all in
  this one process. ``mean_batch``: messages per transaction; ``gc_share``: the part of that
  run spent in the cyclic garbage collector.
* ``batched_msgs_per_s``: the same writers appending ``--per-call`` (10) messages per call, as
  a conversation actor does when it commits what queued up while its previous commit was in
  flight (best of ``--repeat``, alternated with the one-per-call runs). Not the headline.
* ``txn_p50_ms``: the shard's own view of a group-commit transaction (the backend call only,
  without queueing); with ``--shards`` the median over shards.
* ``commit_p50_ms`` / ``commit_p99_ms``: one message per call, the writers paced at
  ``half_rate`` (half of ``msgs_per_s``): the time from ``append_messages`` to its reply
  (queueing + commit). ``paced_msgs_per_s`` is the rate the paced run actually held. The paced
  run has shard actors of its own on fresh databases and writes as many messages as one
  headline run (the first quarter a warm-up), so it sees the database in the state the rate
  was measured in (SQLite slows down several times as its indexes grow: a transaction then
  dirties a page per message in each). ``--seconds S``: a window of S seconds after a second
  of warm-up instead.
* ``raw_msgs_per_s``: the same rows written directly with the driver, batched as well as it can
  be: the best of ``--repeat`` runs of each way of batching, and the best way (``raw_how``;
  all in ``raw_by_method``): sqlite3 in 500-row transactions by ``executemany`` or by
  multi-row ``INSERT`` statements; asyncpg in 500-row transactions by ``executemany``, COPY
  (``copy_records_to_table``) or one ``INSERT ... SELECT unnest(...)``; cassandra-driver
  ``execute_concurrent`` of the same statements the backend runs per message (the dedupe
  claim ``IF NOT EXISTS`` and the message insert).
* ``noop``: a diagnostic row, not a backend: a ``Backend`` whose ``append_messages`` returns at
  once, so the figures are the actor path's own ceiling on this machine.

The process collects garbage with the node's ``server.gc_thresholds`` (as ``parley serve`` sets
them), since it stands for the node's storage path; ``--gc-thresholds 700,10,10`` measures with
CPython's defaults.

Prints a table, then (last line with ``--json``) one JSON object keyed by backend.
Servers: PostgreSQL ``PARLEY_TEST_POSTGRES`` (default root@127.0.0.1:5432/test), Cassandra
``PARLEY_TEST_CASSANDRA`` (default 127.0.0.1:9042, protocol 3). An unreachable one is skipped.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import outcome
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors import open_node
from config import ServerSettings
from storage import (
    DEFAULT_PIPELINE,
    AppendResult,
    Backend,
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
SLOTS = 50  # groups of writers the paced run releases in turn
PACED_PREFIX = "bench.paced"


#: Message ids, in the order the messages are made. The node's ids are ULIDs, which sort by
#: creation time, so its id index grows at one end; ids spread like ``{conv}-{seq}`` would
#: cost a page per message there too. A counter rather than ULIDs keeps the 5 us a ULID takes
#: out of the loop being measured.
_IDS = itertools.count()


def message(run: str, conv: int, seq: int) -> Message:
    c = f"{run}-c{conv}"
    return Message(c, seq, f"{run}{next(_IDS):020d}", "u", f"m{seq}", "text", BODY, seq)


class NoopBackend(Backend):
    """A backend whose ``append_messages`` returns at once: the actor path's own ceiling.

    Diagnostic only (``--backends noop``); every other call is unsupported.
    """

    name = "noop"

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def append_messages(self, batch: Sequence[Message]) -> list[AppendResult]:
        return [AppendResult(m, False) for m in batch]

    # Every other call: not part of the measure.

    async def messages_after(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def messages_before(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def last_seq(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def create_conversation(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def get_conversation(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def find_direct(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def add_members(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def remove_members(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def set_role(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def add_user_conversations(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def remove_user_conversations(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def users_conversations(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def user_conversations(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def advance_delivered(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def advance_read(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def touch_user(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def touch_users(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def last_seen(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


# -- through the storage actors ----------------------------------------------------------------


class GcTimer:
    """Seconds the cyclic garbage collector ran while ``running`` (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.running = False
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.running:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


async def through_actors(
    urls: list[str | type[Backend]],
    paced_urls: list[str | type[Backend]],
    convs: int,
    per_conv: int,
    seconds: float,
    repeat: int,
    per_call: int,
    pipeline: int = DEFAULT_PIPELINE,
) -> dict[str, Any]:
    async with open_node() as node:
        for index, url in enumerate(urls):
            options = ShardOptions(max_queue=100_000, pipeline=pipeline)
            await node.start(StorageShard, index, url, options)
        storage = Storage(node, shards=len(urls))
        shards = range(len(urls))
        run = secrets.token_hex(3)
        next_seq = [1] * convs
        gc_timer = GcTimer()
        gc.callbacks.append(gc_timer)

        async def writer(conv: int, calls: int, size: int) -> None:
            for _ in range(calls):
                seq = next_seq[conv]
                next_seq[conv] = seq + size
                await storage.append_messages(
                    [message(run, conv, s) for s in range(seq, seq + size)]
                )

        def shard_totals() -> tuple[int, int, float]:
            """(commits, messages committed, median transaction ms) over the shards."""
            statuses = [dict(node.context(shard_name(i)).info().summary or {}) for i in shards]
            p50 = sorted(s["commit_p50_ms"] or 0.0 for s in statuses)[len(statuses) // 2]
            return (
                sum(s["commits"] for s in statuses),
                sum(s["committed_messages"] for s in statuses),
                p50,
            )

        async def drive(calls: int, size: int) -> dict[str, float]:
            commits, committed, _ = shard_totals()
            gc_timer.seconds, gc_timer.running = 0.0, True
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for conv in range(convs):
                    nursery.start_soon(writer, conv, calls, size)
            elapsed = time.perf_counter() - start
            gc_timer.running = False
            commits_after, committed_after, txn_p50_ms = shard_totals()
            return {
                "rate": convs * calls * size / elapsed,
                "gc_share": gc_timer.seconds / elapsed,
                "mean_batch": (committed_after - committed) / max(1, commits_after - commits),
                "txn_p50_ms": txn_p50_ms,
            }

        try:
            # warm-up: connections, statement caches
            await drive(1, 1)
            # one message per call (the headline), then `per_call` messages per call; best of
            # `repeat` each, alternated so that both see the same machine
            best: dict[int, dict[str, float]] = {1: {"rate": 0.0}, per_call: {"rate": 0.0}}
            for _ in range(repeat):
                for size in best:
                    measured = await drive(max(1, per_conv // size), size)
                    if measured["rate"] > best[size]["rate"]:
                        best[size] = measured
            one, batched = best[1], best[per_call]
            rate = one["rate"]

            # paced at half the headline rate: the writers are split into SLOTS groups, and a
            # pacer releases one group every interval / SLOTS seconds, so each writer is due one
            # message per interval (a timer per writer per message would cost the loop as much
            # as the append). A writer still waiting for its previous commit when its group is
            # released sends as soon as it returns. Only calls sent inside the window count.
            # The paced run gets shards of its own on fresh databases, and by default writes as
            # many messages as one headline run (``per_conv`` per writer, the first quarter a
            # warm-up): it sees the database in the state the rate was measured in. SQLite's
            # rate depends on that state: a 500-message transaction over 1,000 conversations
            # dirties a page per message in each of two indexes, so the same inserts that run
            # at ~100,000/s into a fresh database hold ~30,000/s once it has ~150,000 rows
            # (docs/benchmarks.md). A paced run three times longer than a headline run went
            # into that range, at half of a rate measured before it.
            for index, url in enumerate(paced_urls):
                options = ShardOptions(
                    max_queue=100_000, name_prefix=PACED_PREFIX, pipeline=pipeline
                )
                await node.start(StorageShard, index, url, options)
            storage = Storage(node, shards=len(paced_urls), prefix=PACED_PREFIX)
            interval = convs / (rate / 2)
            slots = min(SLOTS, convs)
            parked: list[list[trio.lowlevel.Task]] = [[] for _ in range(slots)]
            released = [0] * slots
            latencies: list[float] = []
            counting = False

            def abort(_: object) -> trio.lowlevel.Abort:
                return trio.lowlevel.Abort.SUCCEEDED

            async def paced(conv: int) -> None:
                slot, sent = conv % slots, 0
                while True:
                    if sent == released[slot]:
                        parked[slot].append(trio.lowlevel.current_task())
                        if not await trio.lowlevel.wait_task_rescheduled(abort):
                            return
                    sent += 1
                    seq = next_seq[conv]
                    next_seq[conv] = seq + 1
                    counted = counting
                    t0 = time.perf_counter()
                    await storage.append_messages([message(run, conv, seq)])
                    if counted:
                        latencies.append(time.perf_counter() - t0)

            async with trio.open_nursery() as nursery:
                for conv in range(convs):
                    nursery.start_soon(paced, conv)
                await trio.testing.wait_all_tasks_blocked()
                tick = trio.current_time()
                step = interval / slots
                if seconds:  # a second of warm-up, then the window
                    warmup, window = math.ceil(1.0 / step), math.ceil(seconds / step)
                else:  # per_conv messages per writer
                    total = per_conv * slots
                    warmup = total // 4
                    window = total - warmup
                window_s = window * step
                for i in range(warmup + window):
                    counting = i >= warmup
                    slot = i % slots
                    released[slot] += 1
                    waiting, parked[slot] = parked[slot], []
                    for task in waiting:
                        trio.lowlevel.reschedule(task, outcome.Value(True))
                    tick += step
                    await trio.sleep_until(tick)
                counting = False
                nursery.cancel_scope.cancel()
        finally:
            gc.callbacks.remove(gc_timer)
        return {
            "msgs_per_s": round(rate),
            "mean_batch": round(one["mean_batch"], 1),
            "txn_p50_ms": one["txn_p50_ms"],
            "gc_share": round(one["gc_share"], 2),
            "batched_msgs_per_s": round(batched["rate"]),
            "batched_mean_batch": round(batched["mean_batch"], 1),
            "batched_txn_p50_ms": batched["txn_p50_ms"],
            "half_rate": round(rate / 2),
            "paced_msgs_per_s": round(len(latencies) / window_s),
            "commit_p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "commit_p99_ms": round(percentile(latencies, 99) * 1000, 2),
        }


# -- the same inserts, directly with the driver ------------------------------------------------


def rows(run: str, convs: int, per_conv: int) -> list[Message]:
    return [message(run, c, s) for s in range(1, per_conv + 1) for c in range(convs)]


RAW_COLUMNS = "conv, seq, id, sender, cmid, kind, body, body_is_text, ts"


def raw_rows(convs: int, per_conv: int) -> list[tuple[Any, ...]]:
    return [
        (m.conv, m.seq, m.id, m.sender, m.cmid, m.kind, m.body.encode(), True, m.ts)  # type: ignore[union-attr]
        for m in rows(secrets.token_hex(3), convs, per_conv)
    ]


def raw_sqlite(path: str, convs: int, per_conv: int) -> dict[str, float]:
    """Rows per second with sqlite3 in 500-row transactions, each way of batching: one
    ``executemany`` per transaction, and multi-row ``INSERT`` statements (64, 32, ... rows).

    Each way starts from a copy of ``path`` (the migrated, empty database), as the first
    run through the actors does: a 500-row transaction over 1,000 conversations costs several
    times more once the tables hold a few hundred thousand rows."""
    one = f"INSERT INTO messages ({RAW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

    def executemany(batch: list[tuple[Any, ...]]) -> None:
        db.executemany(one, batch)

    def multirow(batch: list[tuple[Any, ...]]) -> None:
        i = 0
        while i < len(batch):
            size = 64
            while size > len(batch) - i:
                size //= 2
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * size)
            params = [v for row in batch[i : i + size] for v in row]
            db.execute(f"INSERT INTO messages ({RAW_COLUMNS}) VALUES {values}", params)
            i += size

    rates = {}
    db = sqlite3.connect(":memory:")
    for name, insert in (("executemany", executemany), ("multirow", multirow)):
        fresh = f"{path}.{name}-{secrets.token_hex(3)}"
        shutil.copyfile(path, fresh)
        db.close()
        db = sqlite3.connect(fresh, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        data = raw_rows(convs, per_conv)
        start = time.perf_counter()
        for i in range(0, len(data), 500):
            db.execute("BEGIN IMMEDIATE")
            insert(data[i : i + 500])
            db.execute("COMMIT")
        rates[name] = len(data) / (time.perf_counter() - start)
    db.close()
    return rates


def raw_postgres(schema: str, convs: int, per_conv: int) -> dict[str, float]:
    """Rows per second with asyncpg in 500-row transactions, each way of batching:
    ``executemany``, ``copy_records_to_table`` (COPY), and one ``INSERT ... SELECT unnest``."""
    import asyncpg

    dsn = POSTGRES.replace("postgresql+asyncpg://", "postgresql://").split("?")[0]
    one = f"INSERT INTO messages ({RAW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    unnest = (
        f"INSERT INTO messages ({RAW_COLUMNS}) SELECT * FROM unnest($1::text[], $2::bigint[], "
        "$3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::boolean[], $9::bigint[])"
    )

    async def go() -> dict[str, float]:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})

        async def executemany(batch: list[tuple[Any, ...]]) -> None:
            await conn.executemany(one, batch)

        async def copy(batch: list[tuple[Any, ...]]) -> None:
            await conn.copy_records_to_table(
                "messages", records=batch, columns=RAW_COLUMNS.split(", "), schema_name=schema
            )

        async def arrays(batch: list[tuple[Any, ...]]) -> None:
            await conn.execute(unnest, *(list(column) for column in zip(*batch, strict=True)))

        rates = {}
        for name, insert in (("executemany", executemany), ("copy", copy), ("unnest", arrays)):
            data = raw_rows(convs, per_conv)
            start = time.perf_counter()
            for i in range(0, len(data), 500):
                async with conn.transaction():
                    await insert(data[i : i + 500])
            rates[name] = len(data) / (time.perf_counter() - start)
        await conn.close()
        return rates

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
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="paced window after 1 s of warm-up (default: as many messages as a headline run)",
    )
    parser.add_argument("--shards", type=int, default=1, help="shard actors (1)")
    parser.add_argument(
        "--per-call", type=int, default=10, help="messages per call of the batched figure (10)"
    )
    parser.add_argument(
        "--pipeline",
        type=int,
        default=DEFAULT_PIPELINE,
        help=f"append transactions a shard keeps in flight ({DEFAULT_PIPELINE})",
    )
    parser.add_argument(
        "--gc-thresholds",
        metavar="G0,G1,G2",
        default=None,
        help="gc.set_threshold for this process (default: the node's server.gc_thresholds, "
        "as parley serve sets them; 700,10,10 is CPython's)",
    )
    args = parser.parse_args()
    thresholds = (
        tuple(int(t) for t in args.gc_thresholds.split(","))
        if args.gc_thresholds
        else ServerSettings().gc_thresholds
    )
    gc.set_threshold(*thresholds)
    gc.collect()
    gc.freeze()  # what the imports built, as parley serve does
    note(f"gc thresholds {thresholds}")
    repeat = args.repeat or (1 if args.quick else 3)
    quick = args.quick
    convs = args.convs or (100 if quick else 1000)
    seconds = args.seconds or 0.0
    results: dict[str, dict[str, Any]] = {}
    tmp = tempfile.mkdtemp(prefix="parley-bench-")

    def run_actors(
        urls: list[str | type[Backend]], paced_urls: list[str | type[Backend]]
    ) -> dict[str, Any]:
        return trio.run(
            through_actors,
            urls,
            paced_urls,
            convs,
            per_conv,
            seconds,
            repeat,
            args.per_call,
            args.pipeline,
        )

    for kind in args.backends.split(","):
        per_conv = {"sqlite": 40, "postgresql": 40, "cassandra": 5, "noop": 40}[kind] // (
            4 if quick else 1
        )
        name = f"b_{secrets.token_hex(4)}"
        names = [name] + [f"{name}_{i}" for i in range(1, args.shards)]
        paced_names = [f"{n}_p" for n in names]
        urls: list[str | type[Backend]]
        if kind == "noop":
            note(f"noop: {convs} conversations x {per_conv} messages (diagnostic: no database)")
            noop: list[str | type[Backend]] = [NoopBackend] * args.shards
            results["noop (diagnostic)"] = run_actors(noop, noop)
            continue
        if kind == "sqlite":
            urls = [f"sqlite+aiosqlite:///{tmp}/actors{i}.db" for i in range(args.shards)]
            paced_urls = [f"sqlite+aiosqlite:///{tmp}/paced{i}.db" for i in range(args.shards)]
            raw_url = f"sqlite+aiosqlite:///{tmp}/raw.db"
        elif kind == "postgresql":
            urls = [f"{POSTGRES}?schema={n}" for n in names]
            paced_urls = [f"{POSTGRES}?schema={n}" for n in paced_names]
            raw_url = urls[0]
        else:
            urls = [f"cassandra://{CASSANDRA}/{n}?protocol_version=3" for n in names]
            paced_urls = [f"cassandra://{CASSANDRA}/{n}?protocol_version=3" for n in paced_names]
            raw_url = urls[0]
        try:
            prepared = backend_from_url(raw_url)
            trio.run(prepared.open)
            trio.run(prepared.aclose)
        except StorageError as exc:
            note(f"{kind}: skipped ({exc})")
            continue
        note(f"{kind}: {convs} conversations x {per_conv} messages, {args.shards} shard(s) ...")
        row = run_actors(list(urls), list(paced_urls))
        raws: dict[str, float] = {}
        for _ in range(repeat if kind != "cassandra" else 1):
            if kind == "sqlite":
                measured = raw_sqlite(f"{tmp}/raw.db", convs, per_conv)
            elif kind == "postgresql":
                measured = raw_postgres(name, convs, per_conv)
            else:
                measured = {"execute_concurrent": raw_cassandra(name, convs, per_conv)}
            for how, rate in measured.items():
                raws[how] = max(raws.get(how, 0.0), rate)
        raw_how, raw = max(raws.items(), key=lambda item: item[1])
        row["raw_msgs_per_s"] = round(raw)
        row["raw_how"] = raw_how
        row["raw_by_method"] = {how: round(rate) for how, rate in raws.items()}
        row["ratio_to_raw"] = round(row["msgs_per_s"] / raw, 3)
        target = TARGETS[kind]
        row["meets_targets"] = (
            row["msgs_per_s"] >= target.get("msgs_per_s", 0)
            and row["ratio_to_raw"] >= target["ratio"]
            and row["commit_p99_ms"] <= target.get("p99", math.inf)
        )
        results[kind] = row
        for n in names + paced_names:
            cleanup(kind, n)
    shutil.rmtree(tmp, ignore_errors=True)  # the SQLite files: ~100 MB a run
    print_table(
        f"Storage actors: group commit vs the raw driver ({args.shards} shard(s))",
        [
            {"backend": k, **{f: x for f, x in v.items() if f != "raw_by_method"}}
            for k, v in results.items()
        ],
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
