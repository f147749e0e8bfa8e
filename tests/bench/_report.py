"""Shared helpers for the benchmark scripts: options, timing, memory and output.

Every benchmark prints a plain-text table and, with ``--json``, one JSON object as its last line
of stdout (notes and progress go to stderr). Figures from one machine are only comparable within
one run, so each script measures its baselines next to the thing it benchmarks and the ratios are
what matter.

Importing this module is cheap: psutil is imported only when memory is measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

Backend = Literal["trio", "asyncio"]
BACKENDS: tuple[Backend, ...] = ("trio", "asyncio")


@dataclass(frozen=True)
class BenchOptions:
    """The common command line of every benchmark script.

    ``json``: print one JSON object as the last line of stdout.
    ``quick``: a smoke run with small counts (the figures are then not meaningful).
    ``backends``: the anyio backends to measure, in order.
    ``repeat``: how many times each measure runs; scripts report the best run.
    """

    json: bool
    quick: bool
    backends: tuple[Backend, ...]
    repeat: int

    def count(self, full: int, quick: int) -> int:
        """``full`` for a real run, ``quick`` under ``--quick``."""
        return quick if self.quick else full


def make_parser(description: str) -> argparse.ArgumentParser:
    """The common argparse front; a script may add its own arguments before parsing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line of stdout"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run with small counts")
    parser.add_argument(
        "--backend",
        choices=("trio", "asyncio", "both"),
        default="both",
        help="anyio backend(s) to measure (default: both)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per measure, best one reported (default: 3, or 1 with --quick)",
    )
    return parser


def options_from(args: argparse.Namespace) -> BenchOptions:
    """Turn the namespace of :func:`make_parser` into :class:`BenchOptions`."""
    backends: tuple[Backend, ...] = BACKENDS if args.backend == "both" else (args.backend,)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    return BenchOptions(json=args.json, quick=args.quick, backends=backends, repeat=repeat)


def parse_options(description: str, argv: Sequence[str] | None = None) -> BenchOptions:
    """Parse the common command line (``--json``, ``--quick``, ``--backend``, ``--repeat``)."""
    return options_from(make_parser(description).parse_args(argv))


class Timer:
    """Wall time of a ``with`` block on ``time.perf_counter``, in seconds.

    >>> with Timer() as t:
    ...     work()
    >>> t.elapsed, t.rate(n)
    """

    def __init__(self) -> None:
        self._start = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> Self:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.elapsed = time.perf_counter() - self._start

    def rate(self, n: int) -> float:
        """``n`` operations over the elapsed time, per second."""
        return n / self.elapsed if self.elapsed > 0 else float("inf")


def best_of(repeat: int, measure: Callable[[], float]) -> float:
    """Run ``measure`` ``repeat`` times and return the highest figure (for rates)."""
    return max(measure() for _ in range(repeat))


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``samples`` by nearest rank.

    Raises ValueError on an empty sequence or ``p`` outside [0, 100].
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside [0, 100]")
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def rss_bytes() -> int:
    """This process's resident set size, in bytes (psutil)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def measure_rss_growth(create: Callable[[int], object], n: int) -> float:
    """RSS growth per item, in bytes, when ``create(n)`` makes ``n`` items.

    ``create`` must return something that keeps all ``n`` items alive (a list of them); it is
    held until after the second reading. Garbage is collected before both readings, so only what
    the items keep alive is counted. Use ``n`` of 100,000 or more: RSS moves in pages and arenas.
    Memory freed earlier in the process (pymalloc arenas, malloc free lists) is reused without
    growing RSS, so measure memory before the throughput runs, or in a fresh process.
    """
    gc.collect()
    before = rss_bytes()
    keep = create(n)
    gc.collect()
    after = rss_bytes()
    del keep
    return (after - before) / n


async def measure_rss_growth_async(create: Callable[[int], Awaitable[object]], n: int) -> float:
    """:func:`measure_rss_growth` for an async ``create`` (spawning actors inside a running loop).

    The caller decides whether the items are still alive afterwards (stop them after the call).
    """
    gc.collect()
    before = rss_bytes()
    keep = await create(n)
    gc.collect()
    after = rss_bytes()
    del keep
    return (after - before) / n


def format_value(value: object) -> str:
    """A table cell: floats and ints get thousands separators, large rates lose decimals."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:,.1f}"
        return f"{value:.3g}"
    return str(value)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print ``rows`` as aligned plain-text columns under ``title`` (to stdout).

    Columns are the union of the rows' keys in first-seen order; a missing cell prints ``-``.
    Numbers are right-aligned, text left-aligned.
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[format_value(row.get(col)) for col in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(col), int | float) or row.get(col) is None for row in rows)
        for col in columns
    ]
    widths = [max([len(col)] + [len(line[i]) for line in cells]) for i, col in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if is_num else v.ljust(w)
            for v, w, is_num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(title)
    print(line(columns))
    print(line(["-" * w for w in widths]))
    for row_cells in cells:
        print(line(row_cells))
    print(flush=True)


def emit_json(obj: object) -> None:
    """Print ``obj`` as ONE line of JSON on stdout; call it last."""
    print(json.dumps(obj, separators=(",", ":"), allow_nan=False), flush=True)


def note(message: str) -> None:
    """A remark for the reader, on stderr so stdout stays table + JSON."""
    print(message, file=sys.stderr, flush=True)
