"""Judge a chaos run's history (issue 7 §3) and write its report (§4).

    python -m tests.chaos.checker RUN_DIR [--delivery-bound S] [--restart-bound S]

reads ``RUN_DIR/history.jsonl`` (format: tests/chaos/_history.py), writes
``RUN_DIR/results.json``, prints a summary and exits 0 when the run is valid, 1 when an invariant
failed, 2 when the history is too thin to judge (no acknowledged send, no storage dump or no
final history read) or cannot be read. Bounds default to the run record's ``delivery_bound_s``
and ``restart_bound_s``, else :data:`DEFAULT_DELIVERY_BOUND` and :data:`DEFAULT_RESTART_BOUND`.

Invariants (``results.json`` ``invariants``: each ``pass``, ``fail`` or ``unchecked``):

``acks_agree``             all acks of one (conv, sender, cmid) give one id and seq
``acked_stored``           every acked message is in the storage dump
``acked_in_final_reads``   ... and in every final history read of its conversation
``no_unexpected``          every message seen matches a send (sender, conv, cmid, body if known)
``stored_at_most_once``    an acked cmid is stored once, under one id
``unknown_at_most_once``   a cmid whose sends all had unknown outcome is stored zero or one times
``failed_not_stored``      a cmid whose sends all failed is not stored
``delivered_at_most_once`` the client library handed each id to each device once
``seqs_gapless``           stored seqs are 1..last per conversation; so is each whole read
``seq_stable``             one id per (conv, seq) and one (conv, seq) per id, in every
                           observation, across node kills and restarts too
``delivery_order``         each device's deliveries of a conversation come in seq order
``online_delivery``        every device online through the quiet phase got every message stored
                           in its user's conversations (since the user joined)
``delivery_bound``         ... within the delivery bound of max(quiet, ack)
``restart_bound``          every killed actor its supervisor restarts is back within the bound
``restart_scope``          only the children the supervisor's strategy implies restarted
``escalation``             storm.above escalated; storm.below and havoc did not
``mailbox_bounded``        no mailbox grew over its capacity
``actors_baseline``        the actor count at the end is within the tolerance of the baseline
                           (max(5 actors, 5 % of the baseline): see tests/chaos/_faults.py)
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ._faults import check_escalations, check_node_stats, check_restarts, check_scope
from ._history import History, HistoryError, load_history
from ._messages import (
    check_acks_agree,
    check_at_most_once,
    check_delivery,
    check_lost,
    check_order,
    check_seqs,
    check_unexpected,
)
from ._model import bound, build_model
from ._report import EXIT_CODES, Report, summary, write_results

#: Seconds after max(quiet, ack) by which every online device must have a message.
DEFAULT_DELIVERY_BOUND: Final = 10.0
#: Seconds by which a killed actor must be running again.
DEFAULT_RESTART_BOUND: Final = 5.0


def check(
    history: History,
    *,
    delivery_bound: float | None = None,
    restart_bound: float | None = None,
) -> dict[str, Any]:
    """Judge ``history``; return the ``results.json`` object (``valid`` True, False or
    ``"unknown"``). Bounds in seconds; None takes the run record's, else the defaults.

    Raises :class:`~tests.chaos._history.HistoryError` when a record lacks a key its kind needs.
    """
    model = build_model(history)
    report = Report(warnings=list(history.warnings))
    delivery_s = bound(model.run, "delivery_bound_s", delivery_bound, DEFAULT_DELIVERY_BOUND)
    restart_s = bound(model.run, "restart_bound_s", restart_bound, DEFAULT_RESTART_BOUND)

    if not model.acks:
        report.unknown.append("no send was acknowledged")
    if model.storage is None:
        report.unknown.append("no storage_dump records")
    if not any(read.final for read in model.reads):
        report.unknown.append("no final history read")

    check_acks_agree(model, report)
    lost = check_lost(model, report)
    unexpected = check_unexpected(model, report)
    duplicated, recovered = check_at_most_once(model, report)
    check_seqs(model, report)
    order = check_order(model, report)
    delivery = check_delivery(model, report, bound=delivery_s)
    restarts = check_restarts(model, report, bound=restart_s)
    check_scope(model, report)
    escalations = check_escalations(model, report)
    node = check_node_stats(model, report)

    operations: dict[str, Counter[str]] = {}
    for op in history.ops.values():
        operations.setdefault(op.f, Counter())[op.outcome] += 1
    report.sections = {
        "seed": model.run.get("seed"),
        "backend": model.run.get("backend"),
        "bounds": {"delivery_s": delivery_s, "restart_s": restart_s},
        "faults": dict(Counter(fault.kind for fault in model.faults)),
        "operations": {f: dict(c) for f, c in sorted(operations.items())},
        "lost": lost.to_json(),
        "unexpected": unexpected.to_json(),
        "duplicated": duplicated.to_json(),
        "recovered": recovered.to_json(),
        "redeliveries": model.redeliveries,
        "order_anomalies": order.to_json(),
        **delivery,
        "restarts": restarts,
        "escalations": escalations,
        "max_mailbox": node["mailbox"]["max"],
        "mailbox_capacity": node["mailbox"]["capacity"],
        "actors": node["actors"],
    }
    return report.to_json()


def unreadable(reason: str) -> dict[str, Any]:
    """The results of a history that cannot be read: ``valid`` is ``"unknown"``."""
    report = Report(unknown=[reason])
    report.sections = {"seed": None, "backend": None}
    return report.to_json()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: check RUN_DIR, write its results.json, print a summary; return the
    exit code (0 valid, 1 invalid, 2 unknown)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.checker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", type=Path, help="directory holding history.jsonl")
    parser.add_argument(
        "--delivery-bound", type=float, metavar="S", help="seconds (default: the run's)"
    )
    parser.add_argument(
        "--restart-bound", type=float, metavar="S", help="seconds (default: the run's)"
    )
    args = parser.parse_args(argv)
    try:
        history = load_history(args.run_dir)
        results = check(
            history, delivery_bound=args.delivery_bound, restart_bound=args.restart_bound
        )
    except HistoryError as exc:
        results = unreadable(f"the history cannot be judged: {exc}")
    if args.run_dir.is_dir():
        write_results(args.run_dir, results)
    print(summary(results))
    return EXIT_CODES[results["valid"]]


if __name__ == "__main__":
    sys.exit(main())
