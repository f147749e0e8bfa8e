"""``python -m tests.chaos run --backend B --duration S --seed N --out DIR [--clients K]``:
one chaos run (see tests/chaos/harness.py); exits with the checker's code (0 valid, 1 invalid,
2 unknown)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .harness import BACKENDS, RunConfig, run
from .nemesis import HEAVY, LIGHT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="one chaos run against a fresh node")
    p.add_argument("--backend", choices=BACKENDS, default="sqlite")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    p.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: random)")
    p.add_argument(
        "--out", type=Path, default=None, help="run directory (default: $TMPDIR/parley-chaos/...)"
    )
    p.add_argument("--clients", type=int, default=12, help="users (default 12)")
    p.add_argument(
        "--faults",
        default=None,
        help="comma-separated fault kinds to keep (default: all that apply): "
        + ", ".join(HEAVY + LIGHT),
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    runs = Path(os.environ.get("PARLEY_CHAOS_RUNS", Path(tempfile.gettempdir()) / "parley-chaos"))
    out = args.out or runs / f"{args.backend}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    only = frozenset(args.faults.split(",")) if args.faults else None
    if only is not None and not only <= set(HEAVY + LIGHT):
        parser.error(f"unknown fault kinds: {sorted(only - set(HEAVY + LIGHT))}")
    config = RunConfig(
        backend=args.backend,
        duration=args.duration,
        seed=seed,
        out=out,
        clients=args.clients,
        only=only,
    )
    print(
        f"chaos run: backend {args.backend}, seed {seed}, {args.duration:g} s -> {out}", flush=True
    )
    code = run(config)
    print(f"results: {out / 'results.json'} (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
