"""``parley loadgen`` against a real node: small smoke runs of each mode (--json)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from typing import Any

import pytest

from ._node import PARLEY, NodeProcess


def loadgen(node: NodeProcess, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            *PARLEY,
            "loadgen",
            *args,
            *("--url", node.url, "--data-dir", str(node.data_dir), "--workers", "2", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_connect_holds_every_connection(node: NodeProcess) -> None:
    report = loadgen(node, "connect", "20")
    assert report["connections"] == 20
    assert report["connect_errors"] == 0
    assert report["handshakes_per_s"] > 0


def test_connect_with_the_light_client_holds_every_connection(node: NodeProcess) -> None:
    report = loadgen(node, "connect", "20", "--light")
    assert report["connections"] == 20
    assert report["connect_errors"] == 0
    assert report["handshakes_per_s"] > 0


def test_raw_with_the_light_client_against_an_echo_server() -> None:
    import trio
    from trio_websocket import WebSocketRequest, serve_websocket

    from gateway._loadgen import LoadPlan, run_load

    ports: list[int] = []
    done = threading.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with contextlib.suppress(Exception):
            while True:
                await ws.send_message(await ws.get_message())

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            ports.append(server.port)
            await trio.to_thread.run_sync(done.wait)
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(serve,))
    thread.start()
    try:
        while not ports:
            time.sleep(0.01)
        plan = LoadPlan(
            url=f"ws://127.0.0.1:{ports[0]}/", secret=b"", mode="raw", users=10, workers=1,
            light=True,
        )  # fmt: skip
        report = run_load(plan)
    finally:
        done.set()
        thread.join(30)
    assert report.connections == 10
    assert report.connect_errors == 0


def test_the_light_client_only_connects() -> None:
    from gateway._loadgen import LoadError, LoadPlan, run_load

    plan = LoadPlan(url="ws://127.0.0.1:1/ws", secret=b"s", mode="chat", users=2, light=True)
    with pytest.raises(LoadError, match="light client"):
        run_load(plan)


def test_chat_acks_and_delivers_every_message(node: NodeProcess) -> None:
    # 4 users at 4 messages/s in total: 1 per user per second, under the default rate limit.
    report = loadgen(node, "chat", "--users", "4", "--rate", "4", "--duration", "1")
    assert report["sent"] >= 3
    assert report["send_errors"] == 0
    assert report["acked"] == report["sent"]
    assert report["delivered"] == report["expected"] == report["acked"]
    assert report["ack_ms"]["p99"] > 0
    assert report["deliver_ms"]["p99"] > 0


def test_group_delivers_to_every_member(node: NodeProcess) -> None:
    report = loadgen(node, "group", "--members", "5", "--rate", "2", "--duration", "1")
    assert report["acked"] >= 1
    assert report["delivered"] == report["expected"] == 5 * report["acked"]


def test_refuses_a_non_loopback_target(node: NodeProcess) -> None:
    done = subprocess.run(
        [
            *PARLEY,
            *("loadgen", "connect", "1", "--url", "ws://192.0.2.1:1/ws"),
            *("--data-dir", str(node.data_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "only drives a node on this machine" in done.stderr


@pytest.mark.parametrize("mode", ["connect"])
def test_mode_help(mode: str) -> None:
    done = subprocess.run(
        [*PARLEY, "loadgen", mode, "--help"], capture_output=True, text=True, check=True
    )
    assert "--json" in done.stdout
