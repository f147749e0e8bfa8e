"""Backend shims: the few primitives the runtime needs, done natively on trio and asyncio.

anyio's portable primitives (Event, cancel scopes with deadlines) cost several microseconds each on
trio; the mailbox and ``call`` hot paths need one park/unpark each, so they use the backends'
low-level APIs directly (``trio.lowlevel.wait_task_rescheduled``; an asyncio future).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol

import anyio
import outcome
import sniffio
import trio


class Waiter(Protocol):
    """A one-shot rendezvous: the task that created it ``wait``s, anyone may ``wake`` it once.

    ``wake`` before ``wait`` is allowed (``wait`` then returns at once, after a checkpoint).
    ``on_abort`` runs if the waiting task is cancelled before being woken.
    """

    on_abort: Callable[[], None] | None

    def wake(self, value: Any = None) -> bool:
        """Make ``wait`` return ``value``; False if already woken or aborted. Never blocks."""
        ...

    def throw(self, error: BaseException) -> bool:
        """Make ``wait`` raise ``error``; False if already woken or aborted. Never blocks."""
        ...

    def wait(self) -> Awaitable[Any]:
        """Wait for ``wake``; return the value or raise the error it carried. Checkpoints."""
        ...


_ABORTED: Final = outcome.Value(None)


class _TrioWaiter:
    __slots__ = ("_parked", "_result", "_task", "on_abort")

    def __init__(self) -> None:
        self._task = trio.lowlevel.current_task()
        self._result: outcome.Outcome[Any] | None = None
        self._parked = False
        self.on_abort: Callable[[], None] | None = None

    def wake(self, value: Any = None) -> bool:
        return self._settle(outcome.Value(value))

    def throw(self, error: BaseException) -> bool:
        return self._settle(outcome.Error(error))

    def _settle(self, result: outcome.Outcome[Any]) -> bool:
        if self._result is not None:
            return False
        self._result = result
        if self._parked:
            self._parked = False
            trio.lowlevel.reschedule(self._task, result)
        return True

    def wait(self) -> Awaitable[Any]:
        # Not a coroutine itself: hand back trio's, so a parked task's await chain is one frame
        # shorter (a million idle actors each keep that chain).
        result = self._result
        if result is not None:
            return _checkpoint_then(result)
        self._parked = True
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105 (caller awaits)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._parked = False
        self._result = _ABORTED
        if self.on_abort is not None:
            self.on_abort()
        return trio.lowlevel.Abort.SUCCEEDED


async def _checkpoint_then(result: outcome.Outcome[Any]) -> Any:
    await trio.lowlevel.checkpoint()
    return result.unwrap()


class _AsyncioWaiter:
    __slots__ = ("_fut", "on_abort")

    def __init__(self) -> None:
        self._fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.on_abort: Callable[[], None] | None = None

    def wake(self, value: Any = None) -> bool:
        fut = self._fut
        if fut.done():
            return False
        fut.set_result(value)
        return True

    def throw(self, error: BaseException) -> bool:
        fut = self._fut
        if fut.done():
            return False
        fut.set_exception(error)
        return True

    async def wait(self) -> Any:
        fut = self._fut
        if fut.done():
            await asyncio.sleep(0)
            return fut.result()
        try:
            return await fut
        except asyncio.CancelledError:
            if not (fut.done() and not fut.cancelled()) and self.on_abort is not None:
                self.on_abort()
            raise


async def _asyncio_checkpoint() -> None:
    await asyncio.sleep(0)


class CancelScope(Protocol):
    """The part of a cancel scope the runtime uses (trio's and anyio's both fit)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: Any) -> bool:
        """True when it absorbed its own cancellation."""
        ...

    def cancel(self) -> None: ...

    @property
    def cancel_called(self) -> bool: ...


class TaskHost(Protocol):
    """Where actor tasks run. Native per backend: anyio's task wrapper costs ~1.4 KB and a few
    microseconds per task, and a node may hold a million actors."""

    def start(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Start ``fn()`` as a task now. Never blocks."""
        ...

    def cancel(self) -> None:
        """Cancel every task."""
        ...


class _TrioHost:
    __slots__ = ("_nursery",)

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        self._nursery.start_soon(fn, name=name)

    def cancel(self) -> None:
        self._nursery.cancel_scope.cancel()


class _AsyncioHost:
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs: asyncio keeps only weak ones

    def start(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(fn(), name=name)  # type: ignore[arg-type]
        self._tasks.add(task)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def join(self) -> None:
        """Wait for every task; raise the first that failed with something but cancellation."""
        failed: list[BaseException] = []
        with anyio.CancelScope(shield=True):
            while self._tasks:
                done, _ = await asyncio.wait(list(self._tasks))
                for task in done:
                    self._tasks.discard(task)
                    if not task.cancelled() and task.exception() is not None:
                        failed.append(task.exception())  # type: ignore[arg-type]
        if failed:
            raise failed[0]


class Backend:
    """What the runtime needs from the running event loop. One per node."""

    __slots__ = ("cancel_scope", "checkpoint", "name", "new_waiter", "now")

    def __init__(
        self,
        name: str,
        new_waiter: Callable[[], Waiter],
        now: Callable[[], float],
        checkpoint: Callable[[], Awaitable[None]],
        cancel_scope: Callable[[], CancelScope],
    ) -> None:
        self.name = name
        self.new_waiter = new_waiter
        self.now = now  # the loop's monotonic clock, in seconds (virtual under test clocks)
        self.checkpoint = checkpoint
        self.cancel_scope = cancel_scope  # one per actor task: trio's own is ~3x smaller

    @asynccontextmanager
    async def open_task_host(self) -> AsyncIterator[TaskHost]:
        """A place to run actor tasks; on exit, wait for all of them (after ``cancel``)."""
        if self.name == "trio":
            async with trio.open_nursery() as nursery:
                yield _TrioHost(nursery)
            return
        host = _AsyncioHost()
        try:
            yield host
        except BaseException:
            host.cancel()
            raise
        finally:
            await host.join()


def current_backend() -> Backend:
    """The :class:`Backend` for the running loop (trio or asyncio).

    Raises:
        RuntimeError: called outside a trio or asyncio event loop.
    """
    library = sniffio.current_async_library()
    if library == "trio":
        return Backend(
            "trio", _TrioWaiter, trio.current_time, trio.lowlevel.checkpoint, trio.CancelScope
        )
    if library == "asyncio":
        return Backend(
            "asyncio",
            _AsyncioWaiter,
            asyncio.get_running_loop().time,
            _asyncio_checkpoint,
            anyio.CancelScope,
        )
    raise RuntimeError(f"unsupported async library: {library!r}")
