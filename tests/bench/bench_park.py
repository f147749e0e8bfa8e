"""What an actor's hibernation timer costs per park: actors with ``hibernate_after`` against the
same actors without it, side by side in one run.

    python tests/bench/bench_park.py [--json] [--quick] [--repeat N]

``--actors`` (2,000) class actors each get a cast, handle it and park again, 50 rounds, the
loop run between rounds so that every actor parks each time (a chat node's sessions and
conversations live like this). Per variant: ``casts_per_s`` (best of ``--repeat``, 5) and
``young_objects_per_actor``, the objects the collector tracks that are newer than the
start, per parked actor, once all are parked (``gc.freeze()`` before, the collector off
during). These are what a young collection scans: docs/benchmarks.md, "What the young
generation holds". Prints a table, then (with ``--json``) one JSON object.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors import Actor, open_node
from tests.bench._report import emit_json, make_parser, note, print_table

ROUNDS = 50


class Quiet(Actor):
    def handle_cast(self, message: Any) -> None:
        pass


async def measure(actors: int, hibernate_after: float | None, repeat: int) -> dict[str, Any]:
    async with open_node() as node:
        refs = [node.spawn(Quiet, hibernate_after=hibernate_after) for _ in range(actors)]
        for ref in refs:
            ref.cast(0)
        await trio.sleep(0.05)
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            best = 0.0
            for _ in range(repeat):
                started = time.perf_counter()
                for _ in range(ROUNDS):
                    for ref in refs:
                        ref.cast(1)
                    await trio.lowlevel.checkpoint()
                    await trio.lowlevel.checkpoint()
                await trio.testing.wait_all_tasks_blocked()  # every actor parked
                best = max(best, actors * ROUNDS / (time.perf_counter() - started))
            young = len(gc.get_objects(0))
        finally:
            gc.enable()
            gc.unfreeze()
        return {
            "casts_per_s": round(best),
            "young_objects_per_actor": round(young / actors, 2),
        }


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=2000)
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 5)
    actors = 200 if args.quick else args.actors
    results: dict[str, Any] = {}
    rows = []
    for name, hibernate_after in (("hibernate_after=5", 5.0), ("no hibernation", None)):
        note(f"{name}: {actors} actors x {ROUNDS} rounds, best of {repeat}")
        row = trio.run(measure, actors, hibernate_after, repeat)
        results[name] = row
        rows.append({"actors": name, **row})
    timed, plain = results["hibernate_after=5"], results["no hibernation"]
    results["casts_ratio"] = round(timed["casts_per_s"] / max(1, plain["casts_per_s"]), 2)
    results["young_extra_per_actor"] = round(
        timed["young_objects_per_actor"] - plain["young_objects_per_actor"], 2
    )
    print_table("Actors parking with and without a hibernation timer", rows)
    print(
        f"with the timer: {results['casts_ratio']}x the casts per second, "
        f"{results['young_extra_per_actor']} more young objects per parked actor"
    )
    if args.json:
        emit_json(results)


if __name__ == "__main__":
    main()
