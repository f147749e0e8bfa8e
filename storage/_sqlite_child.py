"""The SQLite writer process: a ``sqlite3`` connection that appends messages, outside the node.

Started by ``SqliteWriter`` (storage/_sqlite_writer.py) as ``python -I _sqlite_child.py PATH
SYNCHRONOUS BUSY_TIMEOUT_MS``; it imports the standard library only. In the node's process the
writer's thread had to take the GIL back after every ``sqlite3`` step, and waited there behind
the node's busy loop for up to a switch interval (5 ms) each time: the transactions took twice
what the same inserts take alone, and the node's loop and the database ran one after the
other. Here they run side by side on two cores.

Protocol, both ways: frames of a 4-byte big-endian length and a ``marshal``-ed tuple.
Requests: ``("append", job, rows, tops)`` (``rows`` 9-tuples in ``MESSAGE_COLUMNS`` order,
``tops`` (conv, seq) pairs: the batch's highest seq per conversation), ``("execute", job,
sql, params)`` (one statement; its rows), ``("script", job, steps)`` (statements in one
transaction, see ``run_script``), ``("interrupt", job)`` (interrupts that job's statement if
it runs; no reply of its own). Replies: ``("ok", job, result)`` or ``("err", job,
error class name, message)``; job 0 is the start (``("ok", 0, None)`` once connected). End of
input: the running job finishes, then the process exits, so it also ends when the node's
process dies (SIGKILL included). SIGINT and SIGTERM are ignored: a Ctrl-C reaches the whole
process group, and the node drains through this process before it closes it.

A second thread, with a connection of its own, copies the WAL into the database (``PASSIVE``
checkpoints) behind the writer's back. SQLite's own autocheckpoint runs inside the ``COMMIT``
that takes the WAL past 1,000 pages (the copy and two fsyncs), which made a third of the
append path's time and its slowest commits; the writer keeps it only as a backstop, at
``_BACKSTOP_PAGES``, should the checkpointer fall behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import marshal
import queue
import signal
import sqlite3
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any, Final, TypeVar

__all__ = ["MESSAGE_COLUMNS", "append_new", "pow2_chunks", "run_script"]

T = TypeVar("T")

#: The messages table's columns, in the order ``append`` rows come in.
MESSAGE_COLUMNS: Final = "conv, seq, id, sender, cmid, kind, body, body_is_text, ts"
#: WAL pages a background checkpoint aims to copy at a time (SQLite's autocheckpoint default).
_CHECKPOINT_PAGES: Final = 1000
#: The writer connection's own autocheckpoint, a backstop (pages; 10,000 are ~40 MB of WAL).
_BACKSTOP_PAGES: Final = 10_000
#: The writer connection's page cache (KiB): a batch of messages to many conversations
#: touches a page of each index per message; SQLite's default (2 MB) is soon too small.
_CACHE_KIB: Final = 32_768
#: Most writer jobs between two background checkpoints (when they dirty few pages each).
_MAX_JOBS_PER_CHECKPOINT: Final = 256
#: Seconds the writer waits for the checkpointer to finish its checkpoint when closing.
_CLOSE_WAIT: Final = 5.0
#: Rows per multi-row statement: 9 x 64 = 576 parameters, under SQLite's oldest limit (999).
_MAX_CHUNK: Final = 64
_UPDATE_FROM: Final = sqlite3.sqlite_version_info >= (3, 33)
_ADVANCE_LAST_SEQ: Final = "UPDATE conversations SET last_seq = ? WHERE conv = ? AND last_seq < ?"
_HEADER: Final = struct.Struct(">I")
#: Bytes each pipe to and from the node holds (Linux's default ``pipe-max-size``, 1 MiB).
_PIPE_BYTES: Final = 1 << 20


# -- the append transaction --------------------------------------------------------------------


def append_new(
    db: sqlite3.Connection, rows: Sequence[Sequence[Any]], tops: Sequence[Sequence[Any]]
) -> bool:
    """Append a batch of new messages in one transaction; True if it went in whole.

    The rows go in as multi-row ``INSERT ... ON CONFLICT DO NOTHING`` statements (which ignore
    a row on any of the three unique keys) of power-of-two sizes up to 64 rows, and
    ``last_seq`` moves with ``UPDATE ... FROM (VALUES ...)`` the same way: about a dozen
    statements for 500 messages rather than one per row. False, having rolled back, when a
    row did not go in (a resend, a seq conflict): the caller then finds out which.
    """
    with _transaction(db):
        for chunk in pow2_chunks(rows):
            params: list[Any] = []
            for row in chunk:
                params.extend(row)
            if db.execute(_insert_sql(len(chunk)), params).rowcount != len(chunk):
                db.execute("ROLLBACK")
                return False
        if _UPDATE_FROM:
            for part in pow2_chunks(tops):
                db.execute(_advance_sql(len(part)), [v for top in part for v in top])
        else:  # pragma: no cover - SQLite before 3.33
            db.executemany(_ADVANCE_LAST_SEQ, [(seq, conv, seq) for conv, seq in tops])
        db.execute("COMMIT")
    return True


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE``; the body commits (or rolls back) itself, and an error rolls back
    what is still open before it propagates."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def pow2_chunks(items: Sequence[T]) -> list[Sequence[T]]:
    """``items`` in consecutive slices of power-of-two lengths, largest first, at most
    ``_MAX_CHUNK``: few statements per batch, and few distinct ones to prepare and cache."""
    out = []
    i, n = 0, len(items)
    size = _MAX_CHUNK
    while i < n:
        while size > n - i:
            size //= 2
        out.append(items[i : i + size])
        i += size
    return out


@functools.cache
def _insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING"


@functools.cache
def _advance_sql(rows: int) -> str:
    values = ", ".join(["(?, ?)"] * rows)
    return (
        f"UPDATE conversations SET last_seq = t.column2 FROM (VALUES {values}) AS t "
        "WHERE conversations.conv = t.column1 AND conversations.last_seq < t.column2"
    )


def _execute(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in db.execute(sql, params).fetchall()]


def run_script(
    db: sqlite3.Connection, steps: Sequence[Sequence[Any]]
) -> tuple[bool, list[tuple[int, list[tuple[Any, ...]]]]]:
    """Run ``steps`` in one ``BEGIN IMMEDIATE`` transaction: (committed, per step run, its
    rows changed and rows).

    A step is ``(sql, params, many, when)``. With ``many``, ``params`` is a list of parameter
    rows for ``executemany`` and no rows come back. ``when`` is ``"always"``; ``"changed"``:
    skipped (``(0, [])``) unless the step before changed a row; or ``"check"``: a query that
    must find nothing; if it returns rows, the transaction rolls back and the steps stop
    there (not committed; its rows are the last result). The rows changed are ``rowcount``
    (-1 for a query). An error rolls the whole transaction back and is raised.
    """
    with _transaction(db):
        out: list[tuple[int, list[tuple[Any, ...]]]] = []
        changed = 0
        for sql, params, many, when in steps:
            if when == "changed" and changed <= 0:
                changed = 0
                out.append((0, []))
                continue
            if many:
                cursor = db.executemany(sql, params)
                rows: list[tuple[Any, ...]] = []
            else:
                cursor = db.execute(sql, params)
                rows = [tuple(row) for row in cursor.fetchall()]  # rowcount counts after this
            changed = cursor.rowcount
            out.append((changed, rows))
            if when == "check" and rows:
                db.execute("ROLLBACK")
                return False, out
        db.execute("COMMIT")
    return True, out


# -- the background checkpointer ---------------------------------------------------------------


class _Checkpointer:
    """A thread and connection that run ``PASSIVE`` checkpoints while the writer goes on.

    ``nudge()`` after each writer job; a checkpoint runs every ``_every`` jobs, a count adapted
    so that one copies about ``_CHECKPOINT_PAGES`` pages (doubled when it copied fewer, halved
    when it copied four times more). A failed checkpoint is reported and skipped: the writer's
    backstop autocheckpoint still bounds the WAL.
    """

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._cond = threading.Condition()
        self._jobs = 0  # writer jobs since the last checkpoint
        self._every = 1
        self._closing = False
        self._thread = threading.Thread(
            target=self._main, name="parley-sqlite-checkpointer", daemon=True
        )
        self._thread.start()

    def nudge(self) -> None:
        cond = self._cond
        with cond:
            self._jobs += 1
            if self._jobs >= self._every:
                cond.notify()

    def close(self, timeout: float) -> None:
        """Stop after the running checkpoint (blocking, up to ``timeout`` s)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _main(self) -> None:
        try:
            db = sqlite3.connect(
                self._path, timeout=self._busy_timeout_ms / 1000, isolation_level=None
            )
        except sqlite3.Error as exc:
            _warn(f"checkpointer cannot open {self._path}: {exc}")
            return
        last = 0  # WAL pages at the last checkpoint
        try:
            while True:
                with self._cond:
                    while not self._closing and self._jobs < self._every:
                        self._cond.wait()
                    if self._closing:
                        return
                    self._jobs = 0
                try:
                    _, pages, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    _warn(f"checkpoint of {self._path} failed: {exc}")
                    continue
                # pages < last: the writer restarted the WAL in between
                copied, last = (pages - last if pages >= last else pages), pages
                if pages > 2 * _CHECKPOINT_PAGES:
                    # The WAL starts over only at a transaction that finds it all copied:
                    # catch up, so that one checkpoint ends between two commits (else the
                    # writer's backstop does it, inside a commit).
                    self._every = 1
                elif copied < _CHECKPOINT_PAGES:
                    self._every = min(_MAX_JOBS_PER_CHECKPOINT, self._every * 2)
                elif copied > 4 * _CHECKPOINT_PAGES:
                    self._every = max(1, self._every // 2)
        finally:
            db.close()


def _warn(text: str) -> None:
    # The node's logs are structlog's; this process shares its stderr and stays dependency-free.
    print(f"parley-sqlite-writer: {text}", file=sys.stderr, flush=True)


# -- the process -------------------------------------------------------------------------------


class _Writer:
    """The writer thread: runs the jobs in order, writes each reply."""

    def __init__(self, path: str, synchronous: str, busy_timeout_ms: int, out: IO[bytes]):
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.out = out
        self.jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.lock = threading.Lock()  # guards running and cancelled
        self.running: int | None = None
        self.finished = 0  # the last job replied to (jobs are numbered up from 1)
        self.cancelled: set[int] = set()
        self.db: sqlite3.Connection | None = None

    def interrupt(self, job: int) -> None:
        with self.lock:
            if self.running == job:
                assert self.db is not None
                self.db.interrupt()
            elif job > self.finished:  # not started yet (else: answered already)
                self.cancelled.add(job)

    def reply(self, *frame: Any) -> None:
        data = marshal.dumps(frame)
        self.out.write(_HEADER.pack(len(data)) + data)
        self.out.flush()

    def main(self) -> None:
        try:
            db = self.connect()
        except BaseException as exc:  # reported to the node
            self.reply("err", 0, type(exc).__name__, str(exc))
            return
        self.db = db
        checkpointer = _Checkpointer(self.path, self.busy_timeout_ms)
        self.reply("ok", 0, None)
        try:
            while (request := self.jobs.get()) is not None:
                op, job = request[0], request[1]
                with self.lock:
                    if job in self.cancelled:
                        self.cancelled.discard(job)
                        self.finished = job
                        self.reply("err", job, "OperationalError", "interrupted")
                        continue
                    self.running = job
                try:
                    if op == "append":
                        result: Any = append_new(db, request[2], request[3])
                    elif op == "script":
                        result = run_script(db, request[2])
                    else:
                        result = _execute(db, request[2], request[3])
                except Exception as exc:  # reported to the node
                    self.reply("err", job, type(exc).__name__, str(exc))
                else:
                    self.reply("ok", job, result)
                finally:
                    with self.lock:
                        self.running = None
                        self.finished = job
                checkpointer.nudge()
        finally:
            checkpointer.close(_CLOSE_WAIT)
            db.close()

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,  # only for interrupt(), which is thread-safe
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            db.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
            db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        except BaseException:
            db.close()
            raise
        return db


def _read_frame(stream: IO[bytes]) -> tuple[Any, ...] | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    frame = marshal.loads(data)
    assert isinstance(frame, tuple)
    return frame


def _widen_pipes() -> None:
    """Make stdin and stdout pipes of ``_PIPE_BYTES`` (Linux; elsewhere they stay as they are).

    A batch of 500 messages is ~150 KB: through the default 64 KB pipe the node's loop writes
    it in three turns, each behind a loop iteration that may hold a few hundred tasks.
    """
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:  # pragma: no cover - not Linux
        return
    for fd in (0, 1):
        with contextlib.suppress(OSError):  # not a pipe, or above /proc/sys/fs/pipe-max-size
            fcntl.fcntl(fd, setsize, _PIPE_BYTES)


def main(argv: Sequence[str]) -> int:
    path, synchronous, busy_timeout_ms = argv[0], argv[1], int(argv[2])
    _widen_pipes()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    writer = _Writer(path, synchronous, busy_timeout_ms, sys.stdout.buffer)
    thread = threading.Thread(target=writer.main, name="parley-sqlite-writer")
    thread.start()
    stdin = sys.stdin.buffer
    while (frame := _read_frame(stdin)) is not None:
        if frame[0] == "interrupt":
            writer.interrupt(frame[1])
        else:
            writer.jobs.put(frame)
    writer.jobs.put(None)
    thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
