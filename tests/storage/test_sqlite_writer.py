"""The SQLite append path's writer process: one request per transaction, and a process that
ends with the node's."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

from storage import Unavailable
from storage._sqlite_child import append_new, pow2_chunks
from storage._sqlite_writer import SqliteWriter

pytestmark = pytest.mark.anyio

MESSAGES = """CREATE TABLE messages (conv TEXT, seq INTEGER, id TEXT UNIQUE, sender TEXT, cmid TEXT,
kind TEXT, body BLOB, body_is_text BOOLEAN, ts INTEGER, PRIMARY KEY (conv, seq),
UNIQUE (conv, sender, cmid))"""
CONVERSATIONS = "CREATE TABLE conversations (conv TEXT PRIMARY KEY, last_seq INTEGER)"
ENDLESS = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"


def row(conv: str, seq: int, cmid: str | None = None) -> tuple[object, ...]:
    return (conv, seq, f"{conv}-{seq}", "u", cmid or f"m{seq}", "text", b"hi", True, seq)


async def open_writer(path: Path) -> SqliteWriter:
    writer = SqliteWriter(str(path), synchronous="NORMAL", busy_timeout_ms=1000)
    await writer.open()
    await writer.execute(MESSAGES)
    await writer.execute(CONVERSATIONS)
    await writer.execute("INSERT INTO conversations VALUES ('a', 0), ('b', 0)")
    return writer


def test_pow2_chunks_cover_the_items_in_order_with_few_sizes() -> None:
    for n in range(0, 300):
        chunks = pow2_chunks(list(range(n)))
        assert [x for c in chunks for x in c] == list(range(n))
        sizes = [len(c) for c in chunks]
        assert all(s & (s - 1) == 0 and s <= 64 for s in sizes)
        assert sizes == sorted(sizes, reverse=True)
    assert [len(c) for c in pow2_chunks(list(range(500)))] == [64] * 7 + [32, 16, 4]


def test_a_batch_goes_in_whole_or_not_at_all(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    db.execute(MESSAGES)
    db.execute(CONVERSATIONS)
    db.execute("INSERT INTO conversations VALUES ('a', 0), ('b', 0)")
    rows = [row("a", s) for s in range(1, 101)] + [row("b", 1)]
    assert append_new(db, rows, [("a", 100), ("b", 1)]) is True
    # a resend among new rows: nothing of the batch stays
    assert append_new(db, [row("a", 101), row("a", 102, cmid="m5")], [("a", 102)]) is False
    assert db.execute("SELECT count(*), max(seq) FROM messages").fetchone() == (101, 100)
    assert db.execute("SELECT * FROM conversations ORDER BY conv").fetchall() == [
        ("a", 100),
        ("b", 1),
    ]
    assert not db.in_transaction


async def test_appends_in_its_process_and_closes(tmp_path: Path) -> None:
    writer = await open_writer(tmp_path / "w.db")
    assert writer.pid not in (None, os.getpid())
    assert await writer.append([row("a", 1), row("a", 2)], [("a", 2)]) is True
    assert await writer.append([row("a", 3), row("a", 4, cmid="m1")], [("a", 4)]) is False
    assert await writer.execute("SELECT last_seq FROM conversations WHERE conv = ?", ["a"]) == [
        (2,)
    ]
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await writer.execute("SELECT * FROM missing")
    with pytest.raises(sqlite3.IntegrityError):
        await writer.execute("INSERT INTO conversations VALUES ('a', 0)")
    await writer.aclose()
    await writer.aclose()  # idempotent
    with pytest.raises(Unavailable, match="closed"):
        await writer.append([row("a", 3)], [("a", 3)])
    with sqlite3.connect(tmp_path / "w.db") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2


async def test_cancelling_the_caller_interrupts_the_statement(tmp_path: Path) -> None:
    writer = await open_writer(tmp_path / "w.db")
    caught = []

    async def call() -> None:
        with trio.CancelScope() as scope:
            await writer.execute(ENDLESS)
        caught.append(scope.cancelled_caught)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            # The statement never ends unless interrupted; cancel it running or queued.
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    assert caught == []  # the cancellation reached the call (no result came back)
    # The writer answers in step again, with no transaction left open.
    assert await writer.append([row("a", 1)], [("a", 1)]) is True
    await writer.aclose()


async def test_an_unopenable_path_fails_open(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    writer = SqliteWriter(str(tmp_path / "dir.db"), synchronous="NORMAL", busy_timeout_ms=100)
    with pytest.raises(sqlite3.Error):
        await writer.open()
    await writer.aclose()


async def test_a_killed_writer_process_makes_calls_unavailable(tmp_path: Path) -> None:
    writer = await open_writer(tmp_path / "w.db")
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(Unavailable, match="gone"):
        await writer.append([row("a", 1)], [("a", 1)])
    with pytest.raises(Unavailable, match="gone"):
        await writer.append([row("a", 1)], [("a", 1)])
    await writer.aclose()


def test_the_writer_process_ends_with_the_node_process(tmp_path: Path) -> None:
    # A process that opened a writer is SIGKILLed: its writer sees its input end and exits.
    script = textwrap.dedent(
        f"""
        import sys, trio
        from storage._sqlite_writer import SqliteWriter

        async def main():
            writer = SqliteWriter({str(tmp_path / "w.db")!r}, synchronous="NORMAL",
                                  busy_timeout_ms=1000)
            await writer.open()
            print(writer.pid, flush=True)
            await trio.sleep_forever()

        trio.run(main)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as node:
        try:
            assert node.stdout is not None
            child = int(node.stdout.readline())
            os.kill(child, 0)  # alive
        finally:
            node.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)  # a real process, on the real clock
    pytest.fail(f"the writer process {child} outlived its node")


async def test_a_thread_of_its_own_checkpoints_the_wal(tmp_path: Path) -> None:
    # ~4,000 pages of WAL, under the writer's own (backstop) autocheckpoint: only the
    # background checkpointer moves them into the database file while the writer is open
    # (most of them: it waits for about 1,000 pages between two checkpoints).
    path = tmp_path / "c.db"
    writer = await open_writer(path)
    assert (await writer.execute("PRAGMA wal_autocheckpoint"))[0][0] > 2500
    big = b"x" * 3000
    for batch in range(40):
        rows = [
            ("a", s, f"a-{s}", "u", f"m{s}", "text", big, False, s)
            for s in range(batch * 100 + 1, batch * 100 + 101)
        ]
        assert await writer.append(rows, [("a", batch * 100 + 100)]) is True
    with trio.fail_after(10):
        while path.stat().st_size < 2500 * 3000:  # noqa: ASYNC110 (a file, no event)
            await trio.sleep(0.01)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 4000
    await writer.aclose()


async def test_a_script_runs_in_one_transaction(tmp_path: Path) -> None:
    writer = await open_writer(tmp_path / "w.db")
    insert = "INSERT INTO conversations VALUES (?, 0) ON CONFLICT DO NOTHING"
    count = "SELECT count(*) FROM conversations"
    # "changed" runs only after a step that changed rows; many=True takes parameter rows.
    committed, results = await writer.script(
        [
            (insert, ["a"], False, "always"),  # taken already: changes nothing
            (insert, [("x",), ("y",)], True, "changed"),
            (insert, ["c"], False, "always"),
            (insert, [("d",), ("e",)], True, "changed"),
            (count, [], False, "always"),
        ]
    )
    assert committed is True
    assert results == [(0, []), (0, []), (1, []), (2, []), (-1, [(5,)])]
    # A check that finds rows rolls it all back and stops there.
    committed, results = await writer.script(
        [
            (insert, ["f"], False, "always"),
            ("SELECT conv FROM conversations WHERE conv IN ('a', 'z')", [], False, "check"),
            (insert, ["g"], False, "always"),
        ]
    )
    assert (committed, results) == (False, [(1, []), (-1, [("a",)])])
    # An error rolls it all back and is raised; the writer goes on.
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await writer.script(
            [(insert, ["h"], False, "always"), ("DELETE FROM nope", [], False, "always")]
        )
    assert await writer.execute(count) == [(5,)]
    await writer.aclose()
