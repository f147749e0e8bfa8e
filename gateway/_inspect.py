"""The client side of ``parley inspect``: a small blocking client of the admin endpoint.

Blocking sockets suit a command that asks one thing and prints it; it is also what a script
would write. Requests go out as one JSON line each; replies are read line by line (at most
``MAX_REPLY`` bytes a line). See docs/inspector.md for the wire format.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

#: Longest reply line read, in bytes (a tree of a big node is large).
MAX_REPLY: Final = 64 * 1024 * 1024
#: Seconds to connect.
CONNECT_TIMEOUT: Final = 5.0
#: Seconds to wait for a non-streamed reply (a restart may wait out a child's shutdown).
REPLY_TIMEOUT: Final = 60.0

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")


class InspectError(Exception):
    """The root of the client's errors."""


class ConnectFailed(InspectError):
    """The endpoint could not be reached; ``target`` is the path or address tried."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"cannot connect to {target}: {reason}")
        self.target = target


class RemoteError(InspectError):
    """The endpoint answered with an error: ``code`` is ``not_found``, ``refused``,
    ``bad_request`` or ``unauthorized``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProtocolFailure(InspectError):
    """The endpoint closed the connection or sent something that is not a reply."""


def parse_target(node: str) -> tuple[str, int] | Path:
    """``--node``: ``HOST:PORT`` → (host, port); anything else is a socket path."""
    match = _HOST_PORT.fullmatch(node)
    if match and "/" not in node:
        port = int(match["port"])
        if not 0 < port < 65536:
            raise ValueError(f"port out of range in {node!r}")
        return match["host"].strip("[]"), port
    return Path(node)


class AdminClient:
    """One connection to a node's admin endpoint. Use as a context manager.

    ``target`` is a socket path or (host, port); ``token`` is sent with every request (needed on
    TCP). Raises :class:`ConnectFailed` from the constructor when the endpoint is unreachable.
    """

    def __init__(self, target: tuple[str, int] | Path, token: str | None = None) -> None:
        self.target = target
        self.token = token
        #: Seconds :meth:`request` waits for a reply (None: as long as it takes).
        self.reply_timeout: float | None = REPLY_TIMEOUT
        self._ids = itertools.count(1)
        self._buffer = b""
        try:
            if isinstance(target, Path):
                self.describe = str(target)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(CONNECT_TIMEOUT)
                try:
                    sock.connect(str(target))
                except BaseException:
                    sock.close()
                    raise
            else:
                self.describe = f"{target[0]}:{target[1]}"
                sock = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise ConnectFailed(self.describe, exc.strerror or str(exc)) from exc
        self._sock = sock

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _send(self, op: str, args: dict[str, Any]) -> int:
        rid = next(self._ids)
        message: dict[str, Any] = {"id": rid, "op": op, "args": args}
        if self.token is not None:
            message["token"] = self.token
        self._sock.sendall((json.dumps(message) + "\n").encode())
        return rid

    def _line(self, timeout: float | None) -> dict[str, Any]:
        self._sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY:
                raise ProtocolFailure("reply line too long")
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError as exc:
                raise ProtocolFailure("no reply in time") from exc
            if not data:
                raise ProtocolFailure("the node closed the connection")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ProtocolFailure(f"not a reply: {line[:200]!r}")
        return reply

    def request(self, op: str, **args: Any) -> Any:
        """Send one request and return its ``result``.

        Raises:
            RemoteError: the endpoint answered with an error.
            ProtocolFailure: no reply within ``reply_timeout`` seconds (default
                ``REPLY_TIMEOUT``), or a broken reply.
        """
        rid = self._send(op, args)
        reply = self._line(self.reply_timeout)
        return _result(reply, rid)

    def stream(self, op: str, **args: Any) -> Iterator[Any]:
        """Send a streamed request; yield each ``event`` until ``done``. Closing the client
        (or the process) while iterating ends the stream on the node.

        Raises:
            RemoteError: the endpoint answered with an error.
        """
        rid = self._send(op, args)
        while True:
            reply = self._line(None)
            if "event" in reply and reply.get("id") == rid:
                yield reply["event"]
                continue
            _result(reply, rid)
            return


def _result(reply: dict[str, Any], rid: int) -> Any:
    if reply.get("ok") is False:
        err = reply.get("error") or {}
        raise RemoteError(str(err.get("code")), str(err.get("message")))
    if reply.get("id") != rid or reply.get("ok") is not True:
        raise ProtocolFailure(f"unexpected reply {reply!r}"[:300])
    return reply.get("result")
