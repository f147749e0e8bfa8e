"""The load generator's light client: a WebSocket client that costs next to nothing per connection.

It exists so that a handshake benchmark measures the server, not its clients: Parley's client
library (trio-websocket, wsproto, a reader task, frame decoding) spends about as much CPU per
handshake as the node does, and the load generator's workers share the node's cores. The light
client does only what holding a connection needs:

- its upgrade requests are prebuilt (token, key and subprotocol formatted before the timed phase);
- it writes one on a raw trio socket, reads up to the ``101`` status line, then reads frames
  until the one that completes the handshake (``synced`` for a Parley node; the echo of one
  ``hello`` for a bare echo server), without checking ``Sec-WebSocket-Accept``;
- while held it answers pings with pongs and a close with a close, and ignores everything else.

The framing here is a minimal sans-IO reader (:class:`FrameReader`) and writer
(:func:`client_frame`) of RFC 6455: no extensions, no fragmented control frames. Never use it as
a client of anything but a load test.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import trio

from ._codec import SUBPROTOCOL_MSGPACK

__all__ = [
    "CLOSE",
    "PING",
    "PONG",
    "TEXT",
    "FrameReader",
    "LightError",
    "client_frame",
    "hold_light",
    "upgrade_request",
]

TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA
#: Bytes read from the socket at a time.
_READ: Final = 16_384
#: Largest response head accepted before the ``101``.
_MAX_HEAD: Final = 16_384


class LightError(Exception):
    """The server refused the upgrade or broke the framing (the message says which)."""


def upgrade_request(
    host: str, port: int, path: str, *, token: str | None, subprotocol: str | None
) -> bytes:
    """The HTTP/1.1 upgrade request for ``ws://host:port/path``, as bytes to write as is.

    ``token`` goes in ``Authorization: Bearer``; ``subprotocol`` (None: none offered) in
    ``Sec-WebSocket-Protocol``. The key is random, as RFC 6455 asks.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final, masked client frame (client frames must be masked)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    payload: bytes


class FrameReader:
    """Sans-IO: :meth:`feed` server bytes, get the complete frames so far. Continuation frames
    come out with opcode 0 (a data frame's later parts); nothing is reassembled."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf + data
        frames: list[Frame] = []
        pos = 0
        while len(buf) - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            size = second & 0x7F
            at = pos + 2
            if size == 126:
                if len(buf) - at < 2:
                    break
                (size,) = struct.unpack_from("!H", buf, at)
                at += 2
            elif size == 127:
                if len(buf) - at < 8:
                    break
                (size,) = struct.unpack_from("!Q", buf, at)
                at += 8
            mask = b""
            if second & 0x80:  # servers must not mask; unmask anyway
                if len(buf) - at < 4:
                    break
                mask = buf[at : at + 4]
                at += 4
            if len(buf) - at < size:
                break
            payload = buf[at : at + size]
            if mask:
                payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
            frames.append(Frame(first & 0x0F, payload))
            pos = at + size
        self._buf = buf[pos:]
        return frames


async def _read_head(stream: trio.SocketStream) -> bytes:
    """Read the response head; raise LightError unless it is ``101``. Returns the bytes after
    the head (the first frames may come in the same segment)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(_READ)
        if not data:
            raise LightError("the server closed the connection during the handshake")
        buf += data
        if len(buf) > _MAX_HEAD:
            raise LightError("response head too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 101"):
        raise LightError(f"upgrade refused: {status.decode('latin-1', 'replace')[:100]}")
    return rest


async def hold_light(
    stream: trio.SocketStream,
    request: bytes,
    *,
    greeting: bytes | None,
    done: Callable[[Frame], bool],
    opened: Callable[[], None],
) -> None:
    """Upgrade ``stream`` with ``request``, send ``greeting`` as a text frame (None: nothing),
    read frames until ``done(frame)`` is true, call ``opened()``, then hold the connection,
    answering pings and a close, until the server ends it (cancel to let go). Closes
    ``stream``. Checkpoints.

    Raises:
        LightError: the upgrade was refused, or the server closed before ``done``.
        OSError, trio.BrokenResourceError: the socket failed.
    """
    try:
        await stream.send_all(request)
        reader = FrameReader()
        pending = reader.feed(await _read_head(stream))
        if greeting is not None:
            await stream.send_all(client_frame(TEXT, greeting))
        complete = False
        while True:
            for frame in pending:
                if frame.opcode == PING:
                    await stream.send_all(client_frame(PONG, frame.payload))
                elif frame.opcode == CLOSE:
                    await stream.send_all(client_frame(CLOSE, frame.payload[:2]))
                    if not complete:
                        raise LightError(f"closed during the handshake: {frame.payload!r}")
                    return
                elif not complete and done(frame):
                    complete = True
                    opened()
            data = await stream.receive_some(_READ)
            if not data:
                if not complete:
                    raise LightError("the server closed the connection during the handshake")
                return
            pending = reader.feed(data)
    finally:
        await trio.aclose_forcefully(stream)


def parley_done(frame: Frame) -> bool:
    """The frame that completes a Parley handshake: ``synced`` (after ``welcome`` and the
    connect-time sync). Found by its type string, which both codecs carry verbatim."""
    return frame.opcode in (TEXT, BINARY) and b"synced" in frame.payload


def echo_done(frame: Frame) -> bool:
    """The frame that completes a bare echo server's handshake: the echo of the greeting."""
    return frame.opcode in (TEXT, BINARY)


#: What the light client offers a Parley node.
PARLEY_SUBPROTOCOL: Final = SUBPROTOCOL_MSGPACK
