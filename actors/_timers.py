"""One timer service per node: every ``send_after``, call timeout and hibernation deadline.

A timer per task (a cancel scope with a deadline) costs several microseconds on trio, and a call
needs one. Here a timer is an entry in a bucket of ``TICK`` seconds, found by a heap of bucket
keys: adding and cancelling are O(1) dictionary operations, and one task sleeps until the earliest
non-empty bucket. Timers never fire early; they fire at most one tick late. All times come from the
loop's monotonic clock, so virtual clocks (trio's ``MockClock``) drive them in tests.

A timer given ``slack`` goes into a bucket of that width instead (rounded up, so it still never
fires early): thousands of hibernation deadlines then share a few dozen buckets, not a bucket
each. ``rearm`` moves a timer to a new deadline, so an actor that parks again and again keeps one
``Timer`` instead of allocating one per park.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

import anyio

from ._lowlevel import Backend, Waiter

TICK = 0.001  # seconds per bucket


class Timer:
    """A pending timer. ``cancel()`` returns the seconds that were left, or None if it had fired
    or was already cancelled (Erlang's ``cancel_timer``)."""

    __slots__ = ("_bucket", "_grain", "_service", "callback", "deadline")

    def __init__(
        self,
        service: TimerService,
        deadline: float,
        callback: Callable[[], Any],
        bucket: int,
        grain: int = 1,
    ) -> None:
        self._service = service
        self.deadline = deadline
        self.callback = callback
        self._bucket = bucket
        self._grain = grain  # bucket width in ticks

    def cancel(self) -> float | None:
        """Cancel the timer: the seconds that were left, or None if it already fired or was
        cancelled. Never blocks."""
        entries = self._service._buckets.get(self._bucket)
        if entries is None or self not in entries:
            return None
        del entries[self]
        return max(0.0, self.deadline - self._service._backend.now())

    @property
    def pending(self) -> bool:
        """Whether the timer has neither fired nor been cancelled."""
        entries = self._service._buckets.get(self._bucket)
        return entries is not None and self in entries


class TimerService:
    """Buckets of timers keyed by ``ceil(deadline / TICK)``, and the task that fires them."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._buckets: dict[int, dict[Timer, None]] = {}
        self._heap: list[int] = []
        self._sleeping_until: float = math.inf
        self._waiter: Waiter | None = None

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def add(self, deadline: float, callback: Callable[[], Any], *, slack: float = 0.0) -> Timer:
        """Schedule ``callback()`` (sync, must not block) at ``deadline`` (loop time, seconds),
        or up to ``slack`` seconds later (in buckets of that width; at most a tick late when
        0)."""
        grain = max(1, int(slack / TICK))
        timer = Timer(self, deadline, callback, -1, grain)
        self._insert(timer)
        return timer

    def rearm(self, timer: Timer, deadline: float) -> None:
        """Move ``timer`` (pending, fired or cancelled) to ``deadline``, with its callback and
        slack."""
        entries = self._buckets.get(timer._bucket)
        if entries is not None:
            entries.pop(timer, None)
        timer.deadline = deadline
        self._insert(timer)

    def _insert(self, timer: Timer) -> None:
        grain = timer._grain
        key = math.ceil(timer.deadline / TICK)
        if grain > 1:
            key = -(-key // grain) * grain
        entries = self._buckets.get(key)
        if entries is None:
            entries = self._buckets[key] = {}
            heapq.heappush(self._heap, key)
            if key * TICK < self._sleeping_until and self._waiter is not None:
                waiter, self._waiter = self._waiter, None
                waiter.wake()
        timer._bucket = key
        entries[timer] = None

    def _fire_due(self) -> None:
        now = self._backend.now()
        heap = self._heap
        while heap and heap[0] * TICK <= now:
            key = heapq.heappop(heap)
            entries = self._buckets.pop(key, None)
            if not entries:
                continue
            late: list[Timer] = []
            for timer in sorted(entries, key=_by_deadline):
                if timer.deadline > now:  # float rounding put it a hair early: next tick
                    late.append(timer)
                    continue
                timer._bucket = -1
                timer.callback()
            for timer in late:
                self._requeue(timer, key + 1)

    def _requeue(self, timer: Timer, key: int) -> None:
        entries = self._buckets.get(key)
        if entries is None:
            entries = self._buckets[key] = {}
            heapq.heappush(self._heap, key)
        timer._bucket = key
        entries[timer] = None

    async def run(self) -> None:
        """The service's task: fire due timers, sleep until the next bucket or a new earlier one."""
        backend = self._backend
        while True:
            self._fire_due()
            heap = self._heap
            while heap and heap[0] not in self._buckets:
                heapq.heappop(heap)
            waiter = self._waiter = backend.new_waiter()
            if heap:
                self._sleeping_until = heap[0] * TICK
                with anyio.CancelScope(deadline=self._sleeping_until):
                    await waiter.wait()
            else:
                self._sleeping_until = math.inf
                await waiter.wait()
            self._waiter = None


def _by_deadline(timer: Timer) -> float:
    return timer.deadline
