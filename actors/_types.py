"""Exit reasons, system messages and the frozen records the runtime reports."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._actor import From
    from ._ref import Ref

# Exit reasons are any object; these are the ones with meaning to the runtime (Erlang's atoms).
NORMAL: Final = "normal"  #: a clean stop: linked actors that do not trap exits ignore it
SHUTDOWN: Final = "shutdown"  #: asked to stop by a supervisor; a clean stop
KILL: Final = "kill"  #: sent with ``exit(ref, KILL)``: untrappable; the target exits ``killed``
KILLED: Final = "killed"  #: the reason of an actor that received ``kill``
NOPROC: Final = "noproc"  #: the target of a link or monitor was not alive
MAILBOX_OVERFLOW: Final = "mailbox_overflow"  #: exit reason under ``Overflow.EXIT``


def is_clean_exit(reason: object) -> bool:
    """True for ``normal``, ``shutdown`` and ``("shutdown", term)`` (OTP's clean reasons)."""
    return reason in (NORMAL, SHUTDOWN) or (
        isinstance(reason, tuple) and len(reason) == 2 and reason[0] == SHUTDOWN
    )


class Overflow(enum.Enum):
    """What a full mailbox does with one more message.

    - ``DROP_NEWEST``: the new message becomes a dead letter (a ``call`` fails at once with
      ``CallError("mailbox_full")``). The default.
    - ``DROP_OLDEST``: the oldest queued message becomes a dead letter to make room.
    - ``BACKPRESSURE``: awaited sends (``cast_wait``, ``send_wait``, ``call``) wait for room;
      plain ``cast``/``send`` still never block, so they drop the newest.
    - ``EXIT``: the actor exits with reason ``"mailbox_overflow"`` (a supervisor restarts it).
    """

    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"
    BACKPRESSURE = "backpressure"
    EXIT = "exit"


class Status(enum.Enum):
    """An actor's life-cycle state as introspection reports it."""

    STARTING = "starting"  #: running ``init``
    RUNNING = "running"  #: handling a message
    WAITING = "waiting"  #: has a task, parked on an empty mailbox
    HIBERNATED = "hibernated"  #: no task; only its state and mailbox remain
    SUSPENDED = "suspended"  #: not taking messages until resumed (``sys:suspend``)
    EXITING = "exiting"  #: running ``terminate`` or unwinding
    EXITED = "exited"


@dataclass(frozen=True, slots=True)
class MonitorRef:
    """The handle ``monitor`` returns; ``Down.monitor`` carries it."""

    id: int


@dataclass(frozen=True, slots=True)
class Exit:
    """A trapped exit signal, delivered to ``handle_info`` (Erlang's ``{'EXIT', From, Reason}``)."""

    ref: Ref
    reason: object


@dataclass(frozen=True, slots=True)
class Down:
    """A monitored actor exited (Erlang's ``{'DOWN', MonitorRef, process, Pid, Reason}``)."""

    monitor: MonitorRef
    ref: Ref
    reason: object


@dataclass(frozen=True, slots=True)
class Call:
    """A request as a function actor's ``receive`` sees it; answer with ``reply_to.reply(v)``."""

    request: Any
    reply_to: From


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be delivered. ``reason``: ``noproc``, ``mailbox_full``,
    ``exited`` (still queued when its actor exited). ``at`` is loop time in seconds."""

    to: Ref | str
    message: Any
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A mailbox's state: queued messages now, the capacity, and the most ever queued at once."""

    length: int
    capacity: int
    high_water_mark: int
    overflow: Overflow


@dataclass(frozen=True, slots=True)
class ActorInfo:
    """Everything introspection knows about one actor, as of the moment it was taken.

    ``started_at`` is loop time in seconds; ``summary`` is what the actor's ``format_status``
    chose to expose (None when it exposes nothing).
    """

    ref: Ref
    name: str | None
    behaviour: str
    status: Status
    mailbox: MailboxStatistics
    processed: int
    links: tuple[Ref, ...]
    monitors: tuple[Ref, ...]
    monitored_by: tuple[Ref, ...]
    parent: Ref | None
    trap_exit: bool
    started_at: float
    summary: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """Node-wide counters. ``dead_letters`` maps reason to count since the node started."""

    actors: int
    by_status: Mapping[str, int]
    spawned: int
    exited: int
    dead_letters: Mapping[str, int]
    timers: int


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One message an actor took from its mailbox: ``kind`` is ``call``, ``cast``, ``info`` or
    ``signal``; ``at`` is loop time in seconds."""

    ref: Ref
    kind: str
    message: Any
    at: float
