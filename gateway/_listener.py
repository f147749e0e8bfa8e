"""The listener: accepts WebSockets on the configured address and starts a connection actor for
each, after checking the handshake (path, token, subprotocol, per-user connection limit) before
the upgrade is accepted.

It is a function actor whose task runs the server; each connection's handshake and its
trio-websocket tasks live in the listener's nursery, so the sockets end with the listener.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, WebSocketServer

from actors import MAILBOX_OVERFLOW, CallError, Context, NoProcError
from supervisors import StartChildError, start_child

from ._auth import token_from_request, verify_token
from ._codec import choose_subprotocol
from ._connection import Inlet
from ._errors import AuthError, RemoteProtocolError
from ._frames import CloseCode
from ._messages import StopAccepting
from ._services import CONNECTIONS, LISTENER, Services

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

    async def handle(self, request: WebSocketRequest) -> None:
        services = self.services
        settings = services.settings
        outcomes = services.metrics.handshakes
        if services.draining:
            outcomes.labels("draining").inc()
            await request.reject(503, body=b"the node is shutting down")
            return
        target = urlsplit(request.path)
        if target.path != settings.server.ws_path:
            outcomes.labels("not_found").inc()
            await request.reject(404, body=b"not found")
            return
        try:
            token = token_from_request(request.headers, target.query)
            if token is None:
                raise AuthError("missing token")
            identity = verify_token(services.secret, token)
        except AuthError as exc:
            outcomes.labels("unauthorized").inc()
            await request.reject(401, body=exc.reason.encode())
            return
        try:
            sub = choose_subprotocol(request.proposed_subprotocols)
        except RemoteProtocolError as exc:
            outcomes.labels("bad_subprotocol").inc()
            await request.reject(400, body=exc.reason.encode())
            return
        devices = self.counts.setdefault(identity.user, Counter())
        others = sum(devices.values()) - devices[identity.device]  # the same device replaces
        if others >= settings.limits.max_connections_per_user:
            outcomes.labels("too_many").inc()
            await request.reject(429, body=b"too many connections for this user")
            if not devices:
                del self.counts[identity.user]
            return
        ws = await request.accept(subprotocol=sub)
        _shed_handshake_state(ws, request)
        del target, token  # this frame lives as long as the connection
        devices[identity.device] += 1
        try:
            sup = self.ctx.node.whereis(CONNECTIONS)
            if sup is None:
                outcomes.labels("failed").inc()
                await ws.aclose(CloseCode.SERVICE_RESTART, "restarting")
                return
            inlet = Inlet()
            try:
                ref = await start_child(sup, ws, identity, sub, inlet)
            except (CallError, NoProcError):
                # The connections supervisor died under the call (it is being restarted):
                # the same answer as when it is not there, and the listener carries on.
                outcomes.labels("failed").inc()
                await ws.aclose(CloseCode.SERVICE_RESTART, "restarting")
                return
            except StartChildError as exc:
                outcomes.labels("failed").inc()
                log.error("connection_start_failed", error=repr(exc.reason))
                await ws.aclose(CloseCode.INTERNAL_ERROR, "internal error")
                return
            outcomes.labels("accepted").inc()
            await inlet.pump(ws, ref)  # this task reads the socket: one task fewer per connection
            reason = await self.ctx.node.wait_exit(ref)
            if reason == MAILBOX_OVERFLOW:
                log.info("connection_closed", user=identity.user, code=CloseCode.SLOW_CONSUMER)
                await ws.aclose(CloseCode.SLOW_CONSUMER, "too far behind")
        finally:
            devices[identity.device] -= 1
            if devices[identity.device] <= 0:
                del devices[identity.device]
            if not devices:
                self.counts.pop(identity.user, None)


_OPENED: Final = trio.Event()
_OPENED.set()


def _shed_handshake_state(ws: WebSocketConnection, request: WebSocketRequest) -> None:
    """Drop what wsproto keeps of the opening handshake once the connection is open (its h11
    connection with buffers, the request, its empty event queue: wsproto reads it only while
    it is not empty), trio-websocket's per-connection "opened" event, and the upgrade request
    (headers, target with the token), which trio-websocket's handler task holds for the
    connection's life but does not read after the accept. Private attributes, so only if they
    look as expected."""
    accepted: Any = request
    if getattr(accepted, "_event", None) is not None:
        accepted._event = None
    proto: Any = getattr(ws, "_wsproto", None)
    handshake: Any = getattr(proto, "handshake", None)
    if getattr(proto, "connection", None) is not None and hasattr(handshake, "_h11_connection"):
        handshake._h11_connection = None
        handshake._initiating_request = None
        if isinstance(getattr(handshake, "_events", None), deque) and not handshake._events:
            handshake._events = ()
    # trio-websocket's "open handshake done" event is set for good by now, and it only waits on
    # it or sets it again: one set event can serve every connection.
    opened: Any = getattr(ws, "_open_handshake", None)
    if isinstance(opened, trio.Event) and opened.is_set():
        ws._open_handshake = _OPENED


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
    listeners = await trio.open_tcp_listeners(settings.server.port, host=settings.server.host)
    gate = _Gate(ctx, services)
    async with trio.open_nursery() as handlers:
        server = WebSocketServer(
            gate.handle,
            listeners,
            handler_nursery=handlers,
            max_message_size=services.limits.max_frame,
            connect_timeout=HANDSHAKE_TIMEOUT,
            disconnect_timeout=HANDSHAKE_TIMEOUT,
        )
        sockname = listeners[0].socket.getsockname()
        accepting = trio.CancelScope()

        async def accept() -> None:
            with accepting:
                await server.run()

        handlers.start_soon(accept)
        _announce(services, sockname[0], sockname[1])
        while True:
            message = await ctx.receive()
            if type(message) is StopAccepting:
                accepting.cancel()
                for listener in listeners:
                    await listener.aclose()
                log.info("stopped_accepting")
