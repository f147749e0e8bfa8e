"""A SQLite connection of its own, in a thread of its own, that runs whole transactions.

SQLAlchemy's asyncio engine with aiosqlite takes several thread hand-offs per transaction (the
bridge's asyncio loop, then aiosqlite's thread for ``BEGIN``, each statement, ``COMMIT`` and the
pool's reset), and each waits for the GIL behind the node's loop. ``SqliteWriter`` runs a whole
transaction, written as a plain function of a stdlib ``sqlite3`` connection, in one hand-off:
the caller's task parks, the thread runs the function (``sqlite3`` releases the GIL inside
``sqlite3_step``, so the database work overlaps the caller's loop on another core) and wakes
the caller through ``wait_threadsafe``.

A second thread, with a connection of its own, copies the WAL into the database (``PASSIVE``
checkpoints) behind the writer's back. SQLite's own autocheckpoint runs inside the ``COMMIT``
that takes the WAL past 1,000 pages (the copy and two fsyncs), which made a third of the
append path's time and its slowest commits; the writer keeps it only as a backstop, at
``_BACKSTOP_PAGES``, should the checkpointer fall behind.
"""

from __future__ import annotations

import concurrent.futures
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import anyio
import structlog

from ._bridge import _TaskCancelled, wait_threadsafe
from ._errors import Unavailable

__all__ = ["SqliteWriter"]

log = structlog.get_logger("storage")

T = TypeVar("T")

#: Seconds a shielded aclose() waits for the thread to finish its transaction and close.
_CLOSE_DEADLINE: Final = 5.0
#: WAL pages a background checkpoint aims to copy at a time (SQLite's autocheckpoint default).
_CHECKPOINT_PAGES: Final = 1000
#: The writer connection's own autocheckpoint, a backstop (pages; 10,000 are ~40 MB of WAL).
_BACKSTOP_PAGES: Final = 10_000
#: The writer connection's page cache (KiB): a batch of messages to many conversations
#: touches a page of each index per message; SQLite's default (2 MB) is soon too small.
_CACHE_KIB: Final = 32_768
#: Most writer jobs between two background checkpoints (when they dirty few pages each).
_MAX_JOBS_PER_CHECKPOINT: Final = 256


class _Job:
    __slots__ = ("args", "cancelled", "fn", "fut")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], fut: concurrent.futures.Future[Any]
    ) -> None:
        self.fn = fn
        self.args = args
        self.fut = fut
        self.cancelled = False  # its caller was cancelled: skip it, or interrupt it


class _Checkpointer:
    """A thread and connection that run ``PASSIVE`` checkpoints while the writer goes on.

    ``nudge()`` after each writer job; a checkpoint runs every ``_every`` jobs, a count adapted
    so that one copies about ``_CHECKPOINT_PAGES`` pages (doubled when it copied fewer, halved
    when it copied four times more). A failed checkpoint is logged and skipped: the writer's
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
        except sqlite3.Error:
            log.exception("sqlite_checkpointer_failed", path=self._path)
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
                except sqlite3.Error:
                    log.exception("sqlite_checkpoint_failed", path=self._path)
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


class SqliteWriter:
    """One ``sqlite3`` connection (WAL, ``synchronous``, ``busy_timeout``) and its thread.

    ``await open()`` starts the thread and connects; ``await run(fn, *args)`` runs
    ``fn(db, *args)`` in the thread and returns its result (one job at a time, in order);
    ``await aclose()`` stops the thread and closes the connection. The connection is in
    autocommit mode (``isolation_level=None``): ``fn`` issues its own ``BEGIN``/``COMMIT``
    and must leave no transaction open, also when it raises.
    """

    def __init__(self, path: str, *, synchronous: str, busy_timeout_ms: int) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._db: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lock = threading.Lock()  # guards _running and the jobs' cancelled flags
        self._running: _Job | None = None

    async def open(self) -> None:
        """Start the thread and connect; raises what ``sqlite3.connect`` or a pragma raised."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="parley-sqlite-writer", daemon=True
        )
        self._thread.start()
        await wait_threadsafe(ready)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` in the writer's thread; return its result or raise its error.

        Checkpoints; never blocks the caller's loop. If the caller is cancelled, the running
        statement is interrupted (``sqlite3_interrupt``; ``fn`` rolls back) and the wait goes
        on until ``fn`` returns, then the cancellation is raised. Raises ``Unavailable`` if the
        writer is closed.
        """
        if self._db is None or self._stopped.done():
            raise Unavailable(f"the SQLite writer of {self.path} is closed", retry_after=0)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        job = _Job(fn, args, fut)
        self._jobs.put(job)
        return await wait_threadsafe(fut, functools.partial(self._interrupt, job))

    def _interrupt(self, job: _Job) -> None:
        with self._lock:
            job.cancelled = True
            db = self._db
            if self._running is job and db is not None:
                db.interrupt()

    async def aclose(self) -> None:
        """Stop the thread after its current job and close the connection. Always releases
        (shielded, with a deadline); idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_DEADLINE):
            await wait_threadsafe(self._stopped)

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            db = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,  # only for interrupt(), which is thread-safe
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self._synchronous}")
                db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
                db.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
                db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            except BaseException:
                db.close()
                raise
        except BaseException as exc:
            ready.set_exception(exc)
            self._stopped.set_result(None)
            return
        self._db = db
        checkpointer = _Checkpointer(self.path, self._busy_timeout_ms)
        ready.set_result(None)
        try:
            while (job := self._jobs.get()) is not None:
                fut = job.fut
                with self._lock:
                    if job.cancelled:
                        fut.set_exception(_TaskCancelled())
                        continue
                    self._running = job
                try:
                    result = job.fn(db, *job.args)
                except BaseException as exc:
                    fut.set_exception(_TaskCancelled() if job.cancelled else exc)
                else:
                    fut.set_result(result)
                finally:
                    with self._lock:
                        self._running = None
                del job, fut
                checkpointer.nudge()
        finally:
            self._db = None
            checkpointer.close(_CLOSE_DEADLINE)
            db.close()
            self._stopped.set_result(None)
