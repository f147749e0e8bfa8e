"""The node on PostgreSQL storage: messaging, restart after SIGKILL, nothing acked lost."""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import require_service
from tests.storage.conftest import _probe, drop_postgres_schema, postgres_url

from ._node import Connector, running_node, unique
from .test_groups import group
from .test_messaging import direct, send

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"node_{uuid.uuid4().hex[:12]}"
    url = postgres_url(schema)
    require_service("postgresql", trio.run(_probe, url))
    try:
        yield url
    finally:
        trio.run(drop_postgres_schema, schema)


def test_messages_survive_sigkill_on_postgresql(pg_url: str, data_dir: Path) -> None:
    env = {"PARLEY_STORAGE__URL": pg_url}
    ann, ben, cat = unique("ann"), unique("ben"), unique("cat")
    with running_node(data_dir, env) as node, contextlib.ExitStack() as stack:
        connect = Connector(node, stack)
        a, b = connect(ann), connect(ben)
        conv = direct(a, ben)["conv"]
        acks = [send(a, conv, f"m{i}") for i in range(5)]
        assert [b.expect("msg")["seq"] for _ in range(5)] == [1, 2, 3, 4, 5]
        room = group(a, "pg", [ben, cat])["conv"]
        assert send(b, room, "g1")["seq"] == 1
        node.signal(signal.SIGKILL)
    with running_node(data_dir, env) as node, contextlib.ExitStack() as stack:
        c = Connector(node, stack)(cat, synced=False)
        assert c.recv()["cmid"] == "g1"
        assert c.recv() == {"type": "synced", "convs": {room: 1}}
        a = Connector(node, stack)(ann)
        history = a.request({"type": "history", "conv": conv})
        assert [m["id"] for m in history["messages"]] == [ack["id"] for ack in acks]
        assert send(a, conv, "m5")["seq"] == 6
