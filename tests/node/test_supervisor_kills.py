"""Killing a supervisor of the node's tree with ``parley inspect kill``, clients connected.

``gateway`` (its listener and the ``connections`` supervisor, both registered), ``connections``,
``conversations`` and ``sessions`` (registered dynamic supervisors with many children) are each
killed with the untrappable ``kill`` while devices are connected and chatting. Their old children
still hold their registered names while they stop; the root must wait for them rather than fail
the restart until it gives up. The node stays up, the devices reconnect and chat, and nothing
acked is lost.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from websockets.exceptions import ConnectionClosed

from gateway._cli import main
from tests.inspector.conftest import wait_for_socket

from ._node import Client, Connector, running_node, unique
from .test_messaging import direct

#: Seconds any one wait may take (real time: a real node process).
WAIT = 30.0
#: Devices connected beside the two that chat, so the supervisors have children to stop.
CROWD = 20
ENV = {"PARLEY_LIMITS__SEND_RATE": "100000", "PARLEY_LIMITS__SEND_BURST": "10000"}


def inspect(socket: Path, *args: str) -> str:
    """``parley inspect --node SOCKET ARGS`` in-process; its stdout (exit code 0 asserted)."""
    result = CliRunner().invoke(main, ["inspect", "--node", str(socket), *args])
    assert result.exit_code == 0, result.output
    return result.output


def walk(entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield entry
    for child in entry["children"]:
        yield from walk(child)


def tree(socket: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(inspect(socket, "tree", "--depth", "2", "--json"))
    return found


def entry(socket: Path, child_id: str) -> dict[str, Any] | None:
    return next((e for e in walk(tree(socket)) if e["id"] == child_id), None)


def until(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {WAIT} s: {what}")


def send(client: Client, conv: str, cmid: str) -> dict[str, Any] | None:
    """The ack of ``cmid``, resent (the same cmid) while the node answers ``unavailable``; None
    when the connection closes first (the send's outcome is then unknown)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            reply = client.request({"type": "send", "conv": conv, "cmid": cmid, "body": cmid})
        except (ConnectionClosed, TimeoutError):
            return None
        if reply["type"] == "ack":
            return reply
        assert reply["type"] == "error", reply
        assert reply["code"] == "unavailable", reply
        time.sleep(reply.get("retry_after", 0.1))
    raise AssertionError(f"{cmid} was never acked")


def connected(connect: Connector, user: str) -> Client:
    """A device of ``user``, connecting again until the node takes it (the listener or the
    connections supervisor may be restarting). A restarted listener listens on a new port
    (``--port 0``): read it again from the node's ``node.json``, as a deployment's discovery
    would."""
    node = connect.node

    def attempt() -> Client | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            node.port = json.loads((node.data_dir / "node.json").read_text())["port"]
        try:
            return connect(user)
        except (ConnectionClosed, OSError, AssertionError):
            return None

    client: Client = until(attempt, f"{user} connects")
    return client


def history(client: Client, conv: str) -> list[tuple[str, int]]:
    """(id, seq) of every message stored in ``conv``, in seq order."""
    found: list[tuple[str, int]] = []
    before: int | None = None
    while True:
        frame: dict[str, Any] = {"type": "history", "conv": conv, "limit": 50}
        if before is not None:
            frame["before"] = before
        reply = client.request(frame)
        assert reply["type"] == "history", reply
        found = [(m["id"], m["seq"]) for m in reply["messages"]] + found
        if not reply["more"] or not reply["messages"]:
            return found
        before = reply["messages"][0]["seq"]


def test_the_node_survives_its_supervisors_killed_one_at_a_time(tmp_path: Path) -> None:
    """One kill each, in this order: the root restarts gateway, conversations and sessions
    (3 restarts, its intensity in 10 s); the new gateway restarts connections."""
    ann, ben = unique("ann"), unique("ben")
    with running_node(tmp_path / "data", ENV) as node, contextlib.ExitStack() as stack:
        socket = wait_for_socket(node.data_dir / "admin.sock")
        connect = Connector(node, stack)
        a, b = connect(ann), connect(ben)
        conv = direct(a, ben)["conv"]
        acked: list[dict[str, Any]] = []
        root = entry(socket, "root")
        assert root is not None
        for round_, victim in enumerate(("gateway", "connections", "conversations", "sessions")):
            # A crowd of devices with their conversations and sessions, for the victim to stop.
            crowd = [connected(connect, unique("crowd")) for _ in range(CROWD)]
            for n, device in enumerate(crowd):
                send(device, direct(device, ann)["conv"], f"hello{n}")
            for n in range(5):
                ack = send(a, conv, f"{victim}-before{n}")
                assert ack is not None
                acked.append(ack)
            old = entry(socket, victim)
            assert old is not None
            assert old["status"] != "stopped"

            inspect(socket, "kill", str(old["pid"]))

            def restarted(victim: str = victim, old: dict[str, Any] = old) -> Any:
                new = entry(socket, victim)
                return new is not None and new["pid"] != old["pid"] and new["status"] != "stopped"

            until(restarted, f"{victim} is restarted")
            now_root = entry(socket, "root")
            assert now_root is not None
            assert now_root["pid"] == root["pid"]
            assert node.proc is not None
            assert node.proc.poll() is None, node.log()
            # The devices carry on, on the connection they had or on a new one, resending an
            # unacked cmid after a reconnect.
            for n in range(5):
                cmid = f"{victim}-after{n}"
                ack = send(a, conv, cmid)
                while ack is None:
                    a = connected(connect, ann)
                    ack = send(a, conv, cmid)
                acked.append(ack)
            assert len(acked) == 10 * (round_ + 1)
        assert "supervisor_gave_up" not in node.log()
        b = connected(connect, ben)
        stored = history(b, conv)
        assert [seq for _, seq in stored] == list(range(1, len(stored) + 1))
        assert {(ack["id"], ack["seq"]) for ack in acked} <= set(stored)
        assert node.proc is not None
        assert node.proc.poll() is None, node.log()
