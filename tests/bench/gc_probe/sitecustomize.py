"""A probe of CPython's cyclic collector for a process started with this directory on
``PYTHONPATH`` (Python imports ``sitecustomize`` at start-up), e.g. a node:

    PYTHONPATH=tests/bench/gc_probe GC_PROBE_OUT=gc.jsonl parley serve --data-dir DIR

Each collection appends one JSON line to ``GC_PROBE_OUT``: ``t`` (Unix time, s), ``gen``,
``cpu_ms`` (the collecting thread's CPU time), ``collected`` and ``young`` (objects in
generation 0 at the start of a young collection). With ``GC_PROBE_TYPES=N`` a young collection
of more than N objects also records ``types``: the 40 most common type names in it (coroutines
and generators by their code's name). Counting costs time of its own, outside ``cpu_ms``.
Without ``GC_PROBE_OUT`` it does nothing. docs/benchmarks.md, "What the young generation
holds", was measured with it.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import time
from typing import Any

_OUT = os.environ.get("GC_PROBE_OUT")
_TYPES = int(os.environ.get("GC_PROBE_TYPES", "0") or 0)


def _name(obj: object) -> str:
    kind = type(obj).__qualname__
    code = getattr(obj, "cr_code", None) or getattr(obj, "gi_code", None)
    if code is not None:
        return f"{kind}:{code.co_qualname}"
    return kind


def _install(path: str) -> None:
    out = open(path, "a")  # noqa: SIM115 (open for the life of the process)
    state: dict[str, Any] = {}

    def probe(phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if phase == "start":
            state["young"] = state["types"] = None
            if generation == 0:
                young = gc.get_objects(0)
                state["young"] = len(young)
                if _TYPES and len(young) > _TYPES:
                    counts = collections.Counter(_name(obj) for obj in young)
                    state["types"] = counts.most_common(40)
                del young
            state["cpu"] = time.thread_time()
            return
        record = {
            "t": round(time.time(), 3),
            "gen": generation,
            "cpu_ms": round((time.thread_time() - state["cpu"]) * 1e3, 2),
            "collected": info["collected"],
            "young": state["young"],
        }
        if state["types"] is not None:
            record["types"] = state["types"]
        out.write(json.dumps(record) + "\n")
        out.flush()

    gc.callbacks.append(probe)


if _OUT:
    _install(_OUT)
