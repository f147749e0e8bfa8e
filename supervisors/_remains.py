"""A child's remains: what is left of its previous incarnation after it exited.

A child that exits abnormally tells the children it was linked to (its orphans, see
``Node.orphans``) to exit, but they take their own time: a child supervisor that was killed
leaves its own children running their ``terminate`` or stopping theirs, and they keep their
registered names (and sockets, and files) meanwhile. Starting the new incarnation at once would
find its names taken. So the supervisor monitors the remains and starts the child again only
once they are gone, as OTP's supervisor starts a child only once the old one has exited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors import MonitorRef, Ref, Timer

from ._restarts import Child


class Remains:
    """The live remains of one child's previous incarnation: ``watched`` maps each monitor the
    supervisor holds to the remaining actor. ``timer`` is the deadline (the child's
    ``shutdown``), ``killing`` is set once it has passed (every remaining actor, and every
    orphan found later, is killed), and ``due`` is the start that waits for them."""

    __slots__ = ("child", "due", "killing", "timer", "watched")

    def __init__(self, child: Child) -> None:
        self.child = child
        self.watched: dict[MonitorRef, Ref] = {}
        self.timer: Timer | None = None
        self.killing = False
        self.due: Any = None


@dataclass(frozen=True, slots=True)
class RemainsDeadline:
    """The child's ``shutdown`` deadline passed with ``remains`` still alive: kill them."""

    remains: Remains
