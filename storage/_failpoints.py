"""Failpoints: named places in the storage actors where an operator or a chaos test makes the actor
crash on purpose, a set number of times.

A :class:`Failpoints` registry belongs to one node (no process-global state); it reaches the shard
actors through ``ShardOptions(failpoints=...)``. Points:

* ``storage.after_commit``: the shard actor crashes after a group commit's transaction has
  committed and before it replies to any writer of that batch (they get ``Unavailable``
  while their messages are stored: an ack lost between commit and reply).
* ``storage.after_reply``: it crashes right after replying to a batch's writers, before it
  dispatches the next batch (writers still waiting get ``Unavailable``).

Arming is not cumulative: ``arm(name, n)`` sets the point to fire at its next ``n`` passes
(0 disarms it). Each firing counts as a hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._errors import StorageError

__all__ = [
    "FAILPOINTS",
    "STORAGE_AFTER_COMMIT",
    "STORAGE_AFTER_REPLY",
    "FailpointCrash",
    "FailpointState",
    "Failpoints",
]

STORAGE_AFTER_COMMIT: Final = "storage.after_commit"
STORAGE_AFTER_REPLY: Final = "storage.after_reply"
#: Every failpoint name, in the order they are passed during one group commit.
FAILPOINTS: Final = (STORAGE_AFTER_COMMIT, STORAGE_AFTER_REPLY)


class FailpointCrash(StorageError):
    """The exit reason of an actor crashed by an armed failpoint; ``name`` is the point."""

    def __init__(self, name: str) -> None:
        super().__init__(f"failpoint {name} fired")
        self.name = name


@dataclass(frozen=True, slots=True)
class FailpointState:
    """One failpoint: ``armed`` firings left, ``hits`` firings so far."""

    armed: int
    hits: int


class Failpoints:
    """A node's failpoints, all disarmed at first. Single-loop state: no locking."""

    __slots__ = ("_armed", "_hits", "_total")

    def __init__(self) -> None:
        self._armed = dict.fromkeys(FAILPOINTS, 0)
        self._hits = dict.fromkeys(FAILPOINTS, 0)
        self._total = 0  # firings left over all points: the hot path's only check

    def arm(self, name: str, count: int = 1) -> int:
        """Make ``name`` fire at its next ``count`` passes (0 disarms it); returns ``count``.

        Raises:
            ValueError: an unknown name, or ``count`` < 0.
        """
        if name not in self._armed:
            raise ValueError(f"unknown failpoint {name!r}; expected one of {', '.join(FAILPOINTS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"a failpoint's count is an int >= 0, got {count!r}")
        self._total += count - self._armed[name]
        self._armed[name] = count
        return count

    def fire(self, name: str) -> None:
        """Pass the point ``name``: raise :class:`FailpointCrash` if it is armed (using up one
        firing), else return at once."""
        if not self._total:
            return
        left = self._armed.get(name, 0)
        if left:
            self._armed[name] = left - 1
            self._hits[name] += 1
            self._total -= 1
            raise FailpointCrash(name)

    def state(self, name: str) -> FailpointState:
        """The point's firings left and hits. Raises KeyError for an unknown name."""
        return FailpointState(self._armed[name], self._hits[name])

    def snapshot(self) -> dict[str, FailpointState]:
        """Every point's state, by name."""
        return {name: self.state(name) for name in FAILPOINTS}

    def __repr__(self) -> str:
        armed = {name: n for name, n in self._armed.items() if n}
        return f"Failpoints(armed={armed})"
