"""The supervision invariants: killed actors come back within the restart bound, only the
subtree a strategy implies restarts, storms above the intensity escalate and those below do not;
and the node's health: mailboxes bounded, actor counts back to the baseline."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, Final

from storage import SHARD_BACKOFF

from ._model import Fault, Model
from ._report import Report, Tally, percentiles

#: Actor kinds whose children are temporary: a killed one is not restarted (gateway/_tree.py).
TEMPORARY_KINDS: Final = frozenset({"connection", "session"})
#: Actor kinds whose supervisor restarts them after a backoff that grows with each restart
#: within its reset period (storage shards: 0.1 s doubling up to ``SHARD_BACKOFF.max``), by
#: design: their restart bound is the run's plus that longest backoff.
BACKOFF_S: Final[Mapping[str, float]] = {"storage": SHARD_BACKOFF.max}
#: The fault kinds that report whether the supervisor escalated, and whether it should have.
ESCALATION_EXPECTED: Final[Mapping[str, bool]] = {
    "storm.above": True,
    "storm.below": False,
    "havoc": False,
}
#: Actor counts at the end may differ from the baseline by this many actors ...
ACTORS_SLACK: Final = 5
#: ... or by this fraction of the baseline, whichever is larger (conversation actors passivate
#: a few seconds after their last message, and a client may still be closing its connection).
ACTORS_SLACK_FRACTION: Final = 0.05


def _kill_records(fault: Fault) -> Iterator[Mapping[str, Any]]:
    detail = fault.detail
    for key in ("kills", "records", "log"):
        records = detail.get(key)
        if isinstance(records, list):
            yield from (r for r in records if isinstance(r, dict))


def check_restarts(model: Model, report: Report, *, bound: float) -> dict[str, Any]:
    """Every killed actor that its supervisor restarts (not a temporary child, not the child
    of a supervisor that escalated, as storm.above's does) has ``restart_latency_s`` within
    ``bound`` (plus its :data:`BACKOFF_S`). Returns the ``restarts`` section: ``kills``
    (records seen), ``per_supervisor`` (restarts in the kill records, by supervisor pid),
    ``per_supervisor_node`` (the restart counts the node reported at the end, by supervisor
    id, since its last start) and the ``latency_s`` percentiles."""
    slow = Tally()
    latencies = []
    kills = 0
    per_supervisor: Counter[str] = Counter()
    for fault in model.faults:
        if fault.end is None:
            report.warnings.append(f"fault {fault.id} ({fault.kind}) has no end event")
        elif "error" in fault.detail:
            report.warnings.append(f"fault {fault.id} ({fault.kind}): {fault.detail['error']}")
        for record in _kill_records(fault):
            kills += 1
            latency = record.get("restart_latency_s")
            if isinstance(latency, int | float):
                latencies.append(float(latency))
            if record.get("restarted_pid") is not None:
                per_supervisor[str(record.get("supervisor"))] += 1
            if record.get("kind") in TEMPORARY_KINDS:
                continue
            example = {
                "fault": fault.id,
                "fault_kind": fault.kind,
                "name": record.get("name"),
                "pid": record.get("pid"),
                "supervisor": record.get("supervisor"),
                "restart_latency_s": latency,
            }
            if not isinstance(latency, int | float):
                if fault.detail.get("escalated") is not True:
                    slow.add({**example, "problem": "not restarted"})
            elif latency > bound + BACKOFF_S.get(str(record.get("kind")), 0.0):
                slow.add({**example, "problem": "slow restart"})
    if kills == 0:
        report.skip("restart_bound", "no kill records")
    report.judge(
        "restart_bound",
        slow,
        f"{{count}} killed actor(s) not restarted within {bound} s (plus any backoff)",
    )
    ends = [r.value.get("restarts") for r in model.node_stats if r.value.get("phase") == "end"]
    return {
        "kills": kills,
        "per_supervisor": dict(per_supervisor),
        "per_supervisor_node": ends[-1] if ends and isinstance(ends[-1], dict) else None,
        "latency_s": percentiles(latencies),
        "bound_s": bound,
    }


def _child_key(child: Any, before: Mapping[str, Any]) -> str:
    if isinstance(child, str):
        return child
    text = json.dumps(child)
    return text if text in before else str(child)


def expected_restarts(strategy: str, killed: str, order: list[str]) -> set[str] | None:
    """The children whose pid must change when ``killed`` dies, by ``strategy``, given the
    children in start ``order``; None for a strategy this checker does not know."""
    if strategy in ("one_for_one", "simple_one_for_one", "dynamic"):
        return {killed}
    if strategy == "rest_for_one":
        return set(order[order.index(killed) :]) if killed in order else {killed}
    if strategy == "one_for_all":
        return set(order)
    return None


def _siblings(fault: Fault) -> Mapping[str, Any] | None:
    """The children record to judge: ``siblings`` (the killed child's supervisor), or, when the
    fault escalated, ``root_siblings`` (the parent's, whose strategy then decides)."""
    key = "root_siblings" if fault.detail.get("escalated") is True else "siblings"
    siblings = fault.detail.get(key)
    if not isinstance(siblings, dict):
        return None
    before, after = siblings.get("before"), siblings.get("after")
    return siblings if isinstance(before, dict) and isinstance(after, dict) else None


def check_scope(model: Model, report: Report) -> None:
    """From each fault's supervisor children before and after it (see :func:`_siblings`):
    exactly the children the strategy implies changed pid."""
    bad = Tally()
    checked = 0
    for fault in model.faults:
        siblings = _siblings(fault)
        if siblings is None:
            continue
        before, after = siblings["before"], siblings["after"]
        killed = _child_key(siblings.get("killed"), before)
        strategy = str(siblings.get("strategy"))
        expected = expected_restarts(strategy, killed, list(before))
        if expected is None:
            report.warnings.append(f"fault {fault.id}: unknown strategy {strategy!r}")
            continue
        checked += 1
        changed = {child for child, pid in before.items() if after.get(child) != pid}
        unexpected, unrestarted = changed - expected, (expected - changed) & set(after)
        if unexpected or unrestarted:
            bad.add(
                {
                    "fault": fault.id,
                    "fault_kind": fault.kind,
                    "supervisor": siblings.get("supervisor"),
                    "strategy": strategy,
                    "killed": killed,
                    "restarted_unexpectedly": sorted(unexpected),
                    "not_restarted": sorted(unrestarted),
                }
            )
    if checked == 0:
        report.skip("restart_scope", "no fault recorded its supervisor's children")
    report.judge(
        "restart_scope", bad, "{count} fault(s) restarted other than the strategy's subtree"
    )


def check_escalations(model: Model, report: Report) -> dict[str, Any]:
    """storm.above must escalate; storm.below and havoc must not. Returns the ``escalations``
    section: per fault kind, faults, escalations expected and seen."""
    wrong = Tally()
    checked = 0
    by_kind: dict[str, dict[str, int]] = {}
    for fault in model.faults:
        expected = ESCALATION_EXPECTED.get(fault.kind)
        if expected is None:
            continue
        counts = by_kind.setdefault(fault.kind, {"faults": 0, "expected": 0, "seen": 0})
        counts["faults"] += 1
        counts["expected"] += expected
        escalated = fault.detail.get("escalated")
        if not isinstance(escalated, bool):
            report.warnings.append(f"fault {fault.id} ({fault.kind}): no 'escalated' result")
            continue
        checked += 1
        counts["seen"] += escalated
        if escalated != expected:
            wrong.add(
                {
                    "fault": fault.id,
                    "fault_kind": fault.kind,
                    "supervisor": fault.detail.get("supervisor"),
                    "intensity": fault.detail.get("intensity"),
                    "kills": fault.detail.get("kills"),
                    "expected": expected,
                    "escalated": escalated,
                }
            )
    if checked == 0:
        report.skip("escalation", "no storm or havoc fault with a result")
    report.judge("escalation", wrong, "{count} storm(s) escalated other than expected")
    return {
        "expected": sum(c["expected"] for c in by_kind.values()),
        "seen": sum(c["seen"] for c in by_kind.values()),
        "by_kind": by_kind,
        "examples": wrong.examples,
    }


def check_node_stats(model: Model, report: Report) -> dict[str, Any]:
    """Every node_stats sample has max_mailbox <= mailbox_capacity; the ``end`` actor count is
    within the slack of the ``baseline`` one. Returns ``mailbox`` and ``actors`` sections."""
    over = Tally()
    longest = None
    capacity = None
    for record in model.node_stats:
        size, cap = record.value.get("max_mailbox"), record.value.get("mailbox_capacity")
        if isinstance(size, int):
            longest = size if longest is None else max(longest, size)
        if isinstance(cap, int):
            capacity = cap
        if isinstance(size, int) and isinstance(cap, int) and cap > 0 and size > cap:
            phase = record.value.get("phase")
            over.add({"phase": phase, "time": record.time, "max_mailbox": size, "capacity": cap})
    if longest is None:
        report.skip("mailbox_bounded", "no node_stats with max_mailbox")
    report.judge("mailbox_bounded", over, "{count} sample(s) with a mailbox over its capacity")

    bases = [r.value for r in model.node_stats if r.value.get("phase") == "baseline"]
    ends = [r.value for r in model.node_stats if r.value.get("phase") == "end"]
    base, end = (bases[0] if bases else None), (ends[-1] if ends else None)
    actors: dict[str, Any] = {"baseline": None, "end": None, "tolerance": None}
    drift = Tally()
    if base is None or end is None:
        report.skip("actors_baseline", "no baseline and end node_stats")
    else:
        b, e = int(base.get("actors", 0)), int(end.get("actors", 0))
        tolerance = max(ACTORS_SLACK, math.ceil(ACTORS_SLACK_FRACTION * b))
        actors = {"baseline": b, "end": e, "tolerance": tolerance}
        if abs(e - b) > tolerance:
            kinds_b, kinds_e = base.get("by_kind") or {}, end.get("by_kind") or {}
            diff = {
                k: int(kinds_e.get(k, 0)) - int(kinds_b.get(k, 0))
                for k in sorted(set(kinds_b) | set(kinds_e))
                if kinds_e.get(k, 0) != kinds_b.get(k, 0)
            }
            drift.add({"baseline": b, "end": e, "tolerance": tolerance, "by_kind": diff})
    report.judge("actors_baseline", drift, "actor count at the end is not back to the baseline")
    return {"mailbox": {"max": longest, "capacity": capacity}, "actors": actors}
