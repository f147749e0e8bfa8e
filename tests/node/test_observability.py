"""The node's /metrics and /healthz endpoint, against a real node process."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ._node import Connector, NodeProcess, running_node, unique
from .test_messaging import direct, send

_URL = re.compile(r"metrics on (http://127\.0\.0\.1:\d+)/metrics")


def endpoint(node: NodeProcess) -> str:
    """The node's metrics base URL, from its log line (the port is picked by the OS)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = _URL.search(node.log())
        if found:
            return found.group(1)
        time.sleep(0.02)
    raise AssertionError(f"no metrics line in the log: {node.log()}")


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, body = get(f"{base}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str]]:
    data = tmp_path_factory.mktemp("observed") / "data"
    with running_node(data, {"PARLEY_METRICS__PORT": "0"}) as node:
        yield node, endpoint(node)


def test_healthz_reports_the_tree_and_storage(observed: tuple[NodeProcess, str]) -> None:
    _, base = observed
    status, ctype, body = get(f"{base}/healthz")
    assert (status, ctype) == (200, "application/json")
    report = json.loads(body)
    assert report["status"] == "ok"
    assert report["storage"] == {"storage.shard.0": "ok"}
    assert set(report["tree"]) == {
        "metrics",
        "storage",
        "presence",
        "conversations",
        "sessions",
        "gateway",
        "chaos",
        "admin",
    }


def test_unknown_paths_methods_and_oversized_requests(observed: tuple[NodeProcess, str]) -> None:
    _, base = observed
    assert get(f"{base}/nope")[0] == 404
    request = urllib.request.Request(f"{base}/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    caught.value.close()
    assert caught.value.code == 405
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        head = sock.recv(100)
    assert head.startswith(b"HTTP/1.1 431"), head


def test_metrics_count_handshakes_and_messages(observed: tuple[NodeProcess, str]) -> None:
    node, base = observed
    before = samples(base)
    ann, ben = unique("ann"), unique("ben")
    with contextlib.ExitStack() as stack:
        connect = Connector(node, stack)
        a, b = connect(ann), connect(ben)
        with pytest.raises(Exception, match="401"):
            connect.raw(headers={"Authorization": "Bearer nope"})
        conv = direct(a, ben)["conv"]
        for i in range(3):
            send(a, conv, f"m{i}")
        assert [b.expect("msg")["seq"] for _ in range(3)] == [1, 2, 3]
        after = samples(base)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("parley_handshakes_total", outcome="accepted") == 2
    assert delta("parley_handshakes_total", outcome="unauthorized") == 1
    assert delta("parley_messages_in_total") == 3
    assert delta("parley_messages_out_total") == 3
    assert delta("parley_ack_latency_seconds_count") == 3
    assert delta("parley_delivery_latency_seconds_count") == 3
    assert after[("parley_connections", ())] == 2
    assert after[("parley_storage_commits_total", (("shard", "storage.shard.0"),))] >= 3
    assert delta("parley_storage_commit_latency_seconds_count") >= 3
    assert after[("parley_storage_breaker_open", (("shard", "storage.shard.0"),))] == 0
    assert after[("parley_actors", (("status", "waiting"),))] > 0
    assert after[("parley_mailbox_high_water_mark", ())] >= 1
    assert ("parley_supervisor_restarts_total", (("supervisor", "root"),)) in after


def test_a_busy_metrics_port_does_not_stop_the_node(
    observed: tuple[NodeProcess, str], data_dir: Path
) -> None:
    _, base = observed
    port = base.rsplit(":", 1)[1]
    with (
        running_node(data_dir, {"PARLEY_METRICS__PORT": port}) as node,
        contextlib.ExitStack() as s,
    ):
        a = Connector(node, s)(unique("ann"))
        assert a.request({"type": "ping"})["type"] == "pong"
        assert "metrics_bind_failed" in node.log()
