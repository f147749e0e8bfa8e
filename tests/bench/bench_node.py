"""The chat node under load (issue 5's Performance section).

Starts a real node process (``parley serve --port 0`` in a temporary data directory, send-rate
limits raised so that the load is not throttled) and drives it with ``parley loadgen``'s worker
processes (gateway/_loadgen.py), all on loopback:

- ``connections`` idle authenticated connections held at once; the node's RSS growth per
  connection (``bytes_per_connection``, psutil, all in: transport, connection and session
  actors) and the handshake rate; then the same count against a bare trio-websocket echo server
  in its own process (``baseline_trio_websocket_bytes_per_connection`` and ``_handshakes_per_s``).
  Both are opened by the load generator's light client (prebuilt upgrade requests on raw
  sockets, answering pings only), so that the rates measure the servers, not the client
  library; a node handshake counts at ``synced``, an echo server's at the echo of one frame;
  ``node_cpu_ms_per_handshake`` and ``baseline_trio_websocket_cpu_ms_per_handshake`` are each
  server's own CPU time (user + system, psutil) over its handshakes, per handshake: steadier
  than rates on a shared machine;
- ``e2e_msgs_per_s``: 1:1 traffic among 1,000 users in pairs, closed loop (each user sends its
  next message when the last is acked), counted when delivered to the partner;
- at half that rate, open loop: ``ack_p99_ms`` (send → ack) and ``deliver_p99_ms`` (send → the
  partner's ``msg``);
- ``group_deliver_p99_ms``: one group of 256 online members, one member sending;
- the load generator's own CPU share, and the node's, during the closed-loop run.

A process may hold at most 20,000 open files here (``ulimit -n``): the node holds every
connection in one process, while the client side is spread over several worker processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file: make `tests.bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import os
import resource
import subprocess
import tempfile
import time
from typing import Any

import psutil

from gateway._loadgen import PER_WORKER, LoadPlan, LoadReport, run_load
from tests.bench._report import emit_json, note, options_from, print_table
from tests.bench._report import make_parser as make_common_parser
from tests.node._node import NodeProcess

#: Seconds to let the node settle after the connections are open (sessions hibernate after 5 s).
SETTLE_S = 7.0
#: Connections opened and closed before the memory reading, so lazily built things are built.
WARMUP = 100
NODE_ENV = {
    "PARLEY_LIMITS__SEND_RATE": "100000000",
    "PARLEY_LIMITS__SEND_BURST": "1000000",
    "PARLEY_SERVER__LOG_FORMAT": "json",
}


def _workers(count: int) -> int:
    return max(2, -(-count // PER_WORKER))


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _wait_quiet(pid: int, limit_s: float = 180.0) -> None:
    """Wait until the process ``pid`` uses under 10 % of a core for 2 s (at most ``limit_s``)."""
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(2.0)
        if proc.cpu_percent(None) < 10.0:
            return
    note(f"  the node was still busy after {limit_s:.0f} s")


def measure_connections(
    url: str, secret: bytes, pid: int, count: int
) -> tuple[LoadReport, float, float]:
    """Open ``count`` connections to the server ``pid`` at ``url``; (report, bytes each, the
    server's CPU milliseconds per handshake: its user + system time from the start of the
    handshakes until all are held, over their count)."""
    mode = "raw" if not secret else "connect"
    run_load(LoadPlan(url=url, secret=secret, mode=mode, users=WARMUP, workers=1, light=True))  # type: ignore[arg-type]
    time.sleep(1.0)
    before = _rss(pid)
    growth: list[float] = []
    cpu_ms: list[float] = []
    cpu_before = _cpu(pid)

    def held(report: LoadReport) -> None:
        cpu_ms.append((_cpu(pid) - cpu_before) * 1000 / max(1, report.connections))
        time.sleep(SETTLE_S)
        growth.append((_rss(pid) - before) / max(1, report.connections))
        note(
            f"  {mode}: {report.connections:,} held, RSS {_rss(pid) / 2**20:,.0f} MiB, "
            f"{growth[-1]:,.0f} bytes each, {report.handshakes_per_s:,.0f} handshakes/s"
        )

    report = run_load(
        LoadPlan(
            url=url,
            secret=secret,
            mode=mode,  # type: ignore[arg-type]
            users=count,
            workers=_workers(count),
            light=True,
        ),
        on_held=held,
    )
    return report, growth[0], cpu_ms[0]


def echo_server(port_file: str) -> None:
    """A bare trio-websocket echo server (the baseline); writes its port to ``port_file``."""
    import trio
    from trio_websocket import WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except Exception:
            return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_websocket(
                    handler, "127.0.0.1", 0, ssl_context=None, task_status=task_status
                )
            )
            await trio.Path(port_file).write_text(str(server.port))

    trio.run(main)


def measure_baseline(count: int, tmp: Path) -> tuple[LoadReport, float, float]:
    port_file = tmp / "echo.port"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--echo-server", str(port_file)]
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the echo server did not start")
            time.sleep(0.05)
        url = f"ws://127.0.0.1:{port_file.read_text()}/"
        return measure_connections(url, b"", proc.pid, count)
    finally:
        proc.kill()
        proc.wait(10)


def measure_chat(
    url: str, secret: bytes, pid: int, users: int, rate: float, duration: float
) -> tuple[LoadReport, float]:
    """A chat run; (report, the node's CPU share of the machine over it)."""
    cpu, wall = _cpu(pid), time.monotonic()
    report = run_load(
        LoadPlan(url=url, secret=secret, mode="chat", users=users, rate=rate, duration=duration)
    )
    share = (_cpu(pid) - cpu) / (time.monotonic() - wall) / (os.cpu_count() or 1)
    return report, share


def _connection_results(
    held: LoadReport,
    per_conn: float,
    baseline: LoadReport,
    base_per_conn: float,
    cpu_ms: tuple[float, float],
) -> dict[str, Any]:
    return {
        "connections": held.connections,
        "connect_errors": held.connect_errors,
        "bytes_per_connection": round(per_conn),
        "baseline_trio_websocket_bytes_per_connection": round(base_per_conn),
        "bytes_ratio_vs_trio_websocket": round(per_conn / base_per_conn, 2),
        "handshakes_per_s": held.handshakes_per_s,
        "baseline_trio_websocket_handshakes_per_s": baseline.handshakes_per_s,
        "node_cpu_ms_per_handshake": round(cpu_ms[0], 2),
        "baseline_trio_websocket_cpu_ms_per_handshake": round(cpu_ms[1], 2),
        "handshake_client": "light",
    }


def _report_connections(
    as_json: bool,
    held: LoadReport,
    per_conn: float,
    baseline: LoadReport,
    base_per_conn: float,
    cpu_ms: tuple[float, float],
    open_files: int,
) -> None:
    result = _connection_results(held, per_conn, baseline, base_per_conn, cpu_ms)
    result["open_files_limit"] = open_files
    print_table("Connections only", [{"key": k, "value": v} for k, v in result.items()])
    if as_json:
        emit_json(result)


def main() -> None:
    parser = make_common_parser("The chat node under load vs a bare trio-websocket server")
    parser.add_argument("--connections", type=int, default=None, help="idle connections (15000)")
    parser.add_argument("--users", type=int, default=None, help="1:1 chat users (1000)")
    parser.add_argument("--members", type=int, default=None, help="group members (256)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (10)")
    parser.add_argument(
        "--connections-only",
        action="store_true",
        help="only the connection measures (handshakes, memory, their baseline); no traffic",
    )
    parser.add_argument(
        "--gc-thresholds",
        metavar="G0,G1,G2",
        default=None,
        help="the node's server.gc_thresholds (default: the node's own, 10000,4,10; "
        "700,10,10 is CPython's)",
    )
    parser.add_argument("--echo-server", metavar="PORTFILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return
    opts = options_from(args)
    count = args.connections or opts.count(15_000, 500)
    users = args.users or opts.count(1_000, 100)
    members = args.members or opts.count(256, 32)
    duration = args.duration or opts.count(10, 3)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note(
        f"open files per process: {soft:,} (hard {hard:,}); the node holds all {count:,} "
        f"connections in one process, the load generator spreads its side over "
        f"{_workers(count)} worker processes (at most {PER_WORKER:,} each)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmpdir:
        tmp = Path(tmpdir)
        env = dict(NODE_ENV)
        if args.gc_thresholds:
            env["PARLEY_SERVER__GC_THRESHOLDS"] = f"[{args.gc_thresholds}]"
        node = NodeProcess(tmp / "data", env).start()
        try:
            assert node.proc is not None
            pid = node.proc.pid
            note(f"node pid {pid} on {node.url}")
            held, per_conn, node_cpu = measure_connections(node.url, node.secret, pid, count)
            if args.connections_only:
                node.stop()
                baseline, base_per_conn, base_cpu = measure_baseline(count, tmp)
                cpu_ms = (node_cpu, base_cpu)
                _report_connections(
                    opts.json, held, per_conn, baseline, base_per_conn, cpu_ms, soft
                )
                return
            _wait_quiet(pid)  # the sessions store 15,000 users' last-seen times on the way out
            closed_loop: LoadReport | None = None
            node_share = 0.0
            for _ in range(opts.repeat):
                report, share = measure_chat(node.url, node.secret, pid, users, 0.0, duration)
                note(f"  closed loop: {report.delivered_per_s:,.0f} delivered/s")
                if closed_loop is None or report.delivered_per_s > closed_loop.delivered_per_s:
                    closed_loop, node_share = report, share
            assert closed_loop is not None
            half = max(1.0, round(closed_loop.delivered_per_s / 2))
            paced, _ = measure_chat(node.url, node.secret, pid, users, half, duration)
            group = run_load(
                LoadPlan(
                    url=node.url,
                    secret=node.secret,
                    mode="group",
                    users=members,
                    rate=5.0,
                    duration=duration,
                )
            )
        finally:
            node.stop()
        baseline, base_per_conn, base_cpu = measure_baseline(count, tmp)

    result: dict[str, Any] = {
        "quick": opts.quick,
        **_connection_results(held, per_conn, baseline, base_per_conn, (node_cpu, base_cpu)),
        "e2e_users": users,
        "e2e_msgs_per_s": closed_loop.delivered_per_s,
        "e2e_ack_p99_ms_closed_loop": closed_loop.ack_ms.get("p99"),
        "half_rate_msgs_per_s": half,
        "ack_p50_ms": paced.ack_ms.get("p50"),
        "ack_p99_ms": paced.ack_ms.get("p99"),
        "deliver_p50_ms": paced.deliver_ms.get("p50"),
        "deliver_p99_ms": paced.deliver_ms.get("p99"),
        "half_rate_delivered": paced.delivered,
        "half_rate_expected": paced.expected,
        "group_members": members,
        "group_msgs": group.acked,
        "group_deliveries": group.delivered,
        "group_deliver_p50_ms": group.deliver_ms.get("p50"),
        "group_deliver_p99_ms": group.deliver_ms.get("p99"),
        "loadgen_cpu_share": closed_loop.loadgen_cpu_share,
        "node_cpu_share": round(node_share, 3),
        "loadgen_workers": held.workers,
        "open_files_limit": soft,
        "node_gc_thresholds": args.gc_thresholds or "default",
    }
    targets = [
        ("connections", held.connections, ">= 15000", held.connections >= 15_000),
        ("bytes_per_connection", round(per_conn), "<= 24000", per_conn <= 24_000),
        ("handshakes_per_s", held.handshakes_per_s, ">= 2000", held.handshakes_per_s >= 2_000),
        (
            "e2e_msgs_per_s",
            closed_loop.delivered_per_s,
            ">= 5000",
            closed_loop.delivered_per_s >= 5_000,
        ),
        ("ack_p99_ms", result["ack_p99_ms"], "<= 50", (result["ack_p99_ms"] or 1e9) <= 50),
        (
            "deliver_p99_ms",
            result["deliver_p99_ms"],
            "<= 100",
            (result["deliver_p99_ms"] or 1e9) <= 100,
        ),
        (
            "group_deliver_p99_ms",
            result["group_deliver_p99_ms"],
            "<= 500",
            (result["group_deliver_p99_ms"] or 1e9) <= 500,
        ),
    ]
    print_table(
        "Chat node (one process) vs targets",
        [
            {"measure": m, "value": v, "target": t, "met": "yes" if ok else "NO"}
            for m, v, t, ok in targets
        ],
    )
    print_table(
        "Memory per idle connection, same run",
        [
            {
                "server": "parley node",
                "connections": held.connections,
                "bytes_each": round(per_conn),
            },
            {
                "server": "bare trio-websocket echo",
                "connections": baseline.connections,
                "bytes_each": round(base_per_conn),
            },
        ],
    )
    print_table("Everything measured", [{"key": k, "value": v} for k, v in result.items()])
    if opts.json:
        emit_json(result)


if __name__ == "__main__":
    main()
