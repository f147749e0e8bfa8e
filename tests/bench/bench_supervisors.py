"""Parley's supervisors against their targets and Erlang/OTP (issue 3, "Performance").

    python tests/bench/bench_supervisors.py --json     # full run, both backends
    python tests/bench/bench_supervisors.py --quick    # smoke run, small counts

Per backend (trio, asyncio):

- ``restart_latency_us_p50`` / ``_p99``: a one_for_one :class:`Supervisor` (intensity 1,000,000
  per 1 s, as the Erlang script) with one :class:`Worker`; the worker is killed with
  ``node.exit(ref, KILL)`` and the sample runs from ``time.perf_counter()`` just before the kill to
  the replacement's synchronous ``init`` reading ``time.perf_counter()`` (it sends the reading and
  its ref to an inbox, which the benchmark awaits before the next kill). ``RESTART_SAMPLES``
  samples on one supervisor. A kill logs nothing (Erlang's figures run with logging off).
- ``restart_latency_short_history_us_*``: the same samples from ``RESTART_SAMPLES / 10`` fresh
  supervisors, 10 kills each (Erlang's ``short_history``).
- ``restart_latency_crash_us_*``: the worker crashes instead (a cast whose handler raises): the
  runtime's ``actor_crashed`` error log, with its traceback, is formatted and written to
  ``/dev/null`` for each sample. Next to Erlang's ``restart_latency_logged_us_*``.
- ``dynamic_start_100k_sequential_s``: ``DYNAMIC_N`` children of a :class:`DynamicSupervisor`
  started by one task awaiting ``start_child(sup)`` after ``start_child(sup)``;
  ``dynamic_start_100k_concurrent_s``: the same with ``CONCURRENCY`` tasks each starting its share
  at once. ``dynamic_start_100k_s`` is the better of the two (``dynamic_start_mode`` says which);
  ``dynamic_start_100k_gc_s`` is the part of it spent in the cyclic garbage collector (left on,
  with its default thresholds; timed with ``gc.callbacks``). All figures are scaled to 100,000
  children.
- ``tree_100k_s``: ``supervisors.tree(node, sup)`` of that supervisor with its 100,000 children
  (summarised: counts by status, top 5 by mailbox length); ``tree_100k_gc_s``: its GC part.
- ``dynamic_stop_100k_s``: stopping it the way its parent would: the inbox that ``start_link``ed it
  sends ``inbox.exit(sup, SHUTDOWN)``, then ``await node.wait_exit(sup)``.
- ``dynamic_terminate_each_100k_s``: ``terminate_child(sup, ref)`` of each child of a second such
  supervisor, one after another.
- ``bytes_per_child``: the supervisor's own bookkeeping per child (not the children's actors), the
  larger of two readings: ``bytes_per_child_tracemalloc``, the growth of memory allocated in
  ``supervisors/`` source lines (tracemalloc, innermost frame) while ``MEMORY_N`` children start;
  and ``bytes_per_child_sizeof``, the sizes of what the supervisor keeps per child (its ``Child``
  record, the objects only that record holds, and its share of the ``pid -> Child`` dict), with
  ``sys.getsizeof``. The child's ``Ref``, ``Context`` and ``Actor`` belong to the child.

Erlang (``_erlang.run_erlang("supervisors_bench")``) runs in the same invocation when ``escript``
is installed; ``ratios`` are Parley over Erlang (above 1: Parley is slower / larger). Every timed
figure is the best of ``--repeat`` runs. The machine is shared and noisy: compare ratios from one
run, not absolute figures across runs.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Final, Literal

if __name__ == "__main__" and not __package__:  # run as a file: make `tests.bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio
import structlog

import supervisors
from actors import KILL, SHUTDOWN, Actor, Context, Node, Ref, open_node
from supervisors import ChildSpec, DynamicSupervisor, Supervisor, SupervisorFlags
from tests.bench._erlang import run_erlang
from tests.bench._report import (
    Backend,
    BenchOptions,
    Timer,
    emit_json,
    note,
    parse_options,
    percentile,
    print_table,
)

RESTART_SAMPLES: Final = 1000
DYNAMIC_N: Final = 100_000
MEMORY_N: Final = 100_000
CONCURRENCY: Final = 64  # tasks starting dynamic children at once
QUICK_RESTART_SAMPLES: Final = 100
QUICK_DYNAMIC_N: Final = 5_000
QUICK_MEMORY_N: Final = 5_000
SCALE_TO: Final = 100_000  # dynamic figures are reported per 100,000 children
#: Restart intensity high enough never to give up within a run (as the Erlang script).
FLAGS: Final = SupervisorFlags(intensity=1_000_000, period=1.0)
SUPERVISORS_DIR: Final = str(Path(supervisors.__file__).resolve().parent)

#: Issue 3's targets on trio: (key, bound); every one is an upper bound.
TARGETS: Final[tuple[tuple[str, float], ...]] = (
    ("restart_latency_us_p50", 200.0),
    ("restart_latency_us_p99", 2_000.0),
    ("dynamic_start_100k_s", 2.0),
    ("dynamic_stop_100k_s", 2.0),
    ("bytes_per_child", 500.0),
    ("tree_100k_s", 1.0),  # the inspector's need, not an issue target
)
#: Parley's figure and Erlang's that it is compared with.
ERLANG_PAIRS: Final[tuple[tuple[str, str], ...]] = (
    ("restart_latency_us_p50", "restart_latency_us_p50"),
    ("restart_latency_us_p99", "restart_latency_us_p99"),
    ("restart_latency_short_history_us_p50", "restart_latency_short_history_us_p50"),
    ("restart_latency_short_history_us_p99", "restart_latency_short_history_us_p99"),
    ("restart_latency_crash_us_p50", "restart_latency_logged_us_p50"),
    ("restart_latency_crash_us_p99", "restart_latency_logged_us_p99"),
    ("dynamic_start_100k_s", "dynamic_start_100k_s"),
    ("dynamic_stop_100k_s", "dynamic_stop_100k_s"),
    ("dynamic_terminate_each_100k_s", "dynamic_terminate_each_100k_s"),
    ("bytes_per_child", "bytes_per_child"),
)


# -- the children --


class Worker(Actor):
    """A child with a synchronous ``init`` (the supervisor's fast path). With an inbox ref it
    reports ``(its ref, time.perf_counter())`` from ``init``; a ``"crash"`` cast makes it raise."""

    def init(self, notify: Ref | None = None) -> None:
        if notify is not None:
            notify.send((self.ctx.ref, time.perf_counter()))

    def handle_cast(self, message: Any) -> None:
        if message == "crash":
            raise RuntimeError("crash requested by the benchmark")


def _logs_to_devnull() -> None:
    """Send structlog's output (the runtime's ``actor_crashed`` with its traceback) to
    /dev/null: formatted as usual, never on stdout."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=open(os.devnull, "w")),  # noqa: SIM115
        cache_logger_on_first_use=False,
    )


# -- restart latency --

Kind = Literal["kill", "crash"]


async def _restart_samples(node: Node, inbox: Context, kills: int, kind: Kind) -> list[float]:
    """Start a one_for_one supervisor with one worker, kill (or crash) the worker ``kills``
    times, and return the latencies in microseconds; the supervisor is stopped afterwards."""
    spec = ChildSpec(id="worker", start=Worker, args=(inbox.ref,))
    sup = await inbox.start_link(Supervisor, FLAGS, [spec])
    worker, _ = await inbox.receive()
    samples: list[float] = []
    for _ in range(kills):
        start = time.perf_counter()
        if kind == "kill":
            node.exit(worker, KILL)
        else:
            worker.cast("crash")
        worker, running = await inbox.receive()
        samples.append((running - start) * 1e6)
    inbox.unlink(sup)
    inbox.exit(sup, SHUTDOWN)
    await node.wait_exit(sup)
    return samples


def restart_latency(backend: Backend, supervisors_n: int, kills: int, kind: Kind) -> list[float]:
    """Latency samples (µs) from ``supervisors_n`` supervisors, ``kills`` kills each."""

    async def main() -> list[float]:
        async with open_node() as node:
            with node.inbox() as inbox:
                samples: list[float] = []
                for _ in range(supervisors_n):
                    samples += await _restart_samples(node, inbox, kills, kind)
                return samples

    return anyio.run(main, backend=backend)


# -- dynamic children --


class GcPauses:
    """Seconds the cyclic garbage collector ran inside a ``with`` block (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.collections += 1

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)


def _dynamic_spec() -> ChildSpec:
    return ChildSpec(id="worker", start=Worker)


async def _start_sequential(sup: Ref, n: int) -> list[Ref]:
    start_child = supervisors.start_child
    return [await start_child(sup) for _ in range(n)]


async def _start_concurrent(sup: Ref, n: int, tasks: int) -> list[Ref]:
    refs: list[Ref] = []
    start_child = supervisors.start_child

    async def starter(count: int) -> None:
        for _ in range(count):
            refs.append(await start_child(sup))

    async with anyio.create_task_group() as group:
        for i in range(tasks):
            group.start_soon(starter, n // tasks + (1 if i < n % tasks else 0))
    return refs


def dynamic(backend: Backend, n: int, concurrent: bool) -> dict[str, float]:
    """Start ``n`` dynamic children (sequentially or from ``CONCURRENCY`` tasks), time the tree,
    then stop the supervisor from its parent. Seconds, not yet scaled."""

    async def main() -> dict[str, float]:
        async with open_node() as node:
            with node.inbox() as inbox:
                sup = await inbox.start_link(DynamicSupervisor, FLAGS, _dynamic_spec())
                gc.collect()
                with GcPauses() as start_gc, Timer() as started:
                    if concurrent:
                        refs = await _start_concurrent(sup, n, CONCURRENCY)
                    else:
                        refs = await _start_sequential(sup, n)
                counts = await supervisors.count_children(sup)
                if counts.active != n or len(refs) != n:
                    raise AssertionError(f"{counts.active} children running of {n} started")
                with GcPauses() as tree_gc, Timer() as treed:
                    summary = supervisors.tree(node, sup)
                if summary.child_count != n:
                    raise AssertionError(f"the tree shows {summary.child_count} of {n} children")
                gc.collect()
                with Timer() as stopped:
                    inbox.exit(sup, SHUTDOWN)
                    await node.wait_exit(sup)
                alive = sum(ref.alive for ref in refs)
                if alive:
                    raise AssertionError(f"{alive} children outlived their supervisor")
                return {
                    "start": started.elapsed,
                    "start_gc": start_gc.seconds,
                    "tree": treed.elapsed,
                    "tree_gc": tree_gc.seconds,
                    "stop": stopped.elapsed,
                }

    return anyio.run(main, backend=backend)


def terminate_each(backend: Backend, n: int) -> float:
    """Seconds for ``terminate_child`` of ``n`` dynamic children, one after another."""

    async def main() -> float:
        async with open_node() as node:
            with node.inbox() as inbox:
                sup = await inbox.start_link(DynamicSupervisor, FLAGS, _dynamic_spec())
                refs = await _start_sequential(sup, n)
                terminate_child = supervisors.terminate_child
                gc.collect()
                with Timer() as timer:
                    for ref in refs:
                        await terminate_child(sup, ref)
                counts = await supervisors.count_children(sup)
                if counts.active or any(ref.alive for ref in refs):
                    raise AssertionError(f"{counts.active} children left after terminate_child")
                return timer.elapsed

    return anyio.run(main, backend=backend)


# -- memory --


def bytes_per_child(backend: Backend, n: int) -> dict[str, float]:
    """The dynamic supervisor's bookkeeping per child, by tracemalloc and by ``sys.getsizeof``."""

    async def main() -> dict[str, float]:
        async with open_node() as node:
            with node.inbox() as inbox:
                sup = await inbox.start_link(DynamicSupervisor, FLAGS, _dynamic_spec())
                await _start_sequential(sup, 10)  # first-use allocations are not per child
                behaviour = node.context(sup).behaviour
                assert isinstance(behaviour, DynamicSupervisor)
                table_before = sys.getsizeof(behaviour._by_pid)
                gc.collect()
                tracemalloc.start(1)
                try:
                    before = tracemalloc.take_snapshot()
                    refs = await _start_sequential(sup, n)
                    gc.collect()
                    after = tracemalloc.take_snapshot()
                finally:
                    tracemalloc.stop()
                only_supervisors = [tracemalloc.Filter(True, f"{SUPERVISORS_DIR}{os.sep}*")]
                growth = sum(
                    stat.size_diff
                    for stat in after.filter_traces(only_supervisors).compare_to(
                        before.filter_traces(only_supervisors), "filename"
                    )
                )
                records = [behaviour._by_pid[ref.pid] for ref in refs]
                sized = sys.getsizeof(behaviour._by_pid) - table_before
                for child in records:
                    sized += sys.getsizeof(child) + sys.getsizeof(child.started_at)
                    if child.args:  # () is shared by every child
                        sized += sys.getsizeof(child.args)
                inbox.exit(sup, SHUTDOWN)
                await node.wait_exit(sup)
                return {"tracemalloc": growth / n, "sizeof": sized / n}

    return anyio.run(main, backend=backend)


# -- the report --


def measure_backend(options: BenchOptions, backend: Backend) -> dict[str, Any]:
    """Every figure for one backend; timed figures are the best of ``options.repeat`` runs."""
    r = options.repeat
    row: dict[str, Any] = {"backend": backend}
    samples_n = options.count(RESTART_SAMPLES, QUICK_RESTART_SAMPLES)
    n = options.count(DYNAMIC_N, QUICK_DYNAMIC_N)
    memory_n = options.count(MEMORY_N, QUICK_MEMORY_N)
    scale = SCALE_TO / n

    note(f"{backend}: bookkeeping bytes of {memory_n:,} dynamic children (tracemalloc)")
    memory = bytes_per_child(backend, memory_n)

    note(f"{backend}: restart latency, {samples_n:,} samples, best of {r}")
    variants: list[tuple[str, int, int, Kind]] = [
        ("", 1, samples_n, "kill"),
        ("_short_history", samples_n // 10, 10, "kill"),
        ("_crash", 1, samples_n, "crash"),
    ]
    for label, sups, kills, kind in variants:
        runs = [restart_latency(backend, sups, kills, kind) for _ in range(r)]
        row[f"restart_latency{label}_us_p50"] = min(percentile(s, 50) for s in runs)
        row[f"restart_latency{label}_us_p99"] = min(percentile(s, 99) for s in runs)

    note(f"{backend}: {n:,} dynamic children, sequential and {CONCURRENCY} tasks, best of {r}")
    sequential = [dynamic(backend, n, concurrent=False) for _ in range(r)]
    concurrent = [dynamic(backend, n, concurrent=True) for _ in range(r)]
    best_seq = min(sequential, key=lambda run: run["start"])
    best_conc = min(concurrent, key=lambda run: run["start"])
    best = best_seq if best_seq["start"] <= best_conc["start"] else best_conc
    row["dynamic_start_100k_s"] = best["start"] * scale
    row["dynamic_start_mode"] = "sequential" if best is best_seq else "concurrent"
    row["dynamic_start_100k_sequential_s"] = best_seq["start"] * scale
    row["dynamic_start_100k_concurrent_s"] = best_conc["start"] * scale
    row["dynamic_start_100k_gc_s"] = best["start_gc"] * scale
    row["dynamic_stop_100k_s"] = min(run["stop"] for run in sequential + concurrent) * scale
    best_tree = min(sequential + concurrent, key=lambda run: run["tree"])
    row["tree_100k_s"] = best_tree["tree"] * scale
    row["tree_100k_gc_s"] = best_tree["tree_gc"] * scale

    note(f"{backend}: terminate_child of {n:,} children one by one, best of {r}")
    row["dynamic_terminate_each_100k_s"] = min(terminate_each(backend, n) for _ in range(r)) * scale
    row["bytes_per_child"] = max(memory["tracemalloc"], memory["sizeof"])
    row["bytes_per_child_tracemalloc"] = memory["tracemalloc"]
    row["bytes_per_child_sizeof"] = memory["sizeof"]
    row["counts"] = {"restart_samples": samples_n, "dynamic": n, "memory": memory_n}
    return row


def check_targets(trio_row: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Issue 3's targets against the trio figures: value, bound, met, and value/bound."""
    targets: dict[str, dict[str, Any]] = {}
    for key, bound in TARGETS:
        value = trio_row.get(key) if trio_row is not None else None
        targets[key] = {
            "target": f"<= {bound:g}",
            "trio": value,
            "met": None if value is None else value <= bound,
            "of_target": None if value is None else value / bound,
        }
    return targets


def compute_ratios(rows: list[dict[str, Any]], erlang: dict[str, Any] | None) -> dict[str, float]:
    """Parley over Erlang for each paired figure (above 1: Parley is slower or larger)."""
    ratios: dict[str, float] = {}
    if erlang is None:
        return ratios
    for row in rows:
        for ours, theirs in ERLANG_PAIRS:
            if row.get(ours) is not None and erlang.get(theirs):
                ratios[f"{row['backend']}_{ours}_vs_erlang"] = float(row[ours]) / float(
                    erlang[theirs]
                )
    return ratios


def main() -> None:
    options = parse_options("Parley supervisors against issue 3's targets and Erlang/OTP")
    _logs_to_devnull()
    rows = [measure_backend(options, backend) for backend in options.backends]
    note("Erlang/OTP: supervisors_bench.erl")
    erlang = run_erlang("supervisors_bench", quick=options.quick)
    trio_row = next((row for row in rows if row["backend"] == "trio"), None)
    targets = check_targets(trio_row)
    ratios = compute_ratios(rows, erlang)

    measures = [key for key in rows[0] if key not in ("backend", "counts")] if rows else []
    table = []
    for key in measures:
        line: dict[str, Any] = {"measure": key}
        for row in rows:
            line[row["backend"]] = row[key]
        line["erlang"] = None
        for ours, theirs in ERLANG_PAIRS:
            if ours == key and erlang is not None:
                line["erlang"] = erlang.get(theirs)
        table.append(line)
    print_table("Parley supervisors (µs, seconds per 100,000 children, bytes per child)", table)
    print_table(
        "Targets (issue 3, trio)",
        [
            {
                "measure": key,
                "target": t["target"],
                "trio": t["trio"],
                "result": "-" if t["met"] is None else ("pass" if t["met"] else "MISS"),
                "of_target": t["of_target"],
            }
            for key, t in targets.items()
        ],
    )
    if ratios:
        print_table(
            "Parley / Erlang (above 1: slower or larger)",
            [{"ratio": key, "value": value} for key, value in ratios.items()],
        )
    if options.json:
        emit_json(
            {
                "quick": options.quick,
                "results": rows,
                "targets": targets,
                "erlang": erlang,
                "ratios": ratios,
            }
        )


if __name__ == "__main__":
    main()
