"""The handshake against a real node: auth (401), subprotocols (400), the path, welcome."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from ._node import Connector, NodeProcess, unique


def status_of(connect: Connector, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        connect.raw(**kwargs)  # type: ignore[arg-type]
    return info.value.response.status_code


def test_missing_bad_and_expired_tokens_get_401(connect: Connector, node: NodeProcess) -> None:
    assert status_of(connect) == 401
    assert status_of(connect, headers={"Authorization": "Basic abc"}) == 401
    assert status_of(connect, query="?token=not-a-jwt") == 401
    forged = NodeProcess(node.data_dir)
    forged.secret = b"x" * 32
    assert status_of(connect, query=f"?token={forged.token('mallory')}") == 401
    expired = node.token("alice", ttl=0.001)
    assert status_of(connect, query=f"?token={expired}") == 401


def test_unknown_subprotocols_only_get_400(connect: Connector, node: NodeProcess) -> None:
    token = node.token(unique("carol"))
    assert status_of(connect, query=f"?token={token}", subprotocols=["chat.v9"]) == 400


def test_wrong_path_is_refused(connect: Connector, node: NodeProcess) -> None:
    assert status_of(connect, path="/other", query=f"?token={node.token('dave')}") == 404


def test_welcome_over_json_with_a_query_token(connect: Connector, node: NodeProcess) -> None:
    user = unique("erin")
    ws = connect.raw(query=f"?token={node.token(user, 'tablet')}")
    assert ws.subprotocol is None  # nothing offered: json without the header
    from ._node import Client

    client = Client(ws, user, "tablet")
    welcome = client.recv()
    assert welcome["type"] == "welcome"
    assert (welcome["user"], welcome["device"]) == (user, "tablet")
    assert welcome["max_frame"] == 65536
    assert welcome["heartbeat"] > 0
    assert isinstance(welcome["session"], str)
    assert isinstance(welcome["server_time"], int)
    assert client.recv() == {"type": "synced", "convs": {}}


def test_msgpack_is_preferred_when_offered(connect: Connector, node: NodeProcess) -> None:
    ws = connect.raw(
        headers={"Authorization": f"Bearer {node.token(unique('fay'))}"},
        subprotocols=["parley.v1.json", "parley.v1.msgpack"],
    )
    assert ws.subprotocol == "parley.v1.msgpack"
    assert isinstance(ws.recv(timeout=10), bytes)


def test_ping_pong(connect: Connector) -> None:
    client = connect(unique("gus"), proto="parley.v1.json")
    pong = client.request({"type": "ping"})
    assert pong["type"] == "pong"
    assert isinstance(pong["server_time"], int)
    client.send({"type": "ping"})
    assert set(client.expect("pong")) == {"type", "server_time"}
