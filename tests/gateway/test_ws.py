"""``ServerWebSocket`` (gateway/_ws.py) over a real loopback TCP socket, against an independent
client: trio-websocket's client for the ordinary paths, and a raw wsproto client writing its own
bytes where the test needs control (fragments, bad frames, a peer that never answers a close, a
connection that ends mid-message).

Nothing here sleeps to let something happen: each test waits on the peer's reply or on an
event, bounded by ``trio.fail_after``; real time, since the sockets are real."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from gateway._ws import CloseReason, ConnectionClosed, ServerWebSocket

pytestmark = pytest.mark.anyio

#: Seconds any one test may take: far above what loopback needs, so only a hang reaches it.
WAIT = 10
#: The server's message size limit unless a test sets its own.
LIMIT = 1 << 20


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """trio only (``ServerWebSocket`` is trio-native), in real time: the sockets are real."""
    return ("trio", {})


class RawClient:
    """A client WebSocket made of a TCP stream and wsproto's client state machine: it sends
    exactly the frames (or bytes) a test asks for and reports exactly what arrives."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.proto = WSConnection(ConnectionType.CLIENT)

    async def send(self, *events: Event) -> None:
        """Encode ``events`` and write them in one ``send_all`` (so one TCP segment, usually)."""
        await self.stream.send_all(b"".join(self.proto.send(event) for event in events))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self) -> Event | None:
        """The next event from the server; ``None`` once the server closed the TCP connection."""
        while True:
            for event in self.proto.events():
                return event
            data = await self.stream.receive_some(65_536)
            if not data:
                return None
            self.proto.receive_data(data)

    async def rest(self) -> list[Event]:
        """Every event until the server closes the TCP connection (so: proof that it does)."""
        events: list[Event] = []
        while (event := await self.next_event()) is not None:
            events.append(event)
        return events

    async def handshake(self, target: str = "/") -> None:
        await self.send(Request(host="127.0.0.1", target=target))


class Harness:
    """A loopback listener, and every TCP stream opened on either side (closed at the end)."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self.listener = listener
        self.streams: list[trio.SocketStream] = []

    async def connect(self) -> trio.SocketStream:
        """A plain TCP connection to the listener (accepted by :meth:`accept`)."""
        host, port = self.listener.socket.getsockname()[:2]
        stream = await trio.open_tcp_stream(host, port)
        self.streams.append(stream)
        return stream

    async def accept(self, max_message_size: int = LIMIT) -> ServerWebSocket:
        stream = await self.listener.accept()
        self.streams.append(stream)
        return ServerWebSocket(stream, max_message_size)

    async def raw_pair(self, max_message_size: int = LIMIT) -> tuple[ServerWebSocket, RawClient]:
        """An open server WebSocket and the raw client at its other end. Sequential: the
        request waits in the socket buffer for the server, the answer for the client."""
        client = RawClient(await self.connect())
        ws = await self.accept(max_message_size)
        await client.handshake()
        assert await ws.read_request() is not None
        await ws.accept(None)
        assert isinstance(await client.next_event(), AcceptConnection)
        return ws, client

    async def client(
        self,
        nursery: trio.Nursery,
        path: str = "/",
        subprotocols: list[str] | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> WebSocketConnection:
        """trio-websocket's client, its reader task in ``nursery``, once the server answered the
        upgrade (the server must run concurrently). Over a stream of ours: trio-websocket's client
        leaves its socket open when the server closes first."""
        return await wrap_client_stream(
            nursery,
            await self.connect(),
            "127.0.0.1",
            path,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
        )

    async def client_pair(
        self,
        nursery: trio.Nursery,
        *,
        path: str = "/",
        subprotocols: list[str] | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        accept: str | None = None,
        max_message_size: int = LIMIT,
    ) -> tuple[ServerWebSocket, Request, WebSocketConnection]:
        """An open server WebSocket, the request it read, and trio-websocket's client at the
        other end (its reader task in ``nursery``)."""
        served: list[tuple[ServerWebSocket, Request]] = []

        async def serve() -> None:
            ws = await self.accept(max_message_size)
            request = await ws.read_request()
            assert request is not None
            await ws.accept(accept)
            served.append((ws, request))

        async with trio.open_nursery() as handshake:
            handshake.start_soon(serve)
            client = await self.client(nursery, path, subprotocols, extra_headers)
        [(ws, request)] = served
        return ws, request, client


@contextlib.asynccontextmanager
async def harness() -> AsyncIterator[Harness]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    [listener] = listeners
    h = Harness(listener)
    try:
        yield h
    finally:
        for stream in h.streams:
            await stream.aclose()
        await listener.aclose()


async def closed_by(ws: ServerWebSocket) -> CloseReason:
    """The reason ``get_message`` gives when it raises; it must raise, not return a message."""
    with pytest.raises(ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason == ws.closed
    return info.value.reason


async def client_closed(client: WebSocketConnection) -> trio_websocket.CloseReason:
    """The close trio-websocket's client saw (its ``get_message`` raises once it has one)."""
    with pytest.raises(trio_websocket.ConnectionClosed) as info:
        await client.get_message()
    assert info.value.reason is not None
    return info.value.reason


# -- the opening handshake --


async def test_read_request_returns_the_request_and_accept_sends_the_subprotocol() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, request, client = await h.client_pair(
                nursery,
                path="/ws/v1?device=d1",
                subprotocols=["parley.v1.json", "parley.v1.msgpack"],
                extra_headers=[(b"Authorization", b"Bearer t0ken"), (b"X-Extra", b"1")],
                accept="parley.v1.msgpack",
            )
            assert request.target == "/ws/v1?device=d1"
            assert request.host.startswith("127.0.0.1")
            assert request.subprotocols == ["parley.v1.json", "parley.v1.msgpack"]
            headers = dict(request.extra_headers)
            assert headers[b"authorization"] == b"Bearer t0ken"
            assert headers[b"x-extra"] == b"1"
            assert client.subprotocol == "parley.v1.msgpack"
            assert ws.closed is None
            await ws.aclose()


async def test_accept_without_a_subprotocol() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, request, client = await h.client_pair(nursery, subprotocols=["parley.v1.json"])
            assert request.subprotocols == ["parley.v1.json"]
            assert client.subprotocol is None
            await client.send_message("open")
            assert await ws.get_message() == "open"
            await ws.aclose()


async def test_reject_sends_the_status_and_the_body() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            rejected = trio.Event()

            async def serve() -> None:
                ws = await h.accept()
                assert await ws.read_request() is not None
                await ws.reject(401, b"bad token")
                assert ws.closed == CloseReason(1006, "rejected")
                # The socket stays open until the client has read the whole answer, so the
                # client must learn where the body ends from the response itself.
                await rejected.wait()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                # trio-websocket's reader task raises the rejection into its nursery.
                with pytest.RaisesGroup(ConnectionRejected) as info:
                    async with trio.open_nursery() as client_nursery:
                        await h.client(client_nursery, "/ws/v1")
                rejected.set()
            [error] = info.value.exceptions
            assert isinstance(error, ConnectionRejected)
            assert error.status_code == 401
            assert error.body == b"bad token"


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"HELLO? this is not HTTP\r\n\r\n", id="not-http"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="http-without-upgrade"),
    ],
)
async def test_garbage_instead_of_an_upgrade_gets_400_and_none(garbage: bytes) -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            client = await h.connect()
            ws = await h.accept()
            await client.send_all(garbage)
            assert await ws.read_request() is None
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = await client.receive_some(4096)
                assert data, f"the connection ended before a whole answer: {answer!r}"
                answer += data
            assert answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"GET /ws/v1 HTTP/1.1\r\nHost: 127.0", id="half-a-request"),
    ],
)
async def test_a_client_that_leaves_before_the_request_ends_gives_none(sent: bytes) -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            client = await h.connect()
            ws = await h.accept()
            if sent:
                await client.send_all(sent)
            await client.aclose()
            assert await ws.read_request() is None


# -- messages --


async def test_messages_both_ways_text_and_binary() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, client = await h.client_pair(nursery)
            messages: list[str | bytes] = [
                "héllo ✓",
                b"\x00\x01",
                "",
                b"",
                "x" * 70_000,
                b"y" * 70_000,
            ]
            for message in messages:
                await client.send_message(message)
                got = await ws.get_message()
                assert type(got) is type(message)
                assert got == message
                await ws.send_message(message)
                back = await client.get_message()
                assert type(back) is type(message)
                assert back == message
            await ws.aclose()


async def test_a_fragmented_message_is_returned_joined() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, client = await h.raw_pair()
            # A text message in three frames, each written on its own, and a ping between two
            # of them (control frames may come between fragments).
            await client.send(TextMessage(data="hé", message_finished=False))
            await client.send(TextMessage(data="llo ", message_finished=False))
            await client.send(Ping(payload=b"mid"))
            await client.send(TextMessage(data="wörld", message_finished=True))
            # A binary one in three frames written at once.
            await client.send(
                BytesMessage(data=b"\x00\x01", message_finished=False),
                BytesMessage(data=b"\x02", message_finished=False),
                BytesMessage(data=b"\x03\x04", message_finished=True),
            )
            assert await ws.get_message() == "héllo wörld"
            assert await ws.get_message() == b"\x00\x01\x02\x03\x04"
            event = await client.next_event()
            assert isinstance(event, Pong)
            assert event.payload == b"mid"


async def test_several_messages_in_one_read_are_returned_one_by_one() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, client = await h.raw_pair()
            await client.send(
                TextMessage(data="one"),
                BytesMessage(data=b"two"),
                TextMessage(data="three"),
                Ping(payload=b"p"),
                BytesMessage(data=b"four"),
            )
            assert [await ws.get_message() for _ in range(4)] == ["one", b"two", "three", b"four"]
            event = await client.next_event()
            assert isinstance(event, Pong)
            assert event.payload == b"p"


# -- the size limit --


async def test_a_message_above_the_limit_closes_with_1009() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, client = await h.client_pair(nursery, max_message_size=100)
            # At the limit is fine; a text message counts characters, not bytes.
            await client.send_message(b"a" * 100)
            assert await ws.get_message() == b"a" * 100
            await client.send_message("é" * 100)
            assert await ws.get_message() == "é" * 100
            await client.send_message(b"b" * 101)
            reason = await closed_by(ws)
            assert reason.code == 1009
            assert (await client_closed(client)).code == 1009
            await ws.aclose()


async def test_a_fragmented_message_above_the_limit_closes_with_1009() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, client = await h.raw_pair(max_message_size=100)
            # Two whole messages of 60 each: the count starts again with each message.
            await client.send(
                BytesMessage(data=b"a" * 30, message_finished=False),
                BytesMessage(data=b"a" * 30, message_finished=True),
                TextMessage(data="b" * 60),
            )
            assert await ws.get_message() == b"a" * 60
            assert await ws.get_message() == "b" * 60
            # Three fragments of 40: none is above the limit, their sum is.
            await client.send(
                TextMessage(data="c" * 40, message_finished=False),
                TextMessage(data="c" * 40, message_finished=False),
                TextMessage(data="c" * 40, message_finished=True),
            )
            reason = await closed_by(ws)
            assert reason.code == 1009
            event = await client.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 1009


# -- ping and pong --


async def test_a_client_ping_is_answered_while_the_server_reads() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, client = await h.client_pair(nursery)
            got: list[str | bytes] = []

            async def read() -> None:
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        got.append(await ws.get_message())

            nursery.start_soon(read)
            # trio-websocket's ping returns once the pong with its payload arrives.
            await client.ping(b"are you there")
            assert got == []  # answered from inside get_message, which returned nothing
            await client.send_message("done")
            await client.ping(b"again")
            assert got == ["done"]  # read in order: the message, then the ping
            await ws.aclose()


async def test_server_ping_returns_once_the_pong_arrives() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, client = await h.raw_pair()
            inbox_in, inbox = trio.open_memory_channel[str | bytes](10)
            pinged = trio.Event()

            async def read() -> None:
                async with inbox_in:
                    while True:
                        await inbox_in.send(await ws.get_message())

            async def ping() -> None:
                await ws.ping()
                pinged.set()

            nursery.start_soon(read)
            nursery.start_soon(ping)
            event = await client.next_event()
            assert isinstance(event, Ping)
            # A pong for another payload, then a message: once the server read the message,
            # it had read the pong too, and that pong must not have ended the ping.
            await client.send(Pong(payload=event.payload + b"-not"), TextMessage(data="marker"))
            assert await inbox.receive() == "marker"
            assert not pinged.is_set()
            await client.send(event.response())
            await pinged.wait()
            nursery.cancel_scope.cancel()


async def test_server_ping_with_trio_websocket_answering() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, _client = await h.client_pair(nursery)

            async def read() -> None:
                await closed_by(ws)

            nursery.start_soon(read)
            await ws.ping()
            await ws.ping()
            await ws.aclose()


async def test_a_pong_answers_the_earlier_pings_too() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, client = await h.raw_pair()
            done: list[int] = []
            both = trio.Event()

            async def read() -> None:
                await closed_by(ws)

            async def ping(n: int) -> None:
                await ws.ping()
                done.append(n)
                if len(done) == 2:
                    both.set()

            nursery.start_soon(read)
            nursery.start_soon(ping, 1)
            first = await client.next_event()
            nursery.start_soon(ping, 2)
            second = await client.next_event()
            assert isinstance(first, Ping)
            assert isinstance(second, Ping)
            assert first.payload != second.payload
            await client.send(second.response())  # only the last one, as some peers do
            await both.wait()
            nursery.cancel_scope.cancel()


# -- closing --


async def test_a_client_close_is_answered_and_ends_get_message() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, client = await h.raw_pair()
            await client.send(TextMessage(data="last"), CloseConnection(code=4001, reason="bye"))
            assert await ws.get_message() == "last"
            assert await closed_by(ws) == CloseReason(4001, "bye")
            # The server answered with the same code and closed the TCP connection.
            [answer] = await client.rest()
            assert isinstance(answer, CloseConnection)
            assert answer.code == 4001
            # Closed now: every operation says so.
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            with pytest.raises(ConnectionClosed):
                await ws.send_message("late")
            await ws.aclose()  # idempotent, and does not wait for anything


async def test_a_client_close_with_trio_websocket() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, client = await h.client_pair(nursery)
            reasons: list[CloseReason] = []

            async def read() -> None:
                reasons.append(await closed_by(ws))

            nursery.start_soon(read)
            # trio-websocket's aclose returns once the server's answer (or the end) arrived.
            await client.aclose(4002, "going")
            assert client.closed is not None
            assert client.closed.code == 4002
        assert reasons == [CloseReason(4002, "going")]


@pytest.mark.parametrize("reading", [True, False], ids=["reader", "no-reader"])
async def test_aclose_waits_for_the_client_answer(reading: bool) -> None:
    """With a task in get_message, aclose leaves the reading to it; without, it reads itself."""
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, client = await h.raw_pair()
            crossing = client.proto.send(TextMessage(data="crossing"))  # sent after the close
            reasons: list[CloseReason] = []
            read_done = trio.Event()
            close_done = trio.Event()

            async def read() -> None:
                reasons.append(await closed_by(ws))
                read_done.set()

            async def close() -> None:
                await ws.aclose(4008, "x")
                close_done.set()

            if reading:
                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()  # the reader is in get_message
            nursery.start_soon(close)
            event = await client.next_event()
            assert isinstance(event, CloseConnection)
            assert (event.code, event.reason) == (4008, "x")
            assert ws.closed == CloseReason(4008, "x")
            # Sending is over as soon as the close is on its way.
            with pytest.raises(ConnectionClosed):
                await ws.send_message("late")
            with pytest.raises(ConnectionClosed):
                await ws.ping()
            # A message the client sent before it saw the close is dropped, and aclose waits
            # for the client's own close.
            await client.send_raw(crossing)
            await trio.testing.wait_all_tasks_blocked()
            assert not close_done.is_set()
            assert not read_done.is_set()
            await client.send(event.response())
            await close_done.wait()
            if reading:
                await read_done.wait()
                assert reasons == [CloseReason(4008, "x")]
            else:
                assert await closed_by(ws) == CloseReason(4008, "x")
            assert await client.rest() == []  # and the server closed the TCP connection


async def test_aclose_while_reading_with_trio_websocket() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, client = await h.client_pair(nursery)
            reasons: list[CloseReason] = []

            async def read() -> None:
                reasons.append(await closed_by(ws))

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await ws.aclose(4008, "x")
            seen = await client_closed(client)
            assert (seen.code, seen.reason) == (4008, "x")
        assert reasons == [CloseReason(4008, "x")]


async def test_aclose_with_no_reader_reads_the_answer_itself() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, client = await h.client_pair(nursery)
            await client.send_message("unread")  # aclose reads past it to the client's close
            await ws.aclose()
            assert ws.closed == CloseReason(1000, None)
            assert (await client_closed(client)).code == 1000
            with pytest.raises(ConnectionClosed):
                await ws.get_message()


@pytest.mark.parametrize("reading", [False, True], ids=["no-reader", "reader"])
async def test_aclose_against_a_client_that_never_answers(reading: bool) -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, client = await h.raw_pair()
            reasons: list[CloseReason] = []

            async def read() -> None:
                reasons.append(await closed_by(ws))

            if reading:
                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.2) as scope:
                await ws.aclose(4008, "x")
            assert scope.cancelled_caught  # only the caller's bound ended it
            # The client got the close, then the end of the TCP connection all the same.
            [event] = await client.rest()
            assert isinstance(event, CloseConnection)
            assert event.code == 4008
            assert ws.closed == CloseReason(4008, "x")
            with pytest.raises(ConnectionClosed):
                await ws.send_message("late")
        assert reasons == ([CloseReason(4008, "x")] if reading else [])


async def test_aclose_is_idempotent() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, client = await h.client_pair(nursery)
            await ws.aclose(4000, "first")
            await ws.aclose(4001, "second")
            assert ws.closed == CloseReason(4000, "first")
            assert (await client_closed(client)).code == 4000
            with pytest.raises(ConnectionClosed) as closed:
                await ws.send_message("late")
            assert closed.value.reason == CloseReason(4000, "first")


# -- abrupt ends --


@pytest.mark.parametrize(
    "last",
    [
        pytest.param(b"", id="between-messages"),
        pytest.param(b"fragment", id="mid-fragmented-message"),
        pytest.param(b"half-frame", id="mid-frame"),
    ],
)
async def test_the_connection_ending_without_a_close_is_1006(last: bytes) -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, client = await h.raw_pair()
            await client.send(TextMessage(data="whole"))
            if last == b"fragment":
                await client.send(BytesMessage(data=b"part", message_finished=False))
            elif last == b"half-frame":
                frame = client.proto.send(BytesMessage(data=b"z" * 1000))
                await client.send_raw(frame[:500])
            await client.stream.aclose()
            assert await ws.get_message() == "whole"
            assert await closed_by(ws) == CloseReason(1006)
            with pytest.raises(ConnectionClosed):
                await ws.send_message("late")
            await ws.aclose()


def masked(header: bytes, payload: bytes = b"") -> bytes:
    """A client frame: ``header`` (its first byte), the mask bit and length, a mask, the payload."""
    mask = b"\x01\x02\x03\x04"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + bytes([0x80 | len(payload)]) + mask + data


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(b"\x81\x02hi", 1002, id="unmasked"),
        pytest.param(masked(b"\x83", b"hi"), 1002, id="reserved-opcode"),
        pytest.param(masked(b"\xc1", b"hi"), 1002, id="rsv1-without-extension"),
        pytest.param(masked(b"\x80", b"hi"), 1002, id="continuation-without-start"),
        pytest.param(masked(b"\x89", b"p" * 126), 1002, id="control-frame-too-long"),
        pytest.param(masked(b"\x81", b"\xff\xfe"), 1007, id="text-not-utf8"),
    ],
)
async def test_a_protocol_error_fails_the_connection(frame: bytes, code: int) -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, client = await h.raw_pair()
            await client.send(TextMessage(data="before"))
            await client.send_raw(frame)
            assert await ws.get_message() == "before"
            reason = await closed_by(ws)
            assert reason.code == code
            # A close with that code (RFC 6455, 7.1.7), then the end of the TCP connection.
            [event] = await client.rest()
            assert isinstance(event, CloseConnection)
            assert event.code == code
            with pytest.raises(ConnectionClosed) as info:
                await ws.send_message("late")
            assert info.value.reason == reason
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            await ws.aclose()
            assert ws.closed == reason


# -- concurrent sends --


def payload(task: int, seq: int) -> str | bytes:
    """Message ``seq`` of sender ``task``: each of a distinct size, its content tied to both."""
    n = task * 20 + seq
    head = f"{task:02d}:{seq:02d}:"
    body = chr(ord("a") + n % 26) * (1 + 29 * n)
    return head + body if n % 2 else (head + body).encode()


async def test_concurrent_sends_never_interleave() -> None:
    tasks, each = 50, 20
    with trio.fail_after(WAIT * 3):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, _, client = await h.client_pair(nursery)

            async def sender(task: int) -> None:
                for seq in range(each):
                    await ws.send_message(payload(task, seq))

            async with trio.open_nursery() as senders:
                for task in range(tasks):
                    senders.start_soon(sender, task)
                seen: dict[int, int] = {}
                for _ in range(tasks * each):
                    message = await client.get_message()
                    text = message if isinstance(message, str) else message.decode()
                    task, seq = int(text[:2]), int(text[3:5])
                    assert message == payload(task, seq)
                    assert seq == seen.get(task, -1) + 1  # each sender's own order kept
                    seen[task] = seq
            assert seen == dict.fromkeys(range(tasks), each - 1)
            await ws.aclose()


async def test_sends_queued_behind_aclose_go_out_first_or_raise_connection_closed() -> None:
    """Senders already waiting for their turn when aclose() comes: each one's message goes out
    before the close or it raises ConnectionClosed, whichever turn it gets."""
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, client = await h.raw_pair()
            big = b"B" * (32 << 20)  # more than the socket buffers: its send_all blocks
            big_sent = trio.Event()
            outcomes: dict[int, CloseReason | None] = {}

            async def send_big() -> None:
                await ws.send_message(big)
                big_sent.set()

            async def send(n: int) -> None:
                try:
                    await ws.send_message(f"m{n}")
                except ConnectionClosed as exc:
                    outcomes[n] = exc.reason
                else:
                    outcomes[n] = None

            nursery.start_soon(send_big)
            await trio.testing.wait_all_tasks_blocked()
            assert not big_sent.is_set()
            for n in range(20):
                nursery.start_soon(send, n)
            await trio.testing.wait_all_tasks_blocked()  # all twenty wait for their turn
            nursery.start_soon(ws.aclose, 4008, "x")
            await trio.testing.wait_all_tasks_blocked()
            received = bytearray()
            texts: list[str] = []
            while True:
                event = await client.next_event()
                if isinstance(event, BytesMessage):
                    received += event.data
                elif isinstance(event, TextMessage):
                    texts.append(event.data)
                else:
                    break
            assert isinstance(event, CloseConnection)
            assert (event.code, event.reason) == (4008, "x")
            assert received == big
            await client.send(event.response())
            assert await client.rest() == []
        assert len(outcomes) == 20
        assert set(outcomes.values()) <= {None, CloseReason(4008, "x")}
        assert sorted(texts) == sorted(f"m{n}" for n, reason in outcomes.items() if reason is None)


async def test_a_ping_waiting_for_its_pong_raises_when_the_connection_ends() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, client = await h.raw_pair()
            raised: list[CloseReason] = []

            async def ping() -> None:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.ping()
                raised.append(info.value.reason)

            async def read() -> None:
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()

            nursery.start_soon(ping)
            nursery.start_soon(read)
            assert isinstance(await client.next_event(), Ping)
            await client.stream.aclose()  # no pong, no close: the socket just ends
        assert raised == [CloseReason(1006)]


async def test_a_send_cancelled_mid_frame_lets_nothing_follow_it() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, _client = await h.raw_pair()
            with trio.move_on_after(0.2) as scope:
                await ws.send_message(b"B" * (32 << 20))  # more than the socket buffers hold
            assert scope.cancelled_caught
            # Part of that frame may be on the wire: a next frame would corrupt the stream.
            assert ws.closed == CloseReason(1006, "a send was cancelled")
            with pytest.raises(ConnectionClosed):
                await ws.send_message("next")


# -- writing without waiting --


async def test_send_messages_writes_several_in_order() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, client = await h.raw_pair()
            await ws.send_messages(["one", b"two", "three"])
            events = [await client.next_event() for _ in range(3)]
            assert [(type(e), e.data) for e in events] == [  # type: ignore[union-attr]
                (TextMessage, "one"),
                (BytesMessage, b"two"),
                (TextMessage, "three"),
            ]


async def test_a_message_larger_than_the_socket_buffer_arrives_whole() -> None:
    # Written in part at once and the rest by waiting for room while the client reads.
    body = bytes(range(256)) * (16 << 12)  # 16 MiB
    with trio.fail_after(WAIT * 3):
        async with harness() as h, trio.open_nursery() as nursery:
            ws, client = await h.raw_pair()
            nursery.start_soon(ws.send_message, body)
            received = bytearray()
            while True:
                event = await client.next_event()
                assert isinstance(event, BytesMessage)
                received += event.data
                if event.message_finished:
                    break
            assert received == body
            await ws.send_message("after")
            assert isinstance(await client.next_event(), TextMessage)


async def test_a_cancelled_sender_writes_nothing_and_the_socket_stays_usable() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, client = await h.raw_pair()
            with trio.CancelScope() as scope:
                scope.cancel()
                await ws.send_message("never")
            assert scope.cancelled_caught
            assert ws.closed is None  # nothing went out, so nothing is broken
            await ws.send_message("sent")
            event = await client.next_event()
            assert isinstance(event, TextMessage)
            assert event.data == "sent"


async def test_a_send_on_a_closed_socket_raises_connection_closed() -> None:
    with trio.fail_after(WAIT):
        async with harness() as h:
            ws, _client = await h.raw_pair()
            server_stream = h.streams[1]  # [client's, server's]
            await server_stream.aclose()  # the descriptor is gone; no write may use its number
            with pytest.raises(ConnectionClosed) as info:
                await ws.send_message("late")
            assert info.value.reason.code == 1006
