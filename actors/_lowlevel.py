"""Backend shims: the few primitives the runtime needs, done natively on trio and asyncio.

anyio's portable primitives (Event, cancel scopes with deadlines) cost several microseconds each on
trio; the mailbox and ``call`` hot paths need one park/unpark each, so they use the backends'
low-level APIs directly (``trio.lowlevel.wait_task_rescheduled``; an asyncio future).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

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

    async def wait(self) -> Any:
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

    async def wait(self) -> Any:
        result = self._result
        if result is not None:
            await trio.lowlevel.checkpoint()
            return result.unwrap()
        self._parked = True
        return await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._parked = False
        self._result = _ABORTED
        if self.on_abort is not None:
            self.on_abort()
        return trio.lowlevel.Abort.SUCCEEDED


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


class Backend:
    """What the runtime needs from the running event loop. One per node."""

    __slots__ = ("checkpoint", "name", "new_waiter", "now")

    def __init__(
        self,
        name: str,
        new_waiter: Callable[[], Waiter],
        now: Callable[[], float],
        checkpoint: Callable[[], Awaitable[None]],
    ) -> None:
        self.name = name
        self.new_waiter = new_waiter
        self.now = now  # the loop's monotonic clock, in seconds (virtual under test clocks)
        self.checkpoint = checkpoint


def current_backend() -> Backend:
    """The :class:`Backend` for the running loop (trio or asyncio).

    Raises:
        RuntimeError: called outside a trio or asyncio event loop.
    """
    library = sniffio.current_async_library()
    if library == "trio":
        return Backend("trio", _TrioWaiter, trio.current_time, trio.lowlevel.checkpoint)
    if library == "asyncio":
        return Backend(
            "asyncio", _AsyncioWaiter, asyncio.get_running_loop().time, _asyncio_checkpoint
        )
    raise RuntimeError(f"unsupported async library: {library!r}")
