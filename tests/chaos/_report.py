"""What a check found, and the ``results.json`` it becomes."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

#: Examples kept per count (the first ones found, in history order).
MAX_EXAMPLES: Final = 10
#: The results file written into the run directory.
RESULTS_FILE: Final = "results.json"

Verdict: TypeAlias = bool | Literal["unknown"]
#: Exit codes of the checker by verdict.
EXIT_CODES: Final[Mapping[Verdict, int]] = {True: 0, False: 1, "unknown": 2}


@dataclass(slots=True)
class Tally:
    """A count and its first :data:`MAX_EXAMPLES` examples (JSON-able dicts)."""

    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, example: dict[str, Any]) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def extend(self, other: Tally) -> None:
        self.count += other.count
        room = MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "examples": self.examples}


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed invariant: its name, a one-line message, how many violations, some examples."""

    invariant: str
    message: str
    count: int
    examples: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "message": self.message,
            "count": self.count,
            "examples": self.examples,
        }


@dataclass(slots=True)
class Report:
    """Collects the checks' outcomes; :meth:`to_json` gives the ``results.json`` object.

    ``invariants`` maps each invariant to ``pass``, ``fail`` or ``unchecked`` (with a reason in
    ``unchecked``); ``unknown`` holds why the history is too thin to judge; ``sections`` the
    measured figures, by results key.
    """

    invariants: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    unchecked: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)

    def judge(self, invariant: str, violations: Tally, message: str) -> None:
        """Record ``invariant`` as passed, or failed when ``violations`` is non-empty;
        ``message`` may use ``{count}``."""
        if violations.count == 0:
            self.invariants.setdefault(invariant, "pass")
            return
        self.invariants[invariant] = "fail"
        text = message.format(count=violations.count)
        self.failures.append(Failure(invariant, text, violations.count, violations.examples))

    def skip(self, invariant: str, reason: str) -> None:
        """Record that ``invariant`` could not be checked on this history."""
        if self.invariants.get(invariant) != "fail":
            self.invariants[invariant] = "unchecked"
            self.unchecked[invariant] = reason

    def failed(self, invariant: str) -> Failure | None:
        """The failure recorded for ``invariant``, if any."""
        return next((f for f in self.failures if f.invariant == invariant), None)

    @property
    def valid(self) -> Verdict:
        """False when any invariant failed, else "unknown" when the history is too thin to
        judge, else True."""
        if self.failures:
            return False
        if self.unknown:
            return "unknown"
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            **self.sections,
            "invariants": self.invariants,
            "failures": [f.to_json() for f in self.failures],
            "unchecked": self.unchecked,
            "unknown_reasons": self.unknown,
            "warnings": self.warnings,
        }


def percentiles(values: Iterable[float]) -> dict[str, Any]:
    """``{"count", "p50", "p99", "max"}`` by the nearest-rank method (None when empty); s."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": None, "p99": None, "max": None}

    def rank(p: float) -> float:
        return round(ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)], 6)

    return {"count": len(ordered), "p50": rank(50), "p99": rank(99), "max": rank(100)}


def write_results(run_dir: str | os.PathLike[str], results: Mapping[str, Any]) -> Path:
    """Write ``results`` to ``RUN_DIR/results.json`` (atomically: a temp file then a rename)."""
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def summary(results: Mapping[str, Any]) -> str:
    """A few human lines about ``results`` (the CLI prints them)."""
    verdict = {True: "VALID", False: "INVALID", "unknown": "UNKNOWN"}[results["valid"]]
    lines = [f"chaos run seed={results.get('seed')} backend={results.get('backend')}: {verdict}"]
    ops = results.get("operations", {})
    lines.append(
        "  operations: "
        + ", ".join(
            f"{f} " + "/".join(f"{o}={n}" for o, n in sorted(outcomes.items()))
            for f, outcomes in sorted(ops.items())
        )
    )
    faults = results.get("faults", {})
    if faults:
        lines.append(
            f"  faults: {sum(faults.values())} ("
            + ", ".join(f"{k}={n}" for k, n in sorted(faults.items()))
            + ")"
        )
    counts = ", ".join(
        f"{name} {results[name]['count']}"
        for name in ("lost", "unexpected", "duplicated", "recovered", "order_anomalies")
        if name in results
    )
    lines.append(f"  {counts}, raw redeliveries {results.get('redeliveries', 0)}")
    lat = results.get("delivery_latency_s", {})
    rlat = results.get("restarts", {}).get("latency_s", {})
    lines.append(
        f"  delivery latency p50/p99/max {lat.get('p50')}/{lat.get('p99')}/{lat.get('max')} s;"
        f" restart latency p50/p99/max {rlat.get('p50')}/{rlat.get('p99')}/{rlat.get('max')} s"
    )
    for failure in results.get("failures", []):
        lines.append(f"  FAILED {failure['invariant']}: {failure['message']}")
    for name, reason in results.get("unchecked", {}).items():
        lines.append(f"  unchecked {name}: {reason}")
    for reason in results.get("unknown_reasons", []):
        lines.append(f"  unknown: {reason}")
    return "\n".join(lines)
