"""A scripted protocol peer: trio-websocket's server plus the project's sans-IO ClientConnection.

It stands in for a node in the client's tests: it authenticates the handshake as the contract
says (401/400, or a status the test asks for), negotiates the subprotocol, sends ``welcome``, and
hands each accepted connection to the test, which reads the client's requests (validated by
:class:`ClientConnection`) and answers with server events of its choosing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from gateway import (
    AuthError,
    ClientConnection,
    ClientEvent,
    Identity,
    RemoteProtocolError,
    ServerEvent,
    Welcome,
    choose_subprotocol,
    mint_token,
    token_from_request,
    verify_token,
)

SECRET = b"parley-client-tests-secret-0123456789"
SERVER_TIME = 1_732_200_000_000


def token(user: str, device: str | None = None) -> str:
    """A token the peer accepts."""
    return mint_token(SECRET, user, device)


@dataclass(eq=False)
class Peer:
    """One accepted connection, driven by the test."""

    ws: WebSocketConnection
    conn: ClientConnection
    identity: Identity
    offered: tuple[str, ...]
    done: trio.Event = field(default_factory=trio.Event)

    async def send(self, *events: ServerEvent) -> None:
        """Encode and send ``events`` in order."""
        for event in events:
            await self.ws.send_message(self.conn.send(event))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send_message(data)

    async def receive(self) -> ClientEvent:
        """The client's next frame, decoded and validated as the node would."""
        return self.conn.receive_frame(await self.ws.get_message())

    async def serve(self, answer: Callable[[ClientEvent], Iterable[ServerEvent]]) -> None:
        """Answer every request with ``answer(request)``'s events until the connection ends."""
        while True:
            try:
                request = await self.receive()
            except ConnectionClosed:
                return
            await self.send(*answer(request))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.aclose(code, reason or None)
        self.done.set()


@dataclass(eq=False)
class PeerServer:
    """The listening peer. ``url`` is its endpoint; ``reject`` (an HTTP status) refuses the
    next handshakes while set; ``welcome`` (default on) sends ``welcome`` on accept; ``answer``
    makes every connection answer requests by itself."""

    url: str
    _accepted: trio.MemoryReceiveChannel[Peer]
    reject: int | None = None
    welcome: bool = True
    #: When set, each connection answers every request with ``answer(request)`` by itself.
    answer: Callable[[ClientEvent], Iterable[ServerEvent]] | None = None
    handshakes: int = 0

    async def accept(self) -> Peer:
        """The next accepted connection (its ``welcome`` already sent)."""
        with trio.fail_after(30):
            return await self._accepted.receive()


async def _handle(
    server: list[PeerServer], send: trio.MemorySendChannel[Peer], request: WebSocketRequest
) -> None:
    peer_server = server[0]
    peer_server.handshakes += 1
    if peer_server.reject is not None:
        await request.reject(peer_server.reject, body=b"refused by the test")
        return
    try:
        identity = verify_token(SECRET, token_from_request(request.headers, "") or "")
    except AuthError as exc:
        await request.reject(401, body=exc.reason.encode())
        return
    try:
        subprotocol = choose_subprotocol(request.proposed_subprotocols)
    except RemoteProtocolError as exc:
        await request.reject(400, body=exc.reason.encode())
        return
    ws = await request.accept(subprotocol=subprotocol)
    peer = Peer(ws, ClientConnection(subprotocol), identity, request.proposed_subprotocols)
    if peer_server.welcome:
        await peer.send(
            Welcome(
                user=identity.user,
                device=identity.device,
                session="01SESSION",
                heartbeat=30,
                max_frame=65536,
                server_time=SERVER_TIME,
            )
        )
    await send.send(peer)
    if peer_server.answer is not None:
        await peer.serve(peer_server.answer)
    else:
        await peer.done.wait()


@asynccontextmanager
async def serve_peer() -> AsyncIterator[PeerServer]:
    """Listen on 127.0.0.1, a free port; stop when the block ends."""
    send, receive = trio.open_memory_channel[Peer](16)
    holder: list[PeerServer] = []
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(
            partial(serve_websocket, partial(_handle, holder, send), "127.0.0.1", 0, None)
        )
        holder.append(PeerServer(f"ws://127.0.0.1:{ws_server.port}/ws", receive))
        yield holder[0]
        nursery.cancel_scope.cancel()
