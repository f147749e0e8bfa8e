"""The client library's exceptions, under the gateway's one root (:class:`GatewayError`).

Whose fault, as the rest of the package says it: :class:`ServerError` is the server refusing a
request (its ``error`` frame); :class:`ServerProtocolError` is the server breaking the protocol;
:class:`ConnectError`/:class:`HandshakeRejected` and :class:`ConnectionClosedError` are about the
connection; :class:`RequestTimeout` is the client's own deadline passing.
"""

from __future__ import annotations

import trio

from ._errors import GatewayError
from ._frames import ErrorCode, Ref


class ServerError(GatewayError):
    """The server answered a request with ``error {ref, code, reason, retry_after?}``.

    Attributes:
        code: the contract's error code (``bad_request``, ``forbidden``, ``rate_limited``, ...).
        reason: the server's text, for people.
        retry_after: seconds to wait before retrying (``rate_limited``, ``unavailable``), or
            ``None``.
        ref: the request's ``ref``.
    """

    def __init__(
        self,
        code: ErrorCode,
        reason: str,
        retry_after: float | None = None,
        *,
        ref: Ref | None = None,
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        self.ref = ref

    def __repr__(self) -> str:
        return (
            f"ServerError({self.code.value!r}, {self.reason!r}, retry_after={self.retry_after!r})"
        )


class ServerProtocolError(GatewayError):
    """The server sent something the protocol does not allow (undecodable frame, missing or
    mistyped field, no ``welcome`` first). The client closes the connection with 1002."""


class ConnectError(GatewayError):
    """The connection could not be opened: network error, timeout, or a failed handshake."""


class HandshakeRejected(ConnectError):
    """The server refused the WebSocket upgrade with an HTTP status.

    Attributes:
        status_code: 400 (no supported subprotocol), 401 (token), 429 (too many connections) or
            whatever the server answered.
        body: the response body (for people).
    """

    def __init__(self, status_code: int, body: bytes = b"") -> None:
        shown = body.decode("utf-8", "replace").strip()[:200]
        super().__init__(f"HTTP {status_code}" + (f": {shown}" if shown else ""))
        self.status_code = status_code
        self.body = body


class ConnectionClosedError(GatewayError):
    """The connection is closed (or closed while a request waited for its reply).

    Attributes:
        code: the WebSocket close code (1000 normal, 1006 lost, 1008, 1009, 1012, 4008, 4009...).
        reason: the close reason (may be empty).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class RequestTimeout(GatewayError, trio.TooSlowError):
    """No reply came within the client's ``request_timeout`` (also a :class:`trio.TooSlowError`).

    The request may still take effect on the server: a ``send`` can be retried with the same
    ``cmid`` without storing the message twice.
    """
