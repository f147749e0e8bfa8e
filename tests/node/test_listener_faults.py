"""The listener survives the connections supervisor dying under a handshake (found by the chaos
harness: a kill of ``connections`` also restarted the listener, outside rest_for_one's subtree)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway._inspect import AdminClient

from ._node import Connector, running_node, unique


def _gateway_children(admin: AdminClient) -> dict[str, Any]:
    tree = admin.request("tree", depth=None)
    gateway = next(c for c in tree["children"] if c["id"] == "gateway")
    return {c["id"]: c["pid"] for c in gateway["children"]}


def _restarted(admin: AdminClient, child: str, before: dict[str, Any]) -> dict[str, Any]:
    """The gateway's children once ``child`` has a new pid (within 5 s)."""
    deadline = time.monotonic() + 5
    after = _gateway_children(admin)
    while after.get(child) in (None, before[child]):
        assert time.monotonic() < deadline, after
        time.sleep(0.05)
        after = _gateway_children(admin)
    return after


def test_a_dying_connections_supervisor_does_not_crash_the_listener(data_dir: Path) -> None:
    with running_node(data_dir) as node, contextlib.ExitStack() as stack:
        connect = Connector(node, stack)
        admin = stack.enter_context(AdminClient(data_dir / "admin.sock"))
        before = _gateway_children(admin)
        # A suspended supervisor holds the listener's start_child call until it dies.
        admin.request("suspend", ref="connections")
        outcome: list[object] = []

        def handshake() -> None:
            try:
                client = connect(unique("ann"), synced=False)
                outcome.append(client.close_code(timeout=10))
            except (ConnectionClosed, InvalidStatus, OSError, AssertionError) as exc:
                outcome.append(exc)

        thread = threading.Thread(target=handshake)
        thread.start()
        time.sleep(0.5)  # the upgrade is accepted and start_child waits on the supervisor
        admin.request("kill", ref="connections")
        thread.join(15)
        assert outcome, "the handshake neither failed nor closed"
        after = _restarted(admin, "connections", before)
        # rest_for_one: the killed child is the last, so only it restarts
        assert after["listener"] == before["listener"], node.log()[-3000:]
        assert "actor_crashed" not in node.log()
        # and the node takes connections again
        assert connect(unique("ben")).user


def test_a_restarted_listener_binds_the_port_it_had(data_dir: Path) -> None:
    # The node runs with --port 0: the port is the one the first listener picked.
    with running_node(data_dir) as node, contextlib.ExitStack() as stack:
        connect = Connector(node, stack)
        admin = stack.enter_context(AdminClient(data_dir / "admin.sock"))
        before = _gateway_children(admin)
        admin.request("kill", ref="gateway.listener")
        _restarted(admin, "listener", before)
        deadline = time.monotonic() + 5
        # Clients reconnect where the node was (node.url is the port it first announced), once
        # the new listener has bound it (its pid shows in the tree before that).
        while True:
            try:
                assert connect(unique("cat")).user
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, node.log()[-3000:]
                time.sleep(0.05)
