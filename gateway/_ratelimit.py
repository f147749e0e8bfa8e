"""The per-user send rate limit: a token bucket on the loop's monotonic clock."""

from __future__ import annotations

from collections.abc import Callable


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_min`` per minute; each send takes one.

    ``clock`` returns seconds (the loop's monotonic clock). One bucket is shared by all the
    devices of a user (the session actor hands it out).
    """

    __slots__ = ("_clock", "_last", "_rate", "_size", "_tokens")

    def __init__(self, rate_per_min: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate_per_min / 60.0
        self._size = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def take(self) -> float:
        """Take a token: 0.0 when allowed, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self._size, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate
