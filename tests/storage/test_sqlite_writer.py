"""The SQLite append path's own connection and thread: one hand-off per transaction."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from storage import Unavailable
from storage._sql import _pow2_chunks
from storage._sqlite_writer import SqliteWriter

pytestmark = pytest.mark.anyio


def test_pow2_chunks_cover_the_items_in_order_with_few_sizes() -> None:
    for n in range(0, 300):
        chunks = _pow2_chunks(list(range(n)))
        assert [x for c in chunks for x in c] == list(range(n))
        sizes = [len(c) for c in chunks]
        assert all(s & (s - 1) == 0 and s <= 64 for s in sizes)
        assert sizes == sorted(sizes, reverse=True)
    assert [len(c) for c in _pow2_chunks(list(range(500)))] == [64] * 7 + [32, 16, 4]


async def test_runs_jobs_in_its_thread_and_closes(tmp_path: Path) -> None:
    writer = SqliteWriter(str(tmp_path / "w.db"), synchronous="NORMAL", busy_timeout_ms=1000)
    await writer.open()
    await writer.run(lambda db: db.execute("CREATE TABLE t (x INTEGER)"))

    def insert(db: sqlite3.Connection, values: list[int]) -> int:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
        db.execute("COMMIT")
        return int(db.execute("SELECT count(*) FROM t").fetchone()[0])

    assert await writer.run(insert, [1, 2, 3]) == 3
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await writer.run(lambda db: db.execute("SELECT * FROM missing"))
    await writer.aclose()
    await writer.aclose()  # idempotent
    with pytest.raises(Unavailable, match="closed"):
        await writer.run(insert, [4])
    with sqlite3.connect(tmp_path / "w.db") as db:
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 3


async def test_cancelling_the_caller_interrupts_the_statement(tmp_path: Path) -> None:
    writer = SqliteWriter(str(tmp_path / "w.db"), synchronous="NORMAL", busy_timeout_ms=1000)
    await writer.open()
    started = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def endless(db: sqlite3.Connection) -> None:
        def running() -> int:  # called by SQLite while the statement runs
            if not started.is_set():
                token.run_sync_soon(started.set)
            return 0

        db.set_progress_handler(running, 10_000)
        db.execute("BEGIN IMMEDIATE")
        try:
            # Never ends unless interrupted.
            db.execute(
                "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                "SELECT count(*) FROM r"
            ).fetchone()
        finally:
            db.set_progress_handler(None, 0)
            if db.in_transaction:
                db.execute("ROLLBACK")

    caught = []

    async def call() -> None:
        with trio.CancelScope() as scope:
            await writer.run(endless)
        caught.append(scope.cancelled_caught)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await started.wait()
            nursery.cancel_scope.cancel()
    assert caught == []  # the cancellation reached the call (no result came back)
    # The writer is usable again, with no transaction left open.
    assert await writer.run(lambda db: db.in_transaction) is False
    await writer.aclose()


async def test_an_unopenable_path_fails_open(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    writer = SqliteWriter(str(tmp_path / "dir.db"), synchronous="NORMAL", busy_timeout_ms=100)
    with pytest.raises(sqlite3.Error):
        await writer.open()
    await writer.aclose()


async def test_a_thread_of_its_own_checkpoints_the_wal(tmp_path: Path) -> None:
    # ~4,000 pages of WAL, under the writer's own (backstop) autocheckpoint: only the
    # background checkpointer moves them into the database file while the writer is open
    # (most of them: it waits for about 1,000 pages between two checkpoints).
    path = tmp_path / "c.db"
    writer = SqliteWriter(str(path), synchronous="NORMAL", busy_timeout_ms=1000)
    await writer.open()
    assert "parley-sqlite-checkpointer" in {t.name for t in threading.enumerate()}
    assert await writer.run(lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) > (
        2500
    )
    await writer.run(lambda db: db.execute("CREATE TABLE t (x BLOB)"))

    def insert(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO t VALUES (?)", [(b"x" * 3000,) for _ in range(100)])
        db.execute("COMMIT")

    for _ in range(40):
        await writer.run(insert)
    with trio.fail_after(10):
        while path.stat().st_size < 2500 * 3000:  # noqa: ASYNC110 (a file, no event)
            await trio.sleep(0.01)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 4000
    await writer.aclose()
    assert "parley-sqlite-checkpointer" not in {t.name for t in threading.enumerate()}
