"""What the chaos monkey may kill: actors by kind, the never-targets, and the intensity guard.

Reads the supervisors' own records (every actor shares the one event loop; nothing is sent to
them), as the admin endpoint's ops do. Kinds:

* ``connection``, ``session``, ``conversation``: the running children of the dynamic supervisors
  registered as ``connections``, ``sessions``, ``conversations``;
* ``storage``: the storage shard actors (the storage supervisor's running children);
* ``presence``: the presence actor;
* ``supervisor``: every supervisor below the root (storage, conversations, sessions, gateway,
  connections).

Never targets: the root and its children ``admin``, ``chaos`` and ``metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from actors import Node, NoProcError, Ref
from supervisors import ChildType, Restart

from ._metrics import _records
from ._services import CONNECTIONS, CONVERSATIONS, PRESENCE, SESSIONS

#: Every kind of target, in the order the docs list them.
KINDS: Final = ("connection", "session", "conversation", "storage", "presence", "supervisor")
#: The root's children the monkey never kills (nor itself, nor the root).
PROTECTED: Final = frozenset({"admin", "chaos", "metrics"})
#: The dynamic supervisor whose children each per-entity kind selects.
_DYNAMIC: Final = {"connection": CONNECTIONS, "session": SESSIONS, "conversation": CONVERSATIONS}


@dataclass(frozen=True, slots=True)
class Target:
    """A running actor the monkey may kill: its ``kind``, its ``ref``, the ``supervisor`` whose
    ``record`` (a ``supervisors`` child record, the same object across restarts) holds it under
    ``child_id`` (a dynamic supervisor's child id is its ref)."""

    kind: str
    ref: Ref
    supervisor: Ref
    child_id: Any
    record: Any

    @property
    def temporary(self) -> bool:
        """Whether its supervisor never restarts it (sessions, connections)."""
        return bool(self.record.spec.restart is Restart.TEMPORARY)


def records_of(node: Node, sup: Ref | None) -> list[tuple[Any, Any]]:
    """(child id, record) of a live supervisor's children; [] for anything else."""
    if sup is None:
        return []
    try:
        behaviour = node.context(sup).behaviour
    except NoProcError:
        return []
    return _records(behaviour) or []


def root_child(node: Node, root: Ref, child_id: str) -> Ref | None:
    """The running child ``child_id`` of the root (e.g. ``storage``), or None."""
    for cid, record in records_of(node, root):
        if cid == child_id:
            ref: Ref | None = record.ref
            return ref
    return None


def protected_pids(node: Node, root: Ref) -> set[int]:
    """The pids the monkey never kills: the root, and its ``admin``, ``chaos``, ``metrics``."""
    pids = {root.pid}
    for cid, record in records_of(node, root):
        if cid in PROTECTED and record.ref is not None:
            pids.add(record.ref.pid)
    return pids


def _running(node: Node, sup: Ref | None, kind: str) -> Iterator[Target]:
    for cid, record in records_of(node, sup):
        ref = record.ref
        if ref is not None and sup is not None:
            yield Target(kind, ref, sup, cid, record)


def _supervisors(node: Node, root: Ref) -> Iterator[Target]:
    stack = [root]
    while stack:
        sup = stack.pop()
        for cid, record in records_of(node, sup):
            if record.ref is not None and record.spec.type is ChildType.SUPERVISOR:
                yield Target("supervisor", record.ref, sup, cid, record)
                stack.append(record.ref)


def candidates(node: Node, root: Ref, kind: str) -> list[Target]:
    """Every running actor of ``kind`` but the never-targets, by pid. O(children of the
    supervisors looked at).

    Raises:
        ValueError: an unknown kind.
    """
    if kind in _DYNAMIC:
        found = list(_running(node, node.whereis(_DYNAMIC[kind]), kind))
    elif kind == "storage":
        found = list(_running(node, root_child(node, root, "storage"), kind))
    elif kind == "presence":
        presence = node.whereis(PRESENCE)
        found = [t for t in _running(node, root, kind) if t.ref == presence]
    elif kind == "supervisor":
        found = list(_supervisors(node, root))
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    never = protected_pids(node, root)
    found = [t for t in found if t.ref.pid not in never]
    found.sort(key=lambda t: t.ref.pid)
    return found


def kind_of(node: Node, root: Ref, ref: Ref, parent: Ref | None) -> str:
    """The kind of the actor ``ref`` whose supervisor is ``parent``; ``other`` when it is of
    none (the gateway's listener, a supervisor's worker in a test tree)."""
    for kind, name in _DYNAMIC.items():
        sup = node.whereis(name)
        if sup is not None and parent == sup:
            return kind
    if parent is not None and parent == root_child(node, root, "storage"):
        return "storage"
    if ref == node.whereis(PRESENCE):
        return "presence"
    try:
        behaviour = node.context(ref).behaviour
    except NoProcError:
        return "other"
    if hasattr(behaviour, "children_records") and hasattr(behaviour, "flags"):
        return "supervisor"
    return "other"


@dataclass(frozen=True, slots=True)
class Budget:
    """A supervisor's restart intensity and how much of it is used: ``restarts`` inside the
    last ``period`` seconds, at most ``intensity`` of them before it gives up."""

    restarts: int
    intensity: int
    period: float

    @property
    def allows_one_more(self) -> bool:
        """The guard: one more restart leaves it at most at ``intensity - 1``."""
        return self.restarts + 1 <= self.intensity - 1


def budget(node: Node, sup: Ref) -> Budget | None:
    """``sup``'s restart budget now, or None when it is not a live supervisor.

    Reads the restart times the supervisor keeps for its intensity check (OTP's
    ``add_restart``): those older than the period no longer count.
    """
    try:
        behaviour = node.context(sup).behaviour
    except NoProcError:
        return None
    flags = getattr(behaviour, "flags", None)
    window = getattr(behaviour, "_intensity", None)
    if flags is None or window is None:
        return None
    since = node.now() - flags.period
    recent = sum(1 for at in getattr(window, "_times", ()) if at > since)
    return Budget(recent, flags.intensity, flags.period)


def guard_allows(node: Node, target: Target) -> bool:
    """Whether killing ``target`` keeps its supervisor below its intensity (see
    :attr:`Budget.allows_one_more`). A temporary child's exit is no restart: always allowed."""
    if target.temporary:
        return True
    found = budget(node, target.supervisor)
    return found is not None and found.allows_one_more
