"""The facts a history states, indexed for the checks: sends by message key, every place a stored
message was seen, membership, faults and node statistics."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from ._history import History, HistoryError, Op, Record

#: (conv, sender, cmid): what identifies one message the clients meant to send.
Key: TypeAlias = tuple[str, str, str]
#: (user, device).
Device: TypeAlias = tuple[str, str]

#: Operations that change a group's membership; their ok value holds the members afterwards.
MEMBERSHIP_OPS: Final = frozenset(
    {"create_group", "create_direct", "add_members", "remove_members", "leave"}
)


class _NoBody:
    def __repr__(self) -> str:
        return "NO_BODY"


#: The body of an observation that did not carry one (deliveries and dumps usually do not).
NO_BODY: Final[Any] = _NoBody()


@dataclass(frozen=True, slots=True)
class Seen:
    """One observation of a message: an ack, a stored row, a history read's row or a delivery.

    ``source`` is ``ack``, ``storage``, ``history`` or ``deliver``; ``where`` names the observer
    for examples (``op 12``, ``u1/d0``, ``storage``); ``time`` is the record's run time (s).
    """

    source: str
    where: str
    conv: str
    seq: int
    id: str
    sender: str
    cmid: str
    time: float
    body: Any = NO_BODY

    @property
    def key(self) -> Key:
        return (self.conv, self.sender, self.cmid)

    def example(self) -> dict[str, Any]:
        """A JSON-able description for a report's examples."""
        return {
            "source": self.source,
            "where": self.where,
            "conv": self.conv,
            "seq": self.seq,
            "id": self.id,
            "sender": self.sender,
            "cmid": self.cmid,
            "time": self.time,
        }


@dataclass(frozen=True, slots=True)
class Read:
    """A whole-conversation ``history`` read that completed ok; ``final`` when invoked after the
    ``final`` event."""

    op: Op
    user: str
    conv: str
    rows: tuple[Seen, ...]
    final: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    """A ``deliver`` event: ``seen`` is the message, ``device`` who got it, ``index`` its record."""

    device: Device
    seen: Seen
    index: int


@dataclass(frozen=True, slots=True)
class Fault:
    """A nemesis fault: its ``start`` and ``end`` events (either may be missing)."""

    id: int
    kind: str
    start: Record | None
    end: Record | None

    @property
    def detail(self) -> Mapping[str, Any]:
        """The ``end`` event's detail (the admin op's result), empty when there is none."""
        if self.end is None:
            return {}
        detail = self.end.value.get("detail")
        return detail if isinstance(detail, dict) else {}


@dataclass(slots=True)
class Model:
    """Everything the checks read, built once from a :class:`History` by :func:`build_model`.

    ``storage`` and ``members`` are None when the history has no ``storage_dump`` / ``members``
    record at all (then the checks that need them are skipped, not failed). ``joined`` is when
    a user last became a member of a conversation (the completion time of that membership op);
    absent for conversations whose membership was never changed by an op. ``first_delivery``
    is each (device, message id)'s first ``deliver`` event.
    """

    history: History
    run: Mapping[str, Any]
    sends: dict[Key, list[Op]] = field(default_factory=lambda: defaultdict(list))
    send_device: dict[int, Device] = field(default_factory=dict)
    acks: list[Seen] = field(default_factory=list)
    storage: dict[str, list[Seen]] | None = None
    reads: list[Read] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    first_delivery: dict[tuple[Device, str], Delivery] = field(default_factory=dict)
    members: dict[str, frozenset[str]] | None = None
    joined: dict[tuple[str, str], float] = field(default_factory=dict)
    online: list[Device] = field(default_factory=list)
    quiet: float | None = None
    final_index: int | None = None
    faults: list[Fault] = field(default_factory=list)
    node_stats: list[Record] = field(default_factory=list)
    redeliveries: int = 0

    def observations(self) -> list[Seen]:
        """Every place a message was seen: acks, stored rows, history reads, deliveries."""
        seen = list(self.acks)
        for rows in (self.storage or {}).values():
            seen.extend(rows)
        for read in self.reads:
            seen.extend(read.rows)
        seen.extend(d.seen for d in self.deliveries)
        return seen

    def ack_time(self, key: Key) -> float | None:
        """When ``key`` was first acknowledged (None if it never was)."""
        times = [op.end_time for op in self.sends.get(key, ()) if op.outcome == "ok"]
        return min(times) if times else None


def _get(record: Record, key: str, kind: type) -> Any:
    value = record.value.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HistoryError(
            f"record {record.index} ({record.type} {record.f}): value.{key} must be"
            f" a {kind.__name__}, got {value!r}"
        )
    return value


def _rows(record: Record, conv: str, source: str, where: str) -> tuple[Seen, ...]:
    """The ``[[seq, id, sender, cmid(, body)], ...]`` message list of ``record``."""
    rows = []
    for row in _get(record, "messages", list):
        if (
            not isinstance(row, list)
            or len(row) not in (4, 5)
            or not isinstance(row[0], int)
            or not all(isinstance(x, str) for x in row[1:4])
        ):
            raise HistoryError(f"record {record.index}: bad message row {row!r}")
        body = row[4] if len(row) == 5 else NO_BODY
        rows.append(Seen(source, where, conv, row[0], row[1], row[2], row[3], record.time, body))
    return tuple(rows)


def body_key(body: Any) -> str:
    """A hashable form of a message body (a string, or ``{"base64": ...}`` for bytes)."""
    return json.dumps(body, sort_keys=True)


def build_model(history: History) -> Model:
    """Index ``history``. Raises :class:`HistoryError` when a record lacks what its kind needs."""
    runs = history.events("run")
    model = Model(history, runs[0].value if runs else {})
    finals = history.events("final")
    model.final_index = finals[0].index if finals else None
    quiet = history.events("quiet")
    model.quiet = quiet[0].time if quiet else None

    for op in history.ops_of("send"):
        inv = op.invoke
        conv, user, cmid = _get(inv, "conv", str), _get(inv, "user", str), _get(inv, "cmid", str)
        key = (conv, user, cmid)
        model.sends[key].append(op)
        model.send_device[op.op] = (user, str(inv.value.get("device", "")))
        if op.outcome == "ok" and op.completion is not None:
            done = op.completion
            model.acks.append(
                Seen(
                    "ack",
                    f"op {op.op}",
                    conv,
                    _get(done, "seq", int),
                    _get(done, "id", str),
                    user,
                    cmid,
                    done.time,
                    inv.value.get("body", NO_BODY),
                )
            )

    for op in history.ops_of("history"):
        if op.outcome != "ok" or op.completion is None:
            continue
        done = op.completion
        conv = _get(done, "conv", str)
        final = model.final_index is not None and op.invoke.index > model.final_index
        where = f"history op {op.op}"
        rows = _rows(done, conv, "history", where)
        model.reads.append(Read(op, _get(done, "user", str), conv, rows, final))

    dumps = history.events("storage_dump")
    if dumps:
        model.storage = defaultdict(list)
        for record in dumps:
            conv = _get(record, "conv", str)
            model.storage[conv].extend(_rows(record, conv, "storage", "storage"))

    for record in history.events("deliver"):
        v = record.value
        device = (_get(record, "user", str), _get(record, "device", str))
        seen = Seen(
            "deliver",
            f"{device[0]}/{device[1]}",
            _get(record, "conv", str),
            _get(record, "seq", int),
            _get(record, "id", str),
            _get(record, "sender", str),
            _get(record, "cmid", str),
            record.time,
            v.get("body", NO_BODY),
        )
        model.deliveries.append(Delivery(device, seen, record.index))
        model.first_delivery.setdefault((device, seen.id), model.deliveries[-1])

    member_events = history.events("members")
    if member_events:
        model.members = {
            _get(r, "conv", str): frozenset(_get(r, "members", list)) for r in member_events
        }
    _membership(model, history)

    online = {(_get(r, "user", str), _get(r, "device", str)) for r in history.events("online")}
    model.online = sorted(online)
    model.redeliveries = sum(int(r.value.get("count", 0)) for r in history.events("redeliveries"))

    by_id: dict[int, list[Record]] = defaultdict(list)
    for record in history.events("fault"):
        by_id[_get(record, "id", int)].append(record)
    for fault_id, records in by_id.items():
        start = next((r for r in records if r.value.get("phase") == "start"), None)
        end = next((r for r in records if r.value.get("phase") == "end"), None)
        kind = str(records[0].value.get("kind", "?"))
        model.faults.append(Fault(fault_id, kind, start, end))
    model.node_stats = list(history.events("node_stats"))
    return model


def _membership(model: Model, history: History) -> None:
    """Fill ``model.joined``: when each user last became a member of each conversation, from
    the members lists of the ok membership ops. A member at the end with no known join, in a
    conversation where a membership op had an unknown outcome, joined by that op at the latest."""
    changes = sorted(
        (op for op in history.ops.values() if op.f in MEMBERSHIP_OPS), key=lambda op: op.end_time
    )
    current: dict[str, frozenset[str]] = {}
    unsure: dict[str, float] = {}
    for op in changes:
        if op.outcome != "ok" or op.completion is None:
            conv = op.invoke.value.get("conv")
            if isinstance(conv, str) and conv:
                unsure[conv] = op.end_time
            continue
        conv = _get(op.completion, "conv", str)
        after = frozenset(_get(op.completion, "members", list))
        for user in after - current.get(conv, frozenset()):
            model.joined[(conv, user)] = op.end_time
        current[conv] = after
    for conv, members in (model.members or {}).items():
        for user in members:
            if conv in unsure and (conv, user) not in model.joined:
                model.joined[(conv, user)] = unsure[conv]


def bound(run: Mapping[str, Any], key: str, override: float | None, default: float) -> float:
    """A bound in seconds: ``override`` if given, else the run's ``key``, else ``default``."""
    if override is not None:
        return override
    value = run.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default
