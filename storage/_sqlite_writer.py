"""The SQLite append path's connection, in a process of its own (storage/_sqlite_child.py).

SQLAlchemy's asyncio engine with aiosqlite takes several thread hand-offs per transaction, each
waiting for the GIL behind the node's loop; a ``sqlite3`` connection in a thread of the node's
process takes one, but still needs the GIL back after every statement, and got it only when
the busy loop let go (up to a switch interval, 5 ms, each time). ``SqliteWriter`` sends a whole
batch to a child process over a pipe: the loop spends a ``marshal`` of the rows on it, and the
transaction runs on the other core without touching the node's GIL.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sqlite3
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import structlog
from anyio.abc import Process

from ._errors import StorageError, Unavailable

__all__ = ["SqliteWriter"]

log = structlog.get_logger("storage")

#: Seconds a shielded aclose() waits for the process to finish its transaction and exit, and a
#: cancelled call for the reply of the statement it interrupted.
_CLOSE_DEADLINE: Final = 5.0
_CHILD: Final = str(Path(__file__).with_name("_sqlite_child.py"))
_HEADER: Final = struct.Struct(">I")
#: Bytes read from the reply pipe at a time.
_READ_SIZE: Final = 1 << 16


class SqliteWriter:
    """A ``sqlite3`` connection (WAL, ``synchronous``, ``busy_timeout``) in a child process.

    ``await open()`` starts the process and waits for it to connect; ``await append(rows,
    tops)`` runs ``_sqlite_child.append_new`` there; ``await execute(sql, params)`` runs one
    statement and returns its rows; ``await script(steps)`` runs several in one transaction;
    ``await aclose()`` ends the process. Requests may be made
    concurrently: they are sent at once and run one after the other, in the order sent, so
    the next transaction is there when one ends. The process exits by itself when the node's
    process dies.
    """

    def __init__(self, path: str, *, synchronous: str, busy_timeout_ms: int) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._process: Process | None = None
        self._to_child = self._from_child = -1  # our ends of the pipes
        self._buffer = bytearray()  # replies read but not yet taken
        self._send_lock = anyio.Lock()
        self._read_lock = anyio.Lock()
        self._replies: dict[int, tuple[Any, ...]] = {}  # read, not yet taken by their caller
        self._jobs = 0
        self._broken: str | None = None  # why requests fail at once, once set

    @property
    def pid(self) -> int | None:
        """The writer process's id while it runs."""
        return self._process.pid if self._process is not None else None

    async def open(self) -> None:
        """Start the process and connect.

        Raises:
            sqlite3.Error: the connection or a pragma failed (as the child's error class).
            Unavailable: the process could not start, or ended before it answered.
        """
        # Pipes of our own, their ends here non-blocking: a frame is written (and a reply
        # read) in the calling task's turn when the pipe has room (data), with no checkpoint
        # first, so the child starts on a batch without waiting for the loop's next round.
        to_child, self._to_child = os.pipe()
        self._from_child, from_child = os.pipe()
        os.set_blocking(self._to_child, False)
        os.set_blocking(self._from_child, False)
        try:
            process = await anyio.open_process(
                [
                    sys.executable,
                    "-I",
                    _CHILD,
                    self.path,
                    self._synchronous,
                    str(self._busy_timeout_ms),
                ],
                stdin=to_child,
                stdout=from_child,
                stderr=None,  # the node's, for the child's own warnings
            )
        except OSError as exc:
            self._close_pipes()
            raise Unavailable(f"cannot start the SQLite writer for {self.path}: {exc}") from exc
        finally:
            os.close(to_child)
            os.close(from_child)
        self._process = process
        try:
            with anyio.fail_after(_CLOSE_DEADLINE * 6):
                _outcome(self.path, await self._reply(0))
        except TimeoutError:
            self._broken = "the SQLite writer process did not start"
            raise Unavailable(f"{self._broken} ({self.path})", retry_after=1.0) from None

    async def append(self, rows: Sequence[Sequence[Any]], tops: Sequence[Sequence[Any]]) -> bool:
        """Append ``rows`` (9-tuples in ``MESSAGE_COLUMNS`` order) and raise each conversation
        in ``tops`` ((conv, seq) pairs) to that ``last_seq``, in one transaction; True if
        every row went in, False (nothing committed) if one did not.

        If the caller is cancelled, the statement is interrupted (the transaction rolls back)
        and the cancellation is raised once the process has answered.

        Raises:
            sqlite3.Error: the transaction failed (the child's error class and message).
            Unavailable: the writer is closed, or its process is gone.
        """
        return bool(await self._request("append", list(rows), list(tops)))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the writer's connection; its rows. Errors as ``append``."""
        rows = await self._request("execute", sql, list(params))
        return [tuple(row) for row in rows]

    async def script(
        self, steps: Sequence[tuple[str, Sequence[Any], bool, str]]
    ) -> tuple[bool, list[tuple[int, list[tuple[Any, ...]]]]]:
        """Run ``steps`` (``(sql, params, many, when)``) in one transaction on the writer's
        connection (``_sqlite_child.run_script``): whether it committed, and per step run,
        (rows changed, rows). Errors as ``append``; on an error nothing is committed."""
        frames = [(sql, list(params), many, when) for sql, params, many, when in steps]
        committed, results = await self._request("script", frames)
        return bool(committed), [
            (int(changed), [tuple(row) for row in rows]) for changed, rows in results
        ]

    async def _request(self, op: str, *args: Any) -> Any:
        process = self._process
        if process is None or self._broken is not None:
            reason = self._broken or "closed"
            raise Unavailable(f"the SQLite writer of {self.path} is {reason}", retry_after=0)
        self._jobs += 1
        job = self._jobs
        await self._send_frame((op, job, *args))
        try:
            return _outcome(self.path, await self._reply(job))
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_DEADLINE):
                await self._send_frame(("interrupt", job))
                # interrupted, or failed on its own: either way not done
                with contextlib.suppress(sqlite3.Error, StorageError):
                    _outcome(self.path, await self._reply(job))
                raise
            self._broken = "not answering"
            process.kill()
            raise

    async def _send_frame(self, frame: tuple[Any, ...]) -> None:
        # Shielded: a frame cut short would put the pipe out of step. Whole frames, one
        # sender at a time (requests may be pipelined: the process runs them in order).
        with anyio.CancelScope(shield=True):
            async with self._send_lock:
                await self._send(frame)

    async def _reply(self, job: int) -> tuple[Any, ...]:
        """The reply frame to ``job``. Callers take turns reading frames, each kept for its
        job, until their own has come (the process answers in request order)."""
        replies = self._replies
        while job not in replies:
            async with self._read_lock:
                if job not in replies:
                    (size,) = _HEADER.unpack(await self._receive_exactly(_HEADER.size))
                    frame = marshal.loads(await self._receive_exactly(size))
                    replies[frame[1]] = frame
        return replies.pop(job)

    async def _send(self, frame: tuple[Any, ...]) -> None:
        payload = marshal.dumps(frame)
        data = memoryview(_HEADER.pack(len(payload)) + payload)
        sent = 0
        try:
            while True:
                with contextlib.suppress(BlockingIOError):
                    sent += os.write(self._to_child, data[sent:])
                if sent == len(data):
                    return
                await anyio.wait_writable(self._to_child)
        except OSError:  # EPIPE: the process is gone
            self._broken = "gone (its process exited)"
            raise Unavailable(f"the SQLite writer of {self.path} is {self._broken}") from None

    async def _receive_exactly(self, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            try:
                chunk = os.read(self._from_child, _READ_SIZE)
            except BlockingIOError:
                await anyio.wait_readable(self._from_child)
                continue
            if not chunk:
                self._broken = "gone (its process exited)"
                raise Unavailable(
                    f"the SQLite writer of {self.path} is {self._broken}", retry_after=1.0
                )
            buffer += chunk
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def _close_pipes(self) -> None:
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                anyio.notify_closing(fd)
                os.close(fd)
        self._to_child = self._from_child = -1

    async def aclose(self) -> None:
        """End the process after its current transaction (its input closes) and wait for it;
        killed after a deadline. Always releases (shielded); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                if self._to_child >= 0:  # the child sees its input end
                    anyio.notify_closing(self._to_child)
                    os.close(self._to_child)
                    self._to_child = -1
                with anyio.move_on_after(_CLOSE_DEADLINE) as scope:
                    await process.wait()
                if scope.cancelled_caught:
                    log.warning("sqlite_writer_killed", path=self.path, pid=process.pid)
                    process.kill()
                    await process.wait()
            finally:
                self._close_pipes()
                await process.aclose()


def _outcome(path: str, frame: tuple[Any, ...]) -> Any:
    """A reply frame's result, or its error raised (``sqlite3``'s class when it is one)."""
    if frame[0] == "ok":
        return frame[2]
    name, message = frame[2], frame[3]
    error = getattr(sqlite3, name, None)
    if isinstance(error, type) and issubclass(error, sqlite3.Error):
        raise error(message)
    raise StorageError(f"the SQLite writer of {path} failed: {name}: {message}")
