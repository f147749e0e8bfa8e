"""The node on Cassandra storage: two users, send/ack/msg/history, SIGKILL and restart with
nothing acknowledged lost and seqs continuing."""

from __future__ import annotations

import contextlib
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import require_service
from tests.storage.conftest import _probe, cassandra_url, drop_cassandra_keyspace

from ._node import Connector, running_node, unique
from .test_messaging import direct, send

pytestmark = pytest.mark.integration


@pytest.fixture
def cassandra() -> Iterator[str]:
    keyspace = f"node_{secrets.token_hex(6)}"  # a fresh keyspace per run, dropped after
    url = cassandra_url(keyspace)
    error = trio.run(_probe, url)
    require_service("cassandra", error)
    try:
        yield url
    finally:
        drop_cassandra_keyspace(keyspace)


def test_messages_survive_sigkill_on_cassandra(cassandra: str, data_dir: Path) -> None:
    env = {"PARLEY_STORAGE__URL": cassandra}
    ann, ben = unique("ann"), unique("ben")
    with running_node(data_dir, env) as node, contextlib.ExitStack() as stack:
        connect = Connector(node, stack)
        a, b = connect(ann), connect(ben)
        conv = direct(a, ben)["conv"]
        acks = [send(a, conv, f"m{i}") for i in range(6)]
        assert [ack["seq"] for ack in acks] == [1, 2, 3, 4, 5, 6]
        got = [b.expect("msg") for _ in range(6)]
        assert [m["id"] for m in got] == [ack["id"] for ack in acks]
        assert send(b, conv, "reply")["seq"] == 7
        history = b.request({"type": "history", "conv": conv, "limit": 3})
        assert [m["seq"] for m in history["messages"]] == [5, 6, 7]
        assert history["more"] is True
        node.signal(signal.SIGKILL)
    with running_node(data_dir, env) as node, contextlib.ExitStack() as stack:
        connect = Connector(node, stack)
        a = connect(ann, synced=False)
        synced = [a.recv() for _ in range(8)]  # no receipts were sent: everything comes back
        assert [m["seq"] for m in synced[:7]] == [1, 2, 3, 4, 5, 6, 7]
        assert [m["id"] for m in synced[:6]] == [ack["id"] for ack in acks]
        assert synced[7] == {"type": "synced", "convs": {conv: 7}}
        history = a.request({"type": "history", "conv": conv})
        assert [m["id"] for m in history["messages"][:6]] == [ack["id"] for ack in acks]
        again = send(a, conv, "m5")  # a resend after the crash: the same ack
        assert (again["id"], again["seq"]) == (acks[5]["id"], 6)
        assert send(a, conv, "m6")["seq"] == 8
