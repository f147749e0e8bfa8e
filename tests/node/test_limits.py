"""Limits and close codes against a node with small limits: 429, rate limit, sizes, bad frames,
device replacement, group cap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from websockets.exceptions import InvalidStatus

from ._node import Connector, NodeProcess, running_node, unique
from .test_groups import group
from .test_messaging import direct, send

LIMITS = {
    "PARLEY_LIMITS__MAX_CONNECTIONS_PER_USER": "2",
    "PARLEY_LIMITS__SEND_RATE": "60",
    "PARLEY_LIMITS__SEND_BURST": "3",
    "PARLEY_LIMITS__MAX_FRAME": "2048",
    "PARLEY_LIMITS__MAX_BODY": "1024",
    "PARLEY_LIMITS__BAD_FRAMES": "3",
    "PARLEY_LIMITS__MAX_GROUP": "3",
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("limits") / "data", LIMITS) as process:
        yield process


def test_over_the_connection_limit_gets_429_but_a_device_may_reconnect(
    connect: Connector, node: NodeProcess
) -> None:
    user = unique("ann")
    connect(user, "one")
    two = connect(user, "two")
    with pytest.raises(InvalidStatus) as info:
        connect(user, "three")
    assert info.value.response.status_code == 429
    replacement = connect(user, "two")  # the same device replaces, within the limit
    assert two.close_code() == 4009
    assert replacement.request({"type": "ping"})["type"] == "pong"


def test_sending_faster_than_the_rate_is_refused_with_retry_after(connect: Connector) -> None:
    ann, ben = unique("ann"), unique("ben")
    a = connect(ann)
    conv = direct(a, ben)["conv"]
    for i in range(3):
        assert send(a, conv, f"m{i}")["type"] == "ack"
    refused = send(a, conv, "m3")
    assert refused["code"] == "rate_limited"
    assert 0 < refused["retry_after"] <= 1.0


def test_a_body_over_max_body_is_too_large(connect: Connector) -> None:
    ann, ben = unique("ann"), unique("ben")
    a = connect(ann)
    conv = direct(a, ben)["conv"]
    assert send(a, conv, "big", "x" * 1500)["code"] == "too_large"


def test_a_frame_over_max_frame_closes_with_1009(connect: Connector) -> None:
    a = connect(unique("ann"))
    a.ws.send(msgpack.packb({"type": "ping", "pad": "x" * 3000}))
    assert a.close_code() == 1009


def test_bad_frames_get_errors_then_1008(connect: Connector) -> None:
    a = connect(unique("ann"))
    a.ws.send(b"\xc1 not msgpack")
    assert a.recv()["code"] == "bad_request"
    a.send({"type": "send", "ref": "x1"})  # fields missing
    reply = a.recv()
    assert (reply["code"], reply["ref"]) == ("bad_request", "x1")
    assert a.request({"type": "ping"})["type"] == "pong"  # a good frame resets the count
    for _ in range(2):
        a.send({"type": "no.such.type"})
        assert a.recv()["code"] == "bad_request"
    a.send({"nope": 1})
    assert a.recv()["code"] == "bad_request"
    assert a.close_code() == 1008


def test_groups_are_capped(connect: Connector) -> None:
    ann, ben, cat, dan = (unique(n) for n in ("ann", "ben", "cat", "dan"))
    a = connect(ann)
    refused = a.request(
        {"type": "conv.create", "kind": "group", "title": "t", "members": [ben, cat, dan]}
    )
    assert refused["code"] == "too_large"
    conv = group(a, "t", [ben, cat])["conv"]
    assert a.request({"type": "conv.add", "conv": conv, "users": [dan]})["code"] == "too_large"


def test_data_dir_holds_node_json(node: NodeProcess) -> None:
    assert (Path(node.data_dir) / "node.json").exists()
