"""The ``history.jsonl`` format of a chaos run: one writer (the harness), one reader (the checker).

One JSON object per line, in the order recorded::

    {"index": 0, "time": 0.0123, "process": "c3", "type": "invoke", "f": "send",
     "value": {"op": 17, "user": "u1", "device": "d0", "conv": "...", "cmid": "...", "body": "..."}}

``index`` counts lines from 0; ``time`` is seconds since the run started, from a monotonic clock;
``type`` is ``invoke``, then exactly one of ``ok``/``fail``/``info`` (outcome unknown) for the same
``f``, ``process`` and ``value["op"]``; or ``event`` (no completion). The operations and events and
their values are listed in the run's coordination note (issue 7) and in tests/chaos/checker.py.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias

RecordType: TypeAlias = Literal["invoke", "ok", "fail", "info", "event"]
Completion: TypeAlias = Literal["ok", "fail", "info"]

#: Every record type, in the order an operation goes through them.
RECORD_TYPES: Final[tuple[RecordType, ...]] = ("invoke", "ok", "fail", "info", "event")
#: The types that complete an invoked operation.
COMPLETIONS: Final[tuple[Completion, ...]] = ("ok", "fail", "info")
#: The file name of the history inside a run directory.
HISTORY_FILE: Final = "history.jsonl"


class HistoryError(Exception):
    """The history cannot be read: a line is not a record, or records contradict each other
    (a completion without its invoke, an ``index`` out of sequence). The run cannot be judged."""


@dataclass(frozen=True, slots=True)
class Record:
    """One line of the history. ``value`` is the parsed JSON object (do not mutate it)."""

    index: int
    time: float
    process: str
    type: RecordType
    f: str
    value: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Op:
    """An invoked operation and its completion (None when the run ended before it completed)."""

    op: int
    invoke: Record
    completion: Record | None

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def process(self) -> str:
        return self.invoke.process

    @property
    def outcome(self) -> Completion:
        """``ok``, ``fail`` or ``info``; an operation never completed counts as ``info``."""
        if self.completion is None:
            return "info"
        return self.completion.type  # type: ignore[return-value]  # checked when loaded

    @property
    def end_time(self) -> float:
        """When the outcome became known (the invoke time for a never-completed op)."""
        return self.invoke.time if self.completion is None else self.completion.time


@dataclass(frozen=True, slots=True)
class History:
    """A loaded, validated history.

    ``records`` in file order; ``ops`` by op id, in invoke order; ``warnings`` describe tolerated
    defects (a truncated last line, time going backwards, operations never completed).
    """

    records: tuple[Record, ...]
    ops: Mapping[int, Op]
    warnings: tuple[str, ...] = ()
    _events: Mapping[str, tuple[Record, ...]] = field(default_factory=dict, repr=False)

    def events(self, f: str) -> tuple[Record, ...]:
        """The ``event`` records named ``f``, in file order."""
        return self._events.get(f, ())

    def ops_of(self, f: str) -> Iterator[Op]:
        """The operations named ``f``, in invoke order."""
        return (op for op in self.ops.values() if op.f == f)


def _encode(value: object) -> object:
    # msgpack bodies may be bytes: JSON has no bytes, so they are written as {"base64": ...}.
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"history values must be JSON data, not {type(value).__name__}")


class HistoryWriter:
    """Appends records to ``history.jsonl``; safe to call from any thread or trio task.

    Every call is a synchronous, line-buffered append under a lock (a few microseconds: it does
    not checkpoint and is fine to call from trio code). ``time`` is ``clock() - start`` where
    ``start`` is ``clock()`` when the writer was created; ``clock`` defaults to
    :func:`time.monotonic` and must be monotonic (tests pass a fake one).

    Misuse raises ``ValueError``: completing an op that was not invoked, or by another process
    or with another ``f``, or twice; an unknown completion type. Non-JSON values raise
    ``TypeError`` (bytes are written as ``{"base64": "..."}``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        first_op: int = 1,
    ) -> None:
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._index = 0
        self._next_op = first_op
        self._pending: dict[int, tuple[str, str]] = {}
        self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    @property
    def time(self) -> float:
        """Seconds since the writer was created, on its clock (what the next record would say)."""
        return self._clock() - self._start

    @property
    def pending(self) -> int:
        """How many invoked operations have not completed yet."""
        with self._lock:
            return len(self._pending)

    def invoke(self, process: str, f: str, value: Mapping[str, Any]) -> int:
        """Record the start of operation ``f`` by ``process``; return its new op id.

        ``value`` must not contain ``op``: the writer adds it.
        """
        if "op" in value:
            raise ValueError("the writer assigns the op id; do not pass 'op' in the value")
        with self._lock:
            op = self._next_op
            self._next_op += 1
            self._write_locked(process, "invoke", f, {"op": op, **value})
            self._pending[op] = (process, f)
            return op

    def complete(
        self,
        process: str,
        type: Completion,  # the record's key (shadows the builtin on purpose)
        f: str,
        op: int,
        value: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the outcome of op ``op``: ``type`` is ``ok``, ``fail`` (definitely not done)
        or ``info`` (unknown). ``process`` and ``f`` must be those of its invoke."""
        if type not in COMPLETIONS:
            raise ValueError(f"a completion is one of {COMPLETIONS}, not {type!r}")
        with self._lock:
            started = self._pending.get(op)
            if started is None:
                raise ValueError(f"op {op} is not pending (never invoked, or already completed)")
            if started != (process, f):
                raise ValueError(f"op {op} was invoked as {started}, completed as {(process, f)}")
            self._write_locked(process, type, f, {"op": op, **(value or {})})
            del self._pending[op]

    def event(self, process: str, f: str, value: Mapping[str, Any] | None = None) -> None:
        """Record an event (no completion follows)."""
        with self._lock:
            self._write_locked(process, "event", f, dict(value or {}))

    def _write_locked(
        self, process: str, type: RecordType, f: str, value: Mapping[str, Any]
    ) -> None:
        record = {
            "index": self._index,
            "time": round(self._clock() - self._start, 6),
            "process": process,
            "type": type,
            "f": f,
            "value": value,
        }
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_encode)
        self._file.write(line + "\n")
        self._index += 1

    def close(self) -> None:
        """Flush and close the file (idempotent). Pending operations stay unknown (``info``)."""
        with self._lock:
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _parse(line: str, lineno: int) -> Record:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise HistoryError(f"line {lineno}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise HistoryError(f"line {lineno}: not a JSON object")
    try:
        index, t, process, type_, f, value = (
            raw[k] for k in ("index", "time", "process", "type", "f", "value")
        )
    except KeyError as exc:
        raise HistoryError(f"line {lineno}: missing key {exc}") from exc
    if not isinstance(index, int) or isinstance(index, bool):
        raise HistoryError(f"line {lineno}: index must be an int")
    if not isinstance(t, int | float) or isinstance(t, bool):
        raise HistoryError(f"line {lineno}: time must be a number")
    if not isinstance(process, str) or not isinstance(f, str):
        raise HistoryError(f"line {lineno}: process and f must be strings")
    if type_ not in RECORD_TYPES:
        raise HistoryError(f"line {lineno}: type {type_!r} is not one of {RECORD_TYPES}")
    if not isinstance(value, dict):
        raise HistoryError(f"line {lineno}: value must be an object")
    if type_ != "event":
        op = value.get("op")
        if not isinstance(op, int) or isinstance(op, bool):
            raise HistoryError(f"line {lineno}: an {type_} record needs an int value.op")
    return Record(index, float(t), process, type_, f, value)


def parse_history(lines: Iterator[str] | list[str]) -> History:
    """Validate and index the records in ``lines`` (the text of ``history.jsonl``).

    Raises :class:`HistoryError` for a line that is not a record (except a truncated last line,
    which is dropped with a warning), an ``index`` that is not the record's position, a repeated
    op id, or a completion whose invoke is missing or differs in ``process`` or ``f``.
    """
    texts = [line for line in lines if line.strip()]
    warnings: list[str] = []
    records: list[Record] = []
    for lineno, text in enumerate(texts, start=1):
        try:
            record = _parse(text, lineno)
        except HistoryError:
            if lineno == len(texts) and not text.endswith("\n"):
                warnings.append(f"line {lineno}: truncated last line dropped")
                break
            raise
        if record.index != len(records):
            raise HistoryError(f"line {lineno}: index {record.index}, expected {len(records)}")
        if records and record.time < records[-1].time:
            warnings.append(f"line {lineno}: time goes backwards ({record.time})")
        records.append(record)

    invokes: dict[int, Record] = {}
    completions: dict[int, Record] = {}
    events: dict[str, list[Record]] = {}
    for record in records:
        if record.type == "event":
            events.setdefault(record.f, []).append(record)
            continue
        op = record.value["op"]
        if record.type == "invoke":
            if op in invokes:
                raise HistoryError(f"record {record.index}: op {op} invoked twice")
            invokes[op] = record
            continue
        started = invokes.get(op)
        if started is None:
            raise HistoryError(f"record {record.index}: op {op} completed but never invoked")
        if (started.process, started.f) != (record.process, record.f):
            raise HistoryError(
                f"record {record.index}: op {op} invoked by {started.process} as {started.f},"
                f" completed by {record.process} as {record.f}"
            )
        if op in completions:
            raise HistoryError(f"record {record.index}: op {op} completed twice")
        completions[op] = record
    ops = {op: Op(op, invoke, completions.get(op)) for op, invoke in invokes.items()}
    never = [op for op in ops if op not in completions]
    if never:
        warnings.append(
            f"{len(never)} operation(s) never completed, counted as info: ops {never[:10]}"
        )
    return History(
        tuple(records),
        ops,
        tuple(warnings),
        {f: tuple(rs) for f, rs in events.items()},
    )


def load_history(path: str | os.PathLike[str]) -> History:
    """Read and validate a ``history.jsonl`` file (or a run directory holding one).

    Raises :class:`HistoryError` as :func:`parse_history` does, and when the file is missing.
    """
    p = Path(path)
    if p.is_dir():
        p = p / HISTORY_FILE
    try:
        with p.open(encoding="utf-8") as fh:
            return parse_history(list(fh))
    except OSError as exc:
        raise HistoryError(f"cannot read {p}: {exc}") from exc
