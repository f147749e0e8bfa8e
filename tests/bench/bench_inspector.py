"""The inspector under load (issue 6's Performance section).

Two measurements:

- **scale**: the chat node's real tree run in this process (``run_application(node_spec(...))``,
  SQLite in a temporary directory) with ``--actors`` (100,000) conversation actors started
  under the ``conversations`` dynamic supervisor and left idle; then, over the admin socket
  from a client thread, the time of ``tree``, ``stats``, ``info`` and one ``top`` frame (best
  and worst of a few, wall clock, request sent → reply parsed);
- **throughput**: a real ``parley serve`` process driven by ``parley loadgen chat`` (closed
  loop: each user sends its next message when the last is acked) among ``--users`` users,
  alternately without and with a ``top`` stream attached (``--interval`` 1 s, sort by rate),
  ``--rounds`` times each; delivered messages per second, best of each, and the drop.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file: make `tests.bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import tempfile
import threading
import time
from typing import Any

import anyio
import trio

from actors import Node, Ref
from config import load_settings
from gateway import Services, node_spec
from gateway._inspect import AdminClient
from gateway._loadgen import LoadPlan, run_load
from gateway._services import CONVERSATIONS
from supervisors import run_application, start_child
from tests.bench._report import emit_json, note, print_table
from tests.node._node import NodeProcess

NODE_ENV = {
    "PARLEY_LIMITS__SEND_RATE": "100000000",
    "PARLEY_LIMITS__SEND_BURST": "1000000",
    "PARLEY_SERVER__LOG_FORMAT": "json",
}


def _timed(client: AdminClient, op: str, **args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = client.request(op, **args)
    return time.perf_counter() - started, result


def _top_frame(socket: Path) -> float:
    """Seconds for one ``top`` frame (one pass over every actor), request to reply."""
    with AdminClient(socket) as client:
        started = time.perf_counter()
        for _ in client.stream("top", count=1, n=20, sort="rate"):
            pass
        return time.perf_counter() - started


def measure_scale(actors: int, repeat: int) -> dict[str, Any]:
    """Run the node's tree in-process with ``actors`` idle conversations; time the ops."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            None,
            overrides={
                "server.data_dir": Path(tmp),
                "server.port": 0,
                "metrics.enabled": False,
                "limits.conversation_idle": 3600.0,
            },
        )
        services = Services(settings, b"x" * 32)
        stop = anyio.Event()
        socket = Path(settings.admin.socket)
        started: list[tuple[Node, Ref]] = []
        up = trio.Event()

        def ready(node: Node, root: Ref) -> None:
            started.append((node, root))
            up.set()

        def client_side() -> None:
            deadline = time.monotonic() + 30
            while not socket.is_socket() and time.monotonic() < deadline:
                time.sleep(0.05)
            with AdminClient(socket) as client:
                for op, args in (("tree", {}), ("stats", {}), ("info", {"ref": "conv:c1"})):
                    times = []
                    for _ in range(repeat):
                        seconds, result = _timed(client, op, **args)
                        times.append(seconds)
                    results[op] = (min(times), max(times))
                    if op == "stats":
                        results["actors_seen"] = result["actors"]["total"]
                        results["rss_bytes"] = result["rss_bytes"]
            results["top_frame"] = (
                min(_top_frame(socket) for _ in range(repeat)),
                max(_top_frame(socket) for _ in range(repeat)),
            )

        async def main() -> None:
            async with trio.open_nursery() as nursery:

                async def drive() -> None:
                    await up.wait()
                    node, _ = started[0]
                    sup = node.whereis(CONVERSATIONS)
                    assert sup is not None
                    t0 = time.perf_counter()
                    for i in range(actors):
                        await start_child(sup, f"c{i}")
                    note(f"  started {actors} conversations in {time.perf_counter() - t0:.1f} s")
                    results["actors_total"] = sum(1 for _ in node.actors())
                    await trio.to_thread.run_sync(client_side)
                    stop.set()

                nursery.start_soon(drive)
                await run_application(
                    node_spec(services), name="bench", stop_signals=(), stop=stop, ready=ready
                )

        trio.run(main)
    return results


def measure_throughput(users: int, duration: float, rounds: int, interval: float) -> dict[str, Any]:
    """Closed-loop chat among ``users`` against a real node, without and with ``top``."""
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(Path(tmp) / "data", NODE_ENV).start()
        try:
            socket = node.data_dir / "admin.sock"
            deadline = time.monotonic() + 30
            while not socket.is_socket() and time.monotonic() < deadline:
                time.sleep(0.05)
            plan = LoadPlan(
                url=node.url, secret=node.secret, mode="chat", users=users, rate=0.0,
                duration=duration, workers=0,
            )  # fmt: skip
            run_load(LoadPlan(**{**plan.__dict__, "duration": 2.0}))  # warm-up
            without: list[float] = []
            with_top: list[float] = []
            frames = 0
            for _ in range(rounds):
                without.append(run_load(plan).delivered_per_s)
                stop = threading.Event()
                counted: list[int] = []

                def watch(stop: threading.Event = stop, counted: list[int] = counted) -> None:
                    with AdminClient(socket) as client:
                        for _ in client.stream("top", interval=interval, sort="rate", n=20):
                            counted.append(1)
                            if stop.is_set():
                                return

                watcher = threading.Thread(target=watch, daemon=True)
                watcher.start()
                time.sleep(interval)  # the stream is attached and has sampled once
                with_top.append(run_load(plan).delivered_per_s)
                stop.set()
                watcher.join(timeout=interval * 3)
                frames += len(counted)
            return {
                "without": without,
                "with_top": with_top,
                "top_frames": frames,
                "actors": users * 3 // 2 + 20,
            }
        finally:
            node.stop()


def _rounds(values: list[float]) -> str:
    return " ".join(f"{x:.0f}" for x in values)


def _rounds(values: list[float]) -> str:
    return " ".join(f"{x:.0f}" for x in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--actors", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    options = parser.parse_args()
    if options.quick:
        options.actors, options.users, options.duration, options.rounds = 5_000, 50, 3.0, 1
    report: dict[str, Any] = {}
    rows: list[list[str]] = []
    if not options.skip_scale:
        note(f"scale: {options.actors} idle conversation actors in the node's tree")
        scale = measure_scale(options.actors, repeat=3)
        for op in ("tree", "stats", "info", "top_frame"):
            best, worst = scale[op]
            report[f"{op}_s_best"] = round(best, 4)
            report[f"{op}_s_worst"] = round(worst, 4)
            target = "≤ 1 s" if op in ("tree", "stats") else ""
            rows.append(
                {
                    "request": f"{op} ({scale['actors_total']} actors)",
                    "best_s": round(best, 3),
                    "worst_s": round(worst, 3),
                    "target": target,
                }
            )
        report["actors"] = scale["actors_total"]
        report["rss_bytes"] = scale.get("rss_bytes")
        print_table("Inspector at scale (wall clock over the admin socket)", rows)
    if not options.skip_throughput:
        note(f"throughput: chat among {options.users} users, closed loop, with/without top")
        tp = measure_throughput(options.users, options.duration, options.rounds, options.interval)
        best_without, best_with = max(tp["without"]), max(tp["with_top"])
        drop = (best_without - best_with) / best_without * 100 if best_without else 0.0
        report.update(
            {
                "delivered_per_s_without_top": [round(x, 1) for x in tp["without"]],
                "delivered_per_s_with_top": [round(x, 1) for x in tp["with_top"]],
                "top_frames": tp["top_frames"],
                "throughput_drop_pct": round(drop, 2),
            }
        )
        print_table(
            f"Chat throughput, {options.users} users, closed loop, {options.duration:g} s runs",
            [
                {"run": "without top", "rounds": _rounds(tp["without"]), "best": best_without},
                {"run": "with top", "rounds": _rounds(tp["with_top"]), "best": best_with},
                {"run": "drop (%)", "rounds": "target <= 5", "best": round(drop, 1)},
            ],
        )
    if options.json:
        emit_json(report)


if __name__ == "__main__":
    main()
