"""Virtual time for asyncio: the counterpart of trio's ``MockClock(autojump_threshold=0)``.

The loop's ``time()`` reads a virtual clock; whenever the loop would block waiting for a timer with
no I/O ready, the clock jumps to that timer instead. Tests that sleep or time out therefore run
instantly and deterministically on both backends. Real I/O still works, but a test that waits on
real I/O *and* a timer will see the timer fire first: use it for in-process tests only.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class _AutojumpSelector(selectors.BaseSelector):
    def __init__(self, loop_ref: VirtualTimeLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop_ref = loop_ref

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            return self._inner.select(None)  # nothing scheduled at all: wait for real I/O
        self._loop_ref.virtual_now += timeout
        return []

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock is virtual and jumps over idle waits."""

    def __init__(self) -> None:
        self.virtual_now = 0.0
        super().__init__(selector=_AutojumpSelector(self))

    def time(self) -> float:
        return self.virtual_now
