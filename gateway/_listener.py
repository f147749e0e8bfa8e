"""The listener: accepts WebSockets on the configured address and starts a connection actor for
each, after checking the handshake (path, token, subprotocol, per-user connection limit) before
the upgrade is accepted.

It is a function actor whose task runs the server; each connection's handler task (the
handshake, then the reading of its WebSocket: see ``gateway/_ws.py``) lives in the listener's
nursery, so the sockets end with the listener.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import structlog
import trio
from wsproto.events import Request

from actors import MAILBOX_OVERFLOW, CallError, Context, NoProcError, Ref
from supervisors import StartChildError, start_child

from ._auth import Identity, token_from_request, verify_token
from ._codec import choose_subprotocol
from ._connection import Inlet
from ._errors import AuthError, RemoteProtocolError
from ._frames import CloseCode
from ._messages import StopAccepting
from ._services import CONNECTIONS, LISTENER, Services
from ._ws import ConnectionClosed, ServerWebSocket

log = structlog.get_logger("gateway")

#: Where the node says where it listens, inside the data directory.
NODE_FILE: Final = "node.json"
#: Seconds a client has to finish the opening and closing handshakes.
HANDSHAKE_TIMEOUT: Final = 10.0


class _Gate:
    """The handshake checks and the per-user connection counts."""

    def __init__(self, ctx: Context, services: Services) -> None:
        self.ctx = ctx
        self.services = services
        self.counts: dict[str, Counter[str]] = {}

    async def serve(self, stream: trio.SocketStream) -> None:
        """One accepted socket, in its handler task: the opening handshake, then (when it is
        accepted) this task reads the WebSocket for the connection actor until either ends.

        Flat on purpose: this frame lives as long as the connection, so it holds no more
        than it needs (the handshake's request lives and dies in :meth:`_handshake`'s)."""
        ws = ServerWebSocket(stream, self.services.limits.max_frame)
        try:
            admitted = await self._handshake(ws)
            if admitted is None:
                return
            identity, sub = admitted
            devices = self.counts.setdefault(identity.user, Counter())
            devices[identity.device] += 1
            try:
                started = await self._start(ws, identity, sub)
                if started is None:
                    return
                conn, inlet = started
                del started
                await inlet.pump(ws, conn)  # no reader task per connection: this one reads
                reason = await self.ctx.node.wait_exit(conn)
                if reason == MAILBOX_OVERFLOW:
                    log.info("connection_closed", user=identity.user, code=CloseCode.SLOW_CONSUMER)
                    await _close(ws, CloseCode.SLOW_CONSUMER, "too far behind")
            finally:
                devices[identity.device] -= 1
                if devices[identity.device] <= 0:
                    del devices[identity.device]
                if not devices:
                    self.counts.pop(identity.user, None)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handshake(self, ws: ServerWebSocket) -> tuple[Identity, str | None] | None:
        """Read the upgrade request and check it: rejected (``None``), or accepted with the
        client's identity and the chosen subprotocol."""
        request: Request | None = None
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            request = await ws.read_request()
        if request is None:
            return None
        services = self.services
        settings = services.settings
        outcomes = services.metrics.handshakes
        if services.draining:
            outcomes.labels("draining").inc()
            await ws.reject(503, b"the node is shutting down")
            return None
        target = urlsplit(request.target)
        if target.path != settings.server.ws_path:
            outcomes.labels("not_found").inc()
            await ws.reject(404, b"not found")
            return None
        try:
            token = token_from_request(request.extra_headers, target.query)
            if token is None:
                raise AuthError("missing token")
            identity = verify_token(services.secret, token)
        except AuthError as exc:
            outcomes.labels("unauthorized").inc()
            await ws.reject(401, exc.reason.encode())
            return None
        try:
            sub = choose_subprotocol(request.subprotocols)
        except RemoteProtocolError as exc:
            outcomes.labels("bad_subprotocol").inc()
            await ws.reject(400, exc.reason.encode())
            return None
        devices = self.counts.get(identity.user)
        if devices is not None:
            others = sum(devices.values()) - devices[identity.device]  # the same device replaces
            if others >= settings.limits.max_connections_per_user:
                outcomes.labels("too_many").inc()
                await ws.reject(429, b"too many connections for this user")
                return None
        try:
            await ws.accept(sub)
        except ConnectionClosed:
            return None
        ws.shed_handshake()
        return identity, sub

    async def _start(
        self, ws: ServerWebSocket, identity: Identity, sub: str | None
    ) -> tuple[Ref, Inlet] | None:
        """Start the connection actor (and its inlet); ``None`` when it could not be started,
        the WebSocket then closed with why."""
        outcomes = self.services.metrics.handshakes
        sup = self.ctx.node.whereis(CONNECTIONS)
        if sup is None:
            outcomes.labels("failed").inc()
            await _close(ws, CloseCode.SERVICE_RESTART, "restarting")
            return None
        inlet = Inlet()
        try:
            ref = await start_child(sup, ws, identity, sub, inlet)
        except (CallError, NoProcError):
            # The connections supervisor died under the call (it is being restarted): the
            # same answer as when it is not there, and the listener carries on.
            outcomes.labels("failed").inc()
            await _close(ws, CloseCode.SERVICE_RESTART, "restarting")
            return None
        except StartChildError as exc:
            outcomes.labels("failed").inc()
            log.error("connection_start_failed", error=repr(exc.reason))
            await _close(ws, CloseCode.INTERNAL_ERROR, "internal error")
            return None
        outcomes.labels("accepted").inc()
        return ref, inlet


async def _close(ws: ServerWebSocket, code: int, reason: str) -> None:
    """Close ``ws``, giving the client ``HANDSHAKE_TIMEOUT`` to answer the close."""
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        await ws.aclose(code, reason)


def _announce(services: Services, host: str, port: int) -> None:
    settings = services.settings.server
    url = f"ws://{host}:{port}{settings.ws_path}"
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "host": host, "port": port, "url": url}
    temp = data_dir / f".{NODE_FILE}.{os.getpid()}"
    temp.write_text(json.dumps(info) + "\n")
    temp.replace(data_dir / NODE_FILE)
    log.info(f"listening on {url}", url=url, host=host, port=port)


async def listener_actor(ctx: Context, services: Services) -> None:
    """Serve WebSockets until stopped; ``StopAccepting`` closes the listening sockets while
    established connections carry on."""
    ctx.register(LISTENER)
    settings = services.settings
    port = settings.server.port if services.port is None else services.port
    listeners = await trio.open_tcp_listeners(port, host=settings.server.host)
    gate = _Gate(ctx, services)
    async with trio.open_nursery() as handlers:
        sockname = listeners[0].socket.getsockname()
        services.port = sockname[1]
        accepting = trio.CancelScope()

        async def accept() -> None:
            with accepting:
                await trio.serve_listeners(gate.serve, listeners, handler_nursery=handlers)

        handlers.start_soon(accept)
        _announce(services, sockname[0], sockname[1])
        while True:
            message = await ctx.receive()
            if type(message) is StopAccepting:
                accepting.cancel()
                for listener in listeners:
                    await listener.aclose()
                log.info("stopped_accepting")
