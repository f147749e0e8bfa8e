"""Slow consumers (4008) and heartbeats (a client that never answers pings is closed)."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from ._node import Client, Connector, NodeProcess, running_node, unique
from .test_messaging import direct, send

HEARTBEAT = 0.4


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    env = {"PARLEY_SERVER__HEARTBEAT": str(HEARTBEAT)}
    with running_node(tmp_path_factory.mktemp("heartbeat") / "data", env) as process:
        yield process


def test_a_device_that_stops_reading_is_closed_with_4008(data_dir: Path) -> None:
    env = {
        "PARLEY_LIMITS__SEND_RATE": "100000",
        "PARLEY_LIMITS__SEND_BURST": "1000",
        "PARLEY_LIMITS__OUTGOING_QUEUE": "4",
    }
    with running_node(data_dir, env) as node, contextlib.ExitStack() as stack:
        _stop_reading_until_4008(Connector(node, stack), node)


def _stop_reading_until_4008(connect: Connector, node: NodeProcess) -> None:
    fast, sloth = unique("fast"), unique("sloth")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    ws = connect.stack.enter_context(
        ws_connect(
            node.url,
            sock=sock,
            additional_headers={"Authorization": f"Bearer {node.token(sloth)}"},
            subprotocols=["parley.v1.msgpack"],  # type: ignore[list-item]
            max_queue=1,  # the library stops reading the socket once one message waits
            max_size=None,
        )
    )
    slow = Client(ws, sloth, "default")
    assert slow.recv()["type"] == "welcome"
    a = connect(fast)
    conv = direct(a, sloth)["conv"]
    for i in range(150):
        assert send(a, conv, f"m{i}", "x" * 16000)["type"] == "ack"
    code = slow.close_code(timeout=30)
    assert code == 4008, node.log()[-3000:]
    # Nothing is lost: the next connection syncs what was committed.
    again = connect(sloth, synced=False)
    seqs = [again.recv()["seq"] for _ in range(150)]
    assert seqs == list(range(1, 151))


def test_a_client_answering_pings_stays_connected(connect: Connector) -> None:
    a = connect(unique("ann"))
    time.sleep(HEARTBEAT * 5)
    assert a.request({"type": "ping"})["type"] == "pong"


def _frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    while len(data) >= 2:
        opcode, size, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if size == 126:
            (size,), offset = struct.unpack("!H", data[2:4]), 4
        elif size == 127:
            (size,), offset = struct.unpack("!Q", data[2:10]), 10
        yield opcode, data[offset : offset + size]
        data = data[offset + size :]


def test_a_client_that_never_answers_pings_is_closed(node: NodeProcess) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        raw.sendall(
            b"GET /ws?token=" + node.token(unique("mute")).encode() + b" HTTP/1.1\r\n"
            b"Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        received = b""
        started = time.monotonic()
        while chunk := raw.recv(65536):
            received += chunk
        elapsed = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    opcodes = [opcode for opcode, _ in _frames(body)]
    assert 0x9 in opcodes  # pinged
    close = next(payload for opcode, payload in _frames(body) if opcode == 0x8)
    assert struct.unpack("!H", close[:2])[0] == 1001
    assert HEARTBEAT * 2 <= elapsed < 30
