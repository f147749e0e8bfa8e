"""Running asyncio-only code (SQLAlchemy's asyncio engine) from trio or asyncio, and waiting for
futures completed on other threads (cassandra-driver's) without blocking the caller's loop.

One dedicated asyncio event loop runs in a daemon thread per process (started when the first user
acquires it, stopped when the last releases it). ``await bridge.run(fn, *args)`` submits
``fn(*args)`` to that loop and parks the calling task; the completion is handed back to the
caller's loop with ``TrioToken.run_sync_soon`` (trio) or ``loop.call_soon_threadsafe`` (asyncio).
The caller's loop never blocks; cancelling the caller cancels the asyncio task and waits for it
to finish unwinding, so no half-done operation keeps running behind the caller's back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import sniffio

from ._errors import Unavailable

__all__ = ["AsyncioBridge", "wait_threadsafe"]

T = TypeVar("T")


class _TaskCancelled(Exception):
    """The bridged asyncio task ended cancelled (by the caller, or by the bridge stopping)."""


async def wait_threadsafe(
    fut: concurrent.futures.Future[T], request_cancel: Callable[[], object] | None = None
) -> T:
    """Wait, from trio or asyncio, for ``fut`` (completed on any thread); return its result.

    Always checkpoints. If the caller is cancelled: with ``request_cancel`` None the wait ends
    at once (the future's eventual result is dropped); otherwise ``request_cancel()`` is called
    and the wait continues until ``fut`` is done, then the cancellation is raised (or, if the work
    completed anyway, its result is returned and the cancellation comes at the next checkpoint).
    """
    library = sniffio.current_async_library()
    if library == "trio":
        return await _wait_trio(fut, request_cancel)
    if library == "asyncio":
        return await _wait_asyncio(fut, request_cancel)
    raise RuntimeError(f"storage calls need trio or asyncio, not {library}")


async def _wait_trio(
    fut: concurrent.futures.Future[T], request_cancel: Callable[[], object] | None
) -> T:
    import outcome
    import trio

    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    state: dict[str, Any] = {"aborted": False, "raise_cancel": None}

    # The callbacks take the future as an argument rather than closing over it: the future
    # holds on_done, and a closure holding the future back would make every call a reference
    # cycle (the future, its Condition and lock, the closures and their cells: ~25 objects)
    # that only the cyclic collector frees.
    def wake(done: concurrent.futures.Future[T]) -> None:
        if state["aborted"]:
            return
        raise_cancel = state["raise_cancel"]
        if raise_cancel is not None and (done.cancelled() or _is_task_cancel(done)):
            trio.lowlevel.reschedule(task, outcome.capture(raise_cancel))
        else:
            trio.lowlevel.reschedule(task, outcome.capture(done.result))

    def on_done(done: concurrent.futures.Future[T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(wake, done)

    def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
        if request_cancel is None:
            state["aborted"] = True
            return trio.lowlevel.Abort.SUCCEEDED
        state["raise_cancel"] = raise_cancel
        request_cancel()
        return trio.lowlevel.Abort.FAILED

    fut.add_done_callback(on_done)
    return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]


def _is_task_cancel(fut: concurrent.futures.Future[Any]) -> bool:
    return fut.done() and not fut.cancelled() and isinstance(fut.exception(), _TaskCancelled)


async def _wait_asyncio(
    fut: concurrent.futures.Future[T], request_cancel: Callable[[], object] | None
) -> T:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_done(_: object) -> None:
        # RuntimeError: the caller's loop is closed, nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(done.set)

    fut.add_done_callback(on_done)
    try:
        await done.wait()
    except asyncio.CancelledError:
        if request_cancel is None:
            raise
        request_cancel()
        while not done.is_set():
            try:
                await done.wait()
            except asyncio.CancelledError:
                continue
        if fut.cancelled() or _is_task_cancel(fut):
            raise
        # The work finished anyway: report it; the task's cancellation stays requested.
    return fut.result()


class AsyncioBridge:
    """A dedicated asyncio loop in a daemon thread, shared by the users that acquire it.

    ``acquire()``/``release()`` count users: the thread starts on the first acquire and stops on
    the last release (pending tasks are cancelled). ``shared()`` is the process's bridge.
    """

    _shared: AsyncioBridge | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls) -> AsyncioBridge:
        """The one bridge of this process (created on first use; its thread starts on acquire)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @property
    def running(self) -> bool:
        """Whether the bridge's thread and loop are running."""
        return self._thread is not None and self._thread.is_alive()

    def acquire(self) -> None:
        """Count one more user, starting the loop thread if needed. Does not block long."""
        with self._lock:
            self._users += 1
            if self._loop is None:
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    try:
                        _cancel_all(loop)
                        loop.run_until_complete(loop.shutdown_asyncgens())
                    finally:
                        loop.close()

                thread = threading.Thread(target=main, name="parley-asyncio-bridge", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread

    def release(self) -> None:
        """Count one user less; the last one stops the loop (without waiting for the thread)."""
        with self._lock:
            if self._users == 0:
                raise RuntimeError("AsyncioBridge.release() without acquire()")
            self._users -= 1
            if self._users == 0 and self._loop is not None:
                loop, thread = self._loop, self._thread
                self._loop = self._thread = None
                loop.call_soon_threadsafe(loop.stop)
                if thread is not None and thread is not threading.current_thread():
                    thread.join(timeout=5)

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> tuple[concurrent.futures.Future[T], Callable[[], None]]:
        """Start ``fn(*args)`` on the bridge loop; return its future and a cancel request.

        Sync and thread-safe. Raises ``Unavailable`` if the bridge is not running.
        """
        loop = self._loop
        if loop is None:
            raise Unavailable("the storage bridge is not running (backend closed)", retry_after=0)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        holder: list[asyncio.Task[T]] = []

        def start() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            task = loop.create_task(fn(*args))
            holder.append(task)

            def copy(t: asyncio.Task[T]) -> None:
                if t.cancelled():
                    fut.set_exception(_TaskCancelled())
                elif (exc := t.exception()) is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(t.result())

            task.add_done_callback(copy)

        def cancel() -> None:
            if fut.cancel():
                return
            # RuntimeError: the loop is closed, its tasks were cancelled already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: holder and holder[0].cancel())

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError as exc:
            raise Unavailable("the storage bridge stopped", retry_after=0) from exc
        return fut, cancel

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the bridge loop and return its result, from trio or asyncio.

        Checkpoints; never blocks the caller's loop. Exceptions of ``fn`` propagate unchanged.
        Cancelling the caller cancels the asyncio task and waits for it to end. Raises
        ``Unavailable`` if the bridge is not running or stops during the call.
        """
        if self._loop is not None and _running_loop() is self._loop:
            return await fn(*args)
        fut, cancel = self.submit(fn, *args)
        try:
            return await wait_threadsafe(fut, cancel)
        except _TaskCancelled as exc:
            raise Unavailable("the storage bridge stopped during the call", retry_after=0) from exc


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
