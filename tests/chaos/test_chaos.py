"""Seeded chaos runs against a real node (issue 7): a 60-second run on SQLite and a 30-second
one on PostgreSQL must be valid. Each runs ``python -m tests.chaos run`` in a subprocess; a
failure names the run directory (``history.jsonl``, ``results.json``, ``node.log``) and
summarises the report.

Marked ``chaos`` (``bash .ci/dev chaos``; ``bash .ci/dev test`` runs them after the fast
suite); the ``soak`` test is a long run (``PARLEY_SOAK_DURATION`` seconds, default 600, on
``PARLEY_SOAK_BACKEND``, default sqlite), also ``bash .ci/dev soak``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
#: Where the runs' directories go (kept: pytest's own temporary directories are pruned).
RUNS = Path(os.environ.get("PARLEY_CHAOS_RUNS", Path(tempfile.gettempdir()) / "parley-chaos"))
#: Seeds whose schedules hold every fault the backend allows in the run's length.
SQLITE_SEED = 7
POSTGRES_SEED = 21


def summary(out: Path) -> str:
    """A few lines from ``results.json`` for a failure message."""
    try:
        results: dict[str, Any] = json.loads((out / "results.json").read_text())
    except (OSError, ValueError) as exc:
        return f"no results.json ({exc})"
    lines = [f"valid: {results.get('valid')}"]
    for key in ("lost", "unexpected", "duplicated", "order_anomalies", "undelivered"):
        value = results.get(key)
        if isinstance(value, dict):
            lines.append(f"{key}: {value.get('count')}")
    for failure in results.get("failures", []):
        lines.append(f"FAILED {failure.get('invariant')}: {failure.get('message')}")
        lines.append(f"  e.g. {json.dumps(failure.get('examples', [])[:2])[:600]}")
    for reason in results.get("unknown_reasons", []):
        lines.append(f"UNKNOWN {reason}")
    return "\n".join(lines)


def chaos_run(*, backend: str, seed: int, duration: float, timeout: float) -> None:
    """One run; fails the test unless ``results.json`` says valid."""
    out = RUNS / f"{backend}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    command = [
        sys.executable,
        "-m",
        "tests.chaos",
        "run",
        "--backend",
        backend,
        "--seed",
        str(seed),
        "--duration",
        str(duration),
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"chaos run {' '.join(command[2:])} exited with {proc.returncode}\n"
            f"run directory: {out}\n{summary(out)}\n"
            f"--- output (tail) ---\n{(proc.stdout + proc.stderr)[-3000:]}",
            pytrace=False,
        )


@pytest.mark.chaos
def test_sqlite_chaos_run_is_valid() -> None:
    chaos_run(backend="sqlite", seed=SQLITE_SEED, duration=60, timeout=420)


@pytest.mark.chaos
def test_postgresql_chaos_run_is_valid() -> None:
    from tests.storage.conftest import POSTGRES, _probe

    require_service("postgresql", trio.run(_probe, POSTGRES))
    chaos_run(backend="postgresql", seed=POSTGRES_SEED, duration=30, timeout=360)


@pytest.mark.soak
def test_soak_run_is_valid() -> None:
    backend = os.environ.get("PARLEY_SOAK_BACKEND", "sqlite")
    duration = float(os.environ.get("PARLEY_SOAK_DURATION", "600"))
    seed = int(os.environ.get("PARLEY_SOAK_SEED", "1"))
    if backend == "postgresql":
        from tests.storage.conftest import POSTGRES, _probe

        require_service("postgresql", trio.run(_probe, POSTGRES))
    chaos_run(backend=backend, seed=seed, duration=duration, timeout=duration + 900)
