"""The node's life: SIGTERM drains (1012) and SIGKILL loses nothing acknowledged."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from ._node import Connector, NodeProcess, running_node, unique
from .test_messaging import direct, send


def test_sigterm_closes_with_1012_and_a_restart_keeps_history(data_dir: Path) -> None:
    ann, ben = unique("ann"), unique("ben")
    with running_node(data_dir) as node, contextlib.ExitStack() as stack:
        connect = Connector(node, stack)
        a, b = connect(ann), connect(ben)
        conv = direct(a, ben)["conv"]
        acks = [send(a, conv, f"m{i}") for i in range(5)]
        assert node.signal(signal.SIGTERM) == 0
        assert a.close_code() == 1012
        assert b.close_code() == 1012
        assert "draining" in node.log()
    with running_node(data_dir) as node, contextlib.ExitStack() as stack:
        a = Connector(node, stack)(ann)
        history = a.request({"type": "history", "conv": conv})
        assert [(m["id"], m["seq"]) for m in history["messages"]] == [
            (ack["id"], ack["seq"]) for ack in acks
        ]


def test_sigkill_after_acks_loses_nothing_and_seqs_continue(data_dir: Path) -> None:
    ann, ben = unique("ann"), unique("ben")
    with running_node(data_dir) as node, contextlib.ExitStack() as stack:
        a = Connector(node, stack)(ann)
        conv = direct(a, ben)["conv"]
        acks = [send(a, conv, f"m{i}") for i in range(12)]
        assert node.signal(signal.SIGKILL) == -signal.SIGKILL
    with running_node(data_dir) as node, contextlib.ExitStack() as stack:
        connect = Connector(node, stack)
        b = connect(ben, synced=False)
        synced = [b.recv() for _ in range(13)]
        assert [m["id"] for m in synced[:12]] == [ack["id"] for ack in acks]
        assert synced[12] == {"type": "synced", "convs": {conv: 12}}
        a = connect(ann)
        again = send(a, conv, "m11")  # a resend after the crash: the same ack
        assert (again["id"], again["seq"]) == (acks[11]["id"], 12)
        assert send(a, conv, "m12")["seq"] == 13


def test_node_json_names_the_running_process(data_dir: Path) -> None:
    with running_node(data_dir) as node:
        assert isinstance(node, NodeProcess)
        assert node.port > 0
        assert f"listening on ws://127.0.0.1:{node.port}/ws" in node.log()
