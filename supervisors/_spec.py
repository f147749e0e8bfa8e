"""Child specs, restart types, shutdown modes, strategies and backoff, as frozen records.

Semantics and defaults are OTP's (lib/stdlib/src/supervisor.erl): a worker gets 5 s to shut down,
a supervisor ``infinity``; intensity 1 restart in a 5 s period.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from actors import Actor

from ._errors import SpecError


class Restart(enum.Enum):
    """When a child is restarted: ``PERMANENT`` always; ``TRANSIENT`` only after an abnormal exit
    (not ``normal``/``shutdown``); ``TEMPORARY`` never (and its spec is removed when it exits)."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class ChildType(enum.Enum):
    """A child is a ``WORKER`` or a ``SUPERVISOR`` (shown in the tree; default shutdown differs)."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


class Strategy(enum.Enum):
    """Which children restart when one fails (OTP's restart strategies)."""

    ONE_FOR_ONE = "one_for_one"  #: only the failed child
    ONE_FOR_ALL = "one_for_all"  #: all children: the others are stopped, then all started
    REST_FOR_ONE = "rest_for_one"  #: the failed child and those started after it


class _Brutal:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BRUTAL_KILL"


#: ``shutdown=BRUTAL_KILL``: the child is killed at once, unconditionally.
BRUTAL_KILL: Final = _Brutal()
#: ``shutdown=INFINITY``: the child gets all the time it needs (the default for supervisors).
INFINITY: Final = math.inf

Shutdown = float | _Brutal


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between restarts of one child (beyond OTP, for children
    whose failures are external, such as a database connection).

    The n-th consecutive restart waits ``min(max, min * factor**(n-1))`` seconds, scaled by a
    random factor in ``[1 - jitter, 1 + jitter]`` and kept within ``[min, max]``; the count
    resets once the child has run for ``reset_after`` seconds. Restart intensity still applies.
    Times in seconds.
    """

    min: float = 0.1
    max: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        if not (self.min >= 0 and math.isfinite(self.min)):
            raise SpecError(f"backoff.min must be a finite number >= 0, got {self.min!r}")
        if not (self.max >= self.min and math.isfinite(self.max)):
            raise SpecError(f"backoff.max must be finite and >= min, got {self.max!r}")
        if not self.factor >= 1:
            raise SpecError(f"backoff.factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter < 1:
            raise SpecError(f"backoff.jitter must be in [0, 1), got {self.jitter!r}")
        if not self.reset_after > 0:
            raise SpecError(f"backoff.reset_after must be > 0, got {self.reset_after!r}")

    def delay(self, attempt: int, unit_random: float) -> float:
        """Seconds before restart number ``attempt`` (1-based); ``unit_random`` in [0, 1)."""
        base = min(self.max, self.min * self.factor ** max(0, attempt - 1))
        jittered = base * (1 - self.jitter + 2 * self.jitter * unit_random)
        return min(self.max, max(self.min, jittered))


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child.

    Args:
        id: the child's name within its supervisor (any hashable; usually a string).
        start: an ``Actor`` subclass (a ``Supervisor`` is one) or an ``async def fn(ctx, *args)``
            function actor; the supervisor starts it with ``start_link(start, *args)``.
        args: arguments for ``init`` (a dynamic supervisor appends ``start_child``'s extra ones).
        restart: :class:`Restart` (default ``PERMANENT``).
        shutdown: seconds to wait after asking the child to stop before killing it,
            ``BRUTAL_KILL``, or ``INFINITY``. Default 5 s for workers, ``INFINITY`` for
            supervisors.
        type: :class:`ChildType`; defaults to ``SUPERVISOR`` when ``start`` is a supervisor.
        backoff: optional :class:`Backoff` between restarts.
        options: spawn options passed through (``mailbox_size``, ``overflow``,
            ``hibernate_after``).

    Raises:
        SpecError: any field is invalid; the message names it.
    """

    id: Any
    start: Any
    args: tuple[Any, ...] = ()
    restart: Restart = Restart.PERMANENT
    shutdown: Shutdown | None = None
    type: ChildType | None = None
    backoff: Backoff | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Derived: the child's ``init`` is synchronous, so starting it needs no waiting.
    start_is_sync: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            hash(self.id)
        except TypeError as exc:
            raise SpecError(f"child spec id must be hashable, got {self.id!r}") from exc
        if self.id is None or self.id == "":
            raise SpecError("child spec id must not be empty")
        is_actor = isinstance(self.start, type) and issubclass(self.start, Actor)
        if not is_actor and not inspect.iscoroutinefunction(self.start):
            raise SpecError(
                f"child {self.id!r}: start must be an Actor subclass or an async function, "
                f"got {self.start!r}"
            )
        if not isinstance(self.args, tuple):
            raise SpecError(f"child {self.id!r}: args must be a tuple, got {self.args!r}")
        if not isinstance(self.restart, Restart):
            raise SpecError(f"child {self.id!r}: restart must be a Restart, got {self.restart!r}")
        if self.type is None:
            from ._supervisor import is_supervisor

            object.__setattr__(
                self,
                "type",
                ChildType.SUPERVISOR if is_supervisor(self.start) else ChildType.WORKER,
            )
        elif not isinstance(self.type, ChildType):
            raise SpecError(f"child {self.id!r}: type must be a ChildType, got {self.type!r}")
        if self.shutdown is None:
            object.__setattr__(
                self, "shutdown", INFINITY if self.type is ChildType.SUPERVISOR else 5.0
            )
        elif not isinstance(self.shutdown, _Brutal) and not (
            isinstance(self.shutdown, int | float)
            and not isinstance(self.shutdown, bool)
            and self.shutdown > 0
        ):
            raise SpecError(
                f"child {self.id!r}: shutdown must be seconds > 0, BRUTAL_KILL or INFINITY, "
                f"got {self.shutdown!r}"
            )
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise SpecError(f"child {self.id!r}: backoff must be a Backoff, got {self.backoff!r}")
        object.__setattr__(
            self,
            "start_is_sync",
            is_actor and not self.start._async_init,
        )
        allowed = {"mailbox_size", "overflow", "hibernate_after"}
        unknown = set(self.options) - allowed
        if unknown:
            raise SpecError(
                f"child {self.id!r}: unknown options {sorted(unknown)}; allowed: {sorted(allowed)}"
            )


@dataclass(frozen=True, slots=True)
class SupervisorFlags:
    """A supervisor's strategy and restart intensity: more than ``intensity`` restarts within
    ``period`` seconds make it give up: it stops all children and exits ``shutdown``, so that its
    own supervisor decides (escalation). OTP's defaults: 1 restart in 5 s.
    ``max_children`` caps a dynamic supervisor (None: no cap). ``seed`` seeds the backoff
    jitter (None: from the OS), for reproducible runs."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    max_children: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, Strategy):
            raise SpecError(f"strategy must be a Strategy, got {self.strategy!r}")
        if isinstance(self.intensity, bool) or not isinstance(self.intensity, int):
            raise SpecError(f"intensity must be an int >= 0, got {self.intensity!r}")
        if self.intensity < 0:
            raise SpecError(f"intensity must be >= 0, got {self.intensity!r}")
        if isinstance(self.period, bool) or not (
            isinstance(self.period, int | float) and self.period > 0
        ):
            raise SpecError(f"period must be seconds > 0, got {self.period!r}")
        if self.max_children is not None and (
            isinstance(self.max_children, bool)
            or not isinstance(self.max_children, int)
            or self.max_children < 1
        ):
            raise SpecError(f"max_children must be None or an int >= 1, got {self.max_children!r}")
