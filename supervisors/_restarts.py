"""Restart intensity (OTP's ``add_restart``) and each child's restart history."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from actors import Ref

from ._spec import ChildSpec


class Intensity:
    """At most ``intensity`` restarts within any ``period`` seconds (a sliding window on the loop
    clock). ``add(now)`` records one and returns False when that makes one too many."""

    __slots__ = ("_times", "intensity", "period")

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self._times: deque[float] = deque()

    def add(self, now: float) -> bool:
        times = self._times
        times.append(now)
        while times and times[0] <= now - self.period:
            times.popleft()
        return len(times) <= self.intensity

    def __len__(self) -> int:
        return len(self._times)


class Child:
    """A supervisor's record of one child: its spec, its current ref, and its restart history."""

    __slots__ = (
        "args",
        "backoff_attempt",
        "last_exit_at",
        "last_reason",
        "pending",
        "ref",
        "remains",
        "restarts",
        "spec",
        "started_at",
    )

    def __init__(self, spec: ChildSpec, args: tuple[Any, ...] = ()) -> None:
        self.spec = spec
        self.args = args  # a dynamic child's extra start arguments
        self.ref: Ref | None = None
        self.restarts = 0
        self.last_reason: object = None
        self.last_exit_at: float | None = None
        self.started_at: float | None = None
        self.backoff_attempt = 0
        self.pending: Any = None  # the RestartDue while a (re)start is scheduled
        self.remains: Any = None  # a _remains.Remains while its last incarnation's orphans live

    @property
    def status(self) -> str:
        if self.ref is not None:
            return "running"
        return "restarting" if self.pending is not None else "stopped"


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One child as ``which_children`` reports it. ``status``: ``running``, ``restarting``
    (waiting out a backoff or a retry) or ``stopped``; ``last_exit_at`` is loop time (s)."""

    id: Any
    ref: Ref | None
    type: str
    restart: str
    status: str
    restarts: int
    last_reason: object
    last_exit_at: float | None


@dataclass(frozen=True, slots=True)
class ChildCounts:
    """OTP's ``count_children``: specs, active (running) children, supervisors, workers."""

    specs: int
    active: int
    supervisors: int
    workers: int


def child_info(child: Child, child_id: Any) -> ChildInfo:
    spec = child.spec
    assert spec.type is not None
    return ChildInfo(
        id=child_id,
        ref=child.ref,
        type=spec.type.value,
        restart=spec.restart.value,
        status=child.status,
        restarts=child.restarts,
        last_reason=child.last_reason,
        last_exit_at=child.last_exit_at,
    )
