"""Run the Erlang reference benchmarks in ``tests/bench/erlang/`` and read their JSON line.

Each ``*.erl`` there is an escript (compiled at load time, ``-mode(compile)``) that prints one
JSON object on stdout. ``run_erlang`` returns it as a dict, or None with a note on stderr when
Erlang is not installed (Debian ``erlang-base``) or the run outlasts its timeout.

Run ``python -m tests.bench._erlang [--quick] [--json]`` to print both benchmarks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file: make `tests.bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench._report import emit_json, note, parse_options, print_table

ERLANG_DIR = Path(__file__).resolve().parent / "erlang"
SCRIPTS = ("actors_bench", "supervisors_bench")
DEFAULT_TIMEOUT_S = 300.0


class ErlangBenchError(RuntimeError):
    """An Erlang benchmark script failed or printed no JSON: a bug in the script, not Erlang."""


def run_erlang(
    script_name: str, quick: bool = False, *, timeout: float | None = DEFAULT_TIMEOUT_S
) -> dict[str, Any] | None:
    """Run ``tests/bench/erlang/<script_name>.erl`` with ``escript`` and return its JSON result.

    ``script_name`` may omit the ``.erl``. ``quick`` passes ``quick`` to the script (small
    counts). Blocks for the whole run (tens of seconds at full size), at most ``timeout`` seconds
    (None: no limit).

    Returns None, after a note on stderr, when ``escript`` is not on PATH or the run timed out.
    Raises FileNotFoundError for an unknown script, and ErlangBenchError when the script exits
    non-zero or its last stdout line is not a JSON object.
    """
    path = ERLANG_DIR / (script_name if script_name.endswith(".erl") else f"{script_name}.erl")
    if not path.is_file():
        raise FileNotFoundError(path)
    escript = shutil.which("escript")
    if escript is None:
        note(f"escript is not on PATH (Debian: erlang-base); skipping {path.name}")
        return None
    args = [escript, str(path)] + (["quick"] if quick else [])
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        note(f"{path.name} did not finish within {timeout} s; no Erlang figures")
        return None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ErlangBenchError(
            f"{path.name} exited with {done.returncode}:\n{done.stderr.strip() or done.stdout}"
        )
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise ErlangBenchError(f"{path.name} printed no JSON line: {lines[-1]!r}") from exc
    if not isinstance(result, dict):
        raise ErlangBenchError(f"{path.name} printed {type(result).__name__}, not an object")
    return result


def main(argv: list[str] | None = None) -> None:
    options = parse_options(
        "Erlang/OTP reference figures for the actor and supervisor benches.", argv
    )
    results: dict[str, dict[str, Any] | None] = {}
    for name in SCRIPTS:
        result = run_erlang(name, quick=options.quick)
        results[name] = result
        if result is not None:
            rows = [
                {"measure": k, "value": v}
                for k, v in result.items()
                if k not in ("quick", "otp_release")
            ]
            print_table(f"Erlang/OTP {result.get('otp_release', '?')}: {name}", rows)
    if options.json:
        emit_json({"quick": options.quick, "erlang": results})


if __name__ == "__main__":
    main()
