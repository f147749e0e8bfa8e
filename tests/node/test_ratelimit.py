"""The per-user token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from gateway._ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, 3, clock)  # one per second, three at once
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(1.0)
    clock.now += 0.5
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 3600
    assert [bucket.take() for _ in range(4)][-1] > 0  # refills to the burst, not beyond
