"""The supervision tree as data, for operators and the inspector.

Built by reading each supervisor's bookkeeping directly (all actors share one event loop, so this
is a consistent snapshot and sends no messages). A dynamic supervisor with many children is
summarised: counts by status and the few children with the longest mailboxes, found in O(n)
with ``heapq.nlargest``, so the tree stays cheap with 100,000 children.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from actors import Node, NoProcError, Ref

from ._base import SupervisorBase
from ._dynamic import DynamicSupervisor
from ._restarts import Child

#: A dynamic supervisor with more children than this is summarised.
SUMMARY_THRESHOLD = 20


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One actor in the supervision tree.

    ``kind`` is ``supervisor`` or ``worker``; ``strategy`` is set for supervisors (dynamic ones
    say ``simple_one_for_one``); ``status`` is the actor's status (``running``, ``waiting``,
    ``hibernated``, ...) or, for a child that is not running, ``restarting`` or ``stopped``.
    ``restarts``, ``last_reason`` (its repr) and ``last_exit_at`` (loop time, s) are the
    child's history as its supervisor keeps it. ``child_count`` is the number of children;
    when ``summarised``, ``children`` holds only the top few by mailbox length and
    ``by_status`` counts all of them.
    """

    id: Any
    ref: Ref | None
    behaviour: str
    kind: str
    status: str
    strategy: str | None = None
    restarts: int = 0
    last_reason: str | None = None
    last_exit_at: float | None = None
    mailbox_length: int = 0
    mailbox_high_water_mark: int = 0
    child_count: int = 0
    summarised: bool = False
    by_status: Mapping[str, int] = field(default_factory=dict)
    children: tuple[TreeNode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (refs as pids)."""
        return {
            "id": self.id if isinstance(self.id, str | int | None) else repr(self.id),
            "pid": self.ref.pid if self.ref is not None else None,
            "behaviour": self.behaviour,
            "kind": self.kind,
            "status": self.status,
            "strategy": self.strategy,
            "restarts": self.restarts,
            "last_reason": self.last_reason,
            "last_exit_at": self.last_exit_at,
            "mailbox_length": self.mailbox_length,
            "mailbox_high_water_mark": self.mailbox_high_water_mark,
            "child_count": self.child_count,
            "summarised": self.summarised,
            "by_status": dict(self.by_status),
            "children": [child.to_dict() for child in self.children],
        }


def tree(node: Node, root: Ref | str, *, depth: int | None = None, top: int = 5) -> TreeNode:
    """The supervision tree under ``root`` (a ref or registered name), down to ``depth`` levels
    (None: all). Dynamic supervisors with more than ``SUMMARY_THRESHOLD`` children show the
    ``top`` children by mailbox length. O(actors shown + children of dynamic supervisors).

    Raises:
        NoProcError: ``root`` is not alive.
    """
    ctx = node.context(root)
    return _describe(node, ctx.ref, None, None, depth, top)


def _describe(
    node: Node, ref: Ref | None, child_id: Any, record: Child | None, depth: int | None, top: int
) -> TreeNode:
    history: dict[str, Any] = {}
    if record is not None:
        history = {
            "restarts": record.restarts,
            "last_reason": None if record.last_reason is None else repr(record.last_reason),
            "last_exit_at": record.last_exit_at,
        }
    if ref is None or not ref.alive:
        assert record is not None
        start = record.spec.start
        return TreeNode(
            id=child_id,
            ref=None,
            behaviour=getattr(start, "__qualname__", repr(start)),
            kind=record.spec.type.value if record.spec.type is not None else "worker",
            status=record.status if ref is None else "stopped",
            **history,
        )
    try:
        ctx = node.context(ref)
    except NoProcError:
        return TreeNode(id=child_id, ref=ref, behaviour="?", kind="worker", status="exited")
    mailbox = ctx.mailbox_statistics()
    behaviour = ctx.behaviour
    common = {
        "id": child_id if record is not None else (ctx.name or ref.pid),
        "ref": ref,
        "behaviour": type(behaviour).__qualname__
        if isinstance(behaviour, SupervisorBase)
        else ctx.info().behaviour,
        "status": ctx.status().value,
        "mailbox_length": mailbox.length,
        "mailbox_high_water_mark": mailbox.high_water_mark,
        **history,
    }
    if not isinstance(behaviour, SupervisorBase) or not hasattr(behaviour, "flags"):
        return TreeNode(kind="worker", **common)
    records = behaviour.children_records()
    child_count = len(records)
    strategy = (
        "simple_one_for_one"
        if isinstance(behaviour, DynamicSupervisor)
        else behaviour.flags.strategy.value
    )
    deeper = None if depth is None else depth - 1
    summarised = isinstance(behaviour, DynamicSupervisor) and child_count > SUMMARY_THRESHOLD
    by_status: dict[str, int] = {}
    if summarised:

        def loads() -> Iterator[tuple[int, int]]:
            # One pass: count statuses, and feed nlargest lazily so only ``top`` entries live.
            for index, (_, child) in enumerate(records):
                status, length = _child_load(node, child)
                by_status[status] = by_status.get(status, 0) + 1
                yield length, index

        records = [records[index] for _, index in heapq.nlargest(top, loads())]
    children: tuple[TreeNode, ...] = ()
    if depth is None or depth > 0:
        children = tuple(
            _describe(node, child.ref, cid, child, deeper, top) for cid, child in records
        )
    return TreeNode(
        kind="supervisor",
        strategy=strategy,
        child_count=child_count,
        summarised=summarised,
        by_status=by_status,
        children=children,
        **common,
    )


def _child_load(node: Node, child: Child) -> tuple[str, int]:
    """A child's status and mailbox length (-1 when it has no live actor)."""
    ref = child.ref
    if ref is None:
        return child.status, -1
    if not ref.alive:
        return "exited", -1
    ctx = node.context(ref)
    return ctx.status().value, ctx.mailbox_length
