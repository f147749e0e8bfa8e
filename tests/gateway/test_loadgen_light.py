"""The load generator's light client: its framing, sans-IO, and a held connection against a
trio-websocket server that pings it."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
from wsproto.events import AcceptConnection, BytesMessage, Request

from gateway._loadgen_light import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    LightError,
    client_frame,
    echo_done,
    hold_light,
    parley_done,
    upgrade_request,
)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """trio only (the light client is trio-native), in virtual time that jumps only once real
    sockets have been idle a little while (as tests/client does)."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0.02)})


def server_frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", 0x80 | opcode, size) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65_535, 65_536])
def test_reader_splits_frames_fed_byte_by_byte(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    wire = server_frame(TEXT, payload) + server_frame(PING, b"p")
    reader = FrameReader()
    frames = []
    step = 1 if size < 300 else 4096
    for i in range(0, len(wire), step):
        frames += reader.feed(wire[i : i + step])
    assert [(f.opcode, f.payload) for f in frames] == [(TEXT, payload), (PING, b"p")]


@pytest.mark.parametrize("size", [0, 3, 200, 70_000])
def test_client_frames_are_masked_and_a_server_reads_them(size: int) -> None:
    payload = b"x" * size
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    server.receive_data(upgrade_request("h", 1, "/", token=None, subprotocol=None))
    assert [type(e) for e in server.events()] == [Request]
    server.send(AcceptConnection())
    frame = client_frame(0x2, payload)
    assert frame[1] & 0x80  # masked
    server.receive_data(frame)
    got = b"".join(e.data for e in server.events() if isinstance(e, BytesMessage))
    assert got == payload
    server.receive_data(client_frame(PONG, b"hi") + client_frame(CLOSE, b"\x03\xe8"))
    kinds = [type(e).__name__ for e in server.events()]
    assert kinds == ["Pong", "CloseConnection"]


def test_upgrade_request_carries_token_and_subprotocol() -> None:
    request = upgrade_request("127.0.0.1", 8765, "/ws", token="T", subprotocol="p.v1")
    head = request.decode()
    assert head.startswith("GET /ws HTTP/1.1\r\n")
    assert "Authorization: Bearer T\r\n" in head
    assert "Sec-WebSocket-Protocol: p.v1\r\n" in head
    assert head.endswith("\r\n\r\n")
    bare = upgrade_request("h", 1, "/", token=None, subprotocol=None).decode()
    assert "Authorization" not in bare
    assert "Protocol" not in bare


def test_done_predicates() -> None:
    reader = FrameReader()
    welcome, synced = reader.feed(
        server_frame(0x2, b"\x81\xa4type\xa7welcome") + server_frame(0x2, b"\x81\xa4type\xa6synced")
    )
    assert not parley_done(welcome)
    assert parley_done(synced)
    assert echo_done(welcome)


async def _serve(handler: trio_websocket.Handler, nursery: trio.Nursery) -> int:
    server: trio_websocket.WebSocketServer = await nursery.start(
        trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
    )
    return server.port


@pytest.mark.anyio
async def test_holds_answers_pings_and_ends_on_close() -> None:
    pinged = trio.Event()
    opened = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        assert await ws.get_message() == "hello"
        await ws.send_message("hello")
        with trio.fail_after(5):
            await ws.ping(b"are you there")  # returns once the pong came
        pinged.set()
        await ws.aclose(1000, "bye")

    async with trio.open_nursery() as nursery:
        port = await _serve(handler, nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = upgrade_request("127.0.0.1", port, "/", token=None, subprotocol=None)
        with trio.fail_after(10):
            await hold_light(
                stream, request, greeting=b"hello", done=echo_done, opened=lambda: opened.append(1)
            )
        assert opened == [1]
        assert pinged.is_set()
        nursery.cancel_scope.cancel()


@pytest.mark.anyio
async def test_refused_upgrade_raises() -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(401, body=b"no")

    async with trio.open_nursery() as nursery:
        port = await _serve(handler, nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = upgrade_request("127.0.0.1", port, "/", token=None, subprotocol=None)
        with pytest.raises(LightError, match="401"), trio.fail_after(10):
            await hold_light(stream, request, greeting=None, done=echo_done, opened=lambda: None)
        nursery.cancel_scope.cancel()


@pytest.mark.anyio
async def test_close_before_done_raises() -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(4001, "go away")

    async with trio.open_nursery() as nursery:
        port = await _serve(handler, nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = upgrade_request("127.0.0.1", port, "/", token=None, subprotocol=None)
        with pytest.raises(LightError, match="closed during the handshake"), trio.fail_after(10):
            await hold_light(stream, request, greeting=None, done=parley_done, opened=lambda: None)
        nursery.cancel_scope.cancel()
