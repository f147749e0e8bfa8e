"""The gateway's exceptions: one root, and a split by whose fault it is (as h11 does)."""

from __future__ import annotations

from ._frames import Error


class GatewayError(Exception):
    """Root of every exception the gateway package raises on purpose."""


class ProtocolError(GatewayError):
    """A protocol rule was broken. Subclasses say by whom.

    Attributes:
        error: the ``error`` event to send to the client before anything else, or ``None``.
        close_code: the WebSocket close code to close the connection with, or ``None`` when the
            connection stays open.
        http_status: during the handshake, the HTTP status to refuse the upgrade with, or ``None``.
    """

    def __init__(
        self,
        reason: str,
        *,
        error: Error | None = None,
        close_code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.close_code = close_code
        self.http_status = http_status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.reason!r}, error={self.error!r}, "
            f"close_code={self.close_code!r}, http_status={self.http_status!r})"
        )


class LocalProtocolError(ProtocolError):
    """The node misused the protocol object (a bug here, not the client's doing).

    For example: sending a frame before ``welcome``, or receiving after the close was decided.
    """


class RemoteProtocolError(ProtocolError):
    """The client broke the protocol. ``error``/``close_code``/``http_status`` say how to answer."""


class AuthError(RemoteProtocolError):
    """The client's token is missing, malformed, badly signed or expired (HTTP 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, http_status=401)
