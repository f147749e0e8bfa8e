"""The client library against a scripted protocol peer (see _peer.py): requests and replies,
timeouts, errors, events, both subprotocols, closing, reconnecting."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from gateway import (
    Ack,
    ClientEvent,
    Closed,
    ConnectError,
    ConnectionClosedError,
    ConvAdd,
    ConvCreateDirect,
    ConvCreateGroup,
    ConvInfo,
    ConvLeft,
    ConvRemove,
    ConvsList,
    ConvsReply,
    ConvSummary,
    Error,
    ErrorCode,
    HandshakeRejected,
    History,
    HistoryReply,
    LocalProtocolError,
    Msg,
    Ping,
    Pong,
    Presence,
    PresenceSub,
    Receipt,
    ReceiptNotice,
    RequestTimeout,
    Send,
    ServerError,
    ServerEvent,
    ServerProtocolError,
    Sync,
    Synced,
    Typing,
    TypingNotice,
    open_client,
)

from ._peer import SERVER_TIME, serve_peer, token

pytestmark = pytest.mark.anyio

MSGPACK = "parley.v1.msgpack"
JSON = "parley.v1.json"


def msg(seq: int, body: str | bytes = "hi", *, conv: str = "c:1", sender: str = "bob") -> Msg:
    return Msg(
        conv=conv,
        id=f"ID{conv}{seq:06d}",
        seq=seq,
        from_user=sender,
        cmid=f"m{seq}",
        body=body,
        kind="text",
        ts=SERVER_TIME + seq,
    )


def ack_for(request: ClientEvent, seq: int = 1) -> Ack:
    assert isinstance(request, Send)
    return Ack(
        ref=request.ref, conv=request.conv, cmid=request.cmid, id=f"A{seq}", seq=seq, ts=SERVER_TIME
    )


def ref_of(request: ClientEvent) -> str | int:
    ref = getattr(request, "ref", None)
    assert isinstance(ref, str | int)
    return ref


async def next_event(client_events: trio.MemoryReceiveChannel[ServerEvent | Closed]) -> object:
    with trio.fail_after(5):
        return await client_events.receive()


# ------------------------------------------------------------------------------------------
# Connecting


@pytest.mark.parametrize("subprotocol", [MSGPACK, JSON])
async def test_welcome_and_subprotocol(subprotocol: str) -> None:
    async with (
        serve_peer() as server,
        open_client(server.url, token("alice", "phone"), subprotocol=subprotocol) as client,
    ):
        peer = await server.accept()
        assert peer.offered == (subprotocol,)
        assert peer.conn.subprotocol == subprotocol
        assert client.subprotocol == subprotocol
        assert client.welcome.user == "alice"
        assert client.welcome.device == "phone"
        assert client.welcome.heartbeat == 30.0
        assert client.welcome.server_time == SERVER_TIME
        assert client.user == "alice"
        assert client.closed is None


async def test_bad_token_is_refused_with_401() -> None:
    async with serve_peer() as server:
        with pytest.raises(HandshakeRejected) as caught:
            async with open_client(server.url, "not-a-token"):
                pytest.fail("connected")  # pragma: no cover
    assert caught.value.status_code == 401
    assert b"malformed token" in caught.value.body


async def test_429_is_surfaced() -> None:
    async with serve_peer() as server:
        server.reject = 429
        with pytest.raises(HandshakeRejected) as caught:
            async with open_client(server.url, token("alice")):
                pytest.fail("connected")  # pragma: no cover
    assert caught.value.status_code == 429


async def test_unknown_subprotocol_is_refused_locally() -> None:
    with pytest.raises(LocalProtocolError, match="unknown subprotocol"):
        async with open_client("ws://127.0.0.1:1/ws", token("alice"), subprotocol="v2"):
            pytest.fail("connected")  # pragma: no cover


async def test_nothing_listening_is_a_connect_error() -> None:
    async with serve_peer() as server:
        url = server.url
    with pytest.raises(ConnectError):
        async with open_client(url, token("alice")):
            pytest.fail("connected")  # pragma: no cover


async def test_no_welcome_in_time_is_a_connect_error() -> None:
    async with serve_peer() as server:
        server.welcome = False
        start = trio.current_time()
        with pytest.raises(ConnectError, match="no welcome"):
            async with open_client(server.url, token("alice"), connect_timeout=3):
                pytest.fail("connected")  # pragma: no cover
        assert trio.current_time() - start == pytest.approx(3)


async def test_a_first_frame_other_than_welcome_is_a_protocol_error() -> None:
    async with serve_peer() as server:
        server.welcome = False
        async with trio.open_nursery() as nursery:

            async def misbehave() -> None:
                peer = await server.accept()
                await peer.send_raw(b"\x81\xa4type\xa4pong")  # {"type": "pong"} without welcome

            nursery.start_soon(misbehave)
            with pytest.raises(ServerProtocolError):
                async with open_client(server.url, token("alice")):
                    pytest.fail("connected")  # pragma: no cover


# ------------------------------------------------------------------------------------------
# Requests and replies


@pytest.mark.parametrize("subprotocol", [MSGPACK, JSON])
async def test_every_request_gets_its_reply(subprotocol: str) -> None:
    group = ConvInfo(
        conv="g:1", kind="group", title="T", members=("alice", "bob"), admins=("alice",), last_seq=0
    )
    summary = ConvSummary(
        conv="g:1",
        kind="group",
        title="T",
        members=("alice", "bob"),
        admins=("alice",),
        last_seq=3,
        delivered_seq=2,
        read_seq=1,
    )
    seen: list[ClientEvent] = []

    def answer(request: ClientEvent) -> list[ServerEvent]:
        seen.append(request)
        match request:
            case Send():
                return [ack_for(request, seq=7)]
            case ConvCreateDirect(ref=ref, with_user=other):
                direct = dataclasses.replace(group, conv="d:1", kind="direct", title=None)
                return [dataclasses.replace(direct, ref=ref, members=("alice", other), admins=())]
            case ConvCreateGroup(ref=ref) | ConvAdd(ref=ref) | ConvRemove(ref=ref):
                return [dataclasses.replace(group, ref=ref)]
            case ConvsList(ref=ref):
                return [ConvsReply(ref=ref, convs=(summary,))]
            case History(ref=ref, conv=conv):
                return [HistoryReply(ref=ref, conv=conv, messages=(msg(1), msg(2)), more=True)]
            case Ping(ref=ref):
                return [Pong(ref=ref, server_time=SERVER_TIME + 5)]
            case _:
                return []

    async with serve_peer() as server:
        server.answer = answer
        async with open_client(server.url, token("alice"), subprotocol=subprotocol) as client:
            ack = await client.send_message("c:1", "hello", cmid="m-1", kind="note")
            assert ack == Ack(ref=ack.ref, conv="c:1", cmid="m-1", id="A7", seq=7, ts=SERVER_TIME)
            direct = await client.create_direct("bob")
            assert direct.kind == "direct"
            assert direct.title is None
            assert direct.members == ("alice", "bob")
            assert (await client.create_group("T", ["bob"])).conv == "g:1"
            assert (await client.add_members("g:1", ["carol"])).members == ("alice", "bob")
            assert (await client.remove_members("g:1", ["carol"])).admins == ("alice",)
            assert await client.convs() == (summary,)
            page = await client.history("c:1", before=3, limit=2)
            assert page.messages == (msg(1), msg(2))
            assert page.more
            assert (await client.ping()).server_time == SERVER_TIME + 5
            await client.receipt("c:1", 2, "delivered")
            await client.typing("c:1", "start")
            await client.ping()  # the receipt and typing frames have arrived by now
        check_every_request(seen)


def check_every_request(seen: list[ClientEvent]) -> None:
    first = seen[0]
    assert isinstance(first, Send)
    assert (first.body, first.kind, first.cmid) == ("hello", "note", "m-1")
    assert isinstance(seen[1], ConvCreateDirect)
    assert seen[1].with_user == "bob"
    assert isinstance(seen[2], ConvCreateGroup)
    assert seen[2].members == ("bob",)
    assert isinstance(seen[6], History)
    assert (seen[6].before, seen[6].limit) == (3, 2)
    assert seen[8] == Receipt(conv="c:1", seq=2, status="delivered")
    assert seen[9] == Typing(conv="c:1", state="start")
    refs = [getattr(r, "ref", None) for r in seen if not isinstance(r, Receipt | Typing)]
    assert len(set(refs)) == len(refs)
    assert None not in refs


async def test_replies_are_matched_by_ref_not_by_order() -> None:
    results: dict[str, Ack] = {}
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()

        async def send(cmid: str) -> None:
            results[cmid] = await client.send_message("c:1", cmid, cmid=cmid)

        async with trio.open_nursery() as nursery:
            for cmid in ("a", "b", "c"):
                nursery.start_soon(send, cmid)
                await trio.testing.wait_all_tasks_blocked()
            requests = [await peer.receive() for _ in range(3)]
            for seq, request in reversed(list(enumerate(requests, 1))):
                await peer.send(ack_for(request, seq))
    assert {cmid: ack.cmid for cmid, ack in results.items()} == {"a": "a", "b": "b", "c": "c"}
    assert [results[c].seq for c in "abc"] == [1, 2, 3]


async def test_default_cmid_is_a_fresh_ulid_and_a_resend_reuses_it() -> None:
    async with serve_peer() as server:
        server.answer = lambda request: [ack_for(request)]
        async with open_client(server.url, token("alice")) as client:
            first = await client.send_message("c:1", "x")
            second = await client.send_message("c:1", "x")
            assert len(first.cmid) == 26
            assert first.cmid != second.cmid
            assert (await client.send_message("c:1", "x", first.cmid)).cmid == first.cmid


async def test_bytes_bodies_travel_as_msgpack_bin() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_message, "c:1", b"\x00\xff")
            request = await peer.receive()
            assert isinstance(request, Send)
            assert request.body == b"\x00\xff"
            await peer.send(ack_for(request))


async def test_bytes_bodies_are_refused_over_json() -> None:
    async with (
        serve_peer() as server,
        open_client(server.url, token("alice"), subprotocol=JSON) as client,
    ):
        with pytest.raises(LocalProtocolError, match="msgpack"):
            await client.send_message("c:1", b"\x00")
        assert client.statistics().pending_requests == 0


# ------------------------------------------------------------------------------------------
# Timeouts


async def test_a_request_times_out_after_request_timeout() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        start = trio.current_time()
        with pytest.raises(RequestTimeout, match="'ping'") as caught:
            await client.ping()
        assert trio.current_time() - start == pytest.approx(10)
        assert isinstance(caught.value, trio.TooSlowError)
        assert client.statistics().pending_requests == 0
        # A late reply is dropped and counted; it does not reach the events.
        request = await peer.receive()
        await peer.send(Pong(ref=ref_of(request), server_time=1))
        client.request_timeout = 2.5
        start = trio.current_time()
        with pytest.raises(RequestTimeout):
            await client.convs()
        assert trio.current_time() - start == pytest.approx(2.5)
        assert client.statistics().late_replies == 1
        assert client.statistics().events_buffered == 0


async def test_request_timeout_none_waits_until_the_caller_cancels() -> None:
    async with (
        serve_peer() as server,
        open_client(server.url, token("alice"), request_timeout=None) as client,
    ):
        await server.accept()
        with trio.move_on_after(3600) as scope:
            await client.ping()
        assert scope.cancelled_caught
        assert client.statistics().pending_requests == 0


async def test_request_timeout_must_be_positive_or_none() -> None:
    async with serve_peer() as server:
        with pytest.raises(ValueError, match="request_timeout"):
            async with open_client(server.url, token("alice"), request_timeout=0):
                pytest.fail("connected")  # pragma: no cover


# ------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("code", list(ErrorCode))
@pytest.mark.parametrize("subprotocol", [MSGPACK, JSON])
async def test_server_errors_are_raised_with_code_reason_and_retry_after(
    code: ErrorCode, subprotocol: str
) -> None:
    retry_after = 2.5 if code in (ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE) else None
    async with serve_peer() as server:
        server.answer = lambda request: [
            Error(ref=ref_of(request), code=code, reason="because", retry_after=retry_after)
        ]
        # Raised inside the client's block, it comes out as itself, not in an exception group.
        with pytest.raises(ServerError) as caught:
            async with open_client(server.url, token("alice"), subprotocol=subprotocol) as client:
                await client.send_message("c:1", "hi")
    assert caught.value.code is code
    assert caught.value.reason == "because"
    assert caught.value.retry_after == retry_after
    assert caught.value.ref is not None


async def test_send_retries_unavailable_after_retry_after_with_the_same_cmid() -> None:
    requests: list[Send] = []

    def answer(request: ClientEvent) -> list[ServerEvent]:
        assert isinstance(request, Send)
        requests.append(request)
        if len(requests) < 3:
            code = ErrorCode.UNAVAILABLE if len(requests) == 1 else ErrorCode.RATE_LIMITED
            return [Error(ref=request.ref, code=code, reason="later", retry_after=4)]
        return [ack_for(request)]

    async with serve_peer() as server:
        server.answer = answer
        async with open_client(server.url, token("alice")) as client:
            start = trio.current_time()
            ack = await client.send_message("c:1", "hi", retries=2)
            assert trio.current_time() - start == pytest.approx(8)
    assert len({r.cmid for r in requests}) == 1
    assert ack.cmid == requests[0].cmid


async def test_send_does_not_retry_other_errors_or_beyond_retries() -> None:
    async with serve_peer() as server:
        server.answer = lambda r: [Error(ref=ref_of(r), code=ErrorCode.FORBIDDEN, reason="no")]
        async with open_client(server.url, token("alice")) as client:
            with pytest.raises(ServerError, match="forbidden"):
                await client.send_message("c:1", "hi", retries=5)
        server.answer = lambda r: [
            Error(ref=ref_of(r), code=ErrorCode.RATE_LIMITED, reason="slow", retry_after=1)
        ]
        async with open_client(server.url, token("alice")) as client:
            with pytest.raises(ServerError, match="rate_limited"):
                await client.send_message("c:1", "hi", retries=1)


async def test_an_exception_in_the_block_propagates_as_itself() -> None:
    async with serve_peer() as server:
        with pytest.raises(KeyError, match="mine"):
            async with open_client(server.url, token("alice")):
                raise KeyError("mine")


# ------------------------------------------------------------------------------------------
# Unsolicited frames


@pytest.mark.parametrize("subprotocol", [MSGPACK, JSON])
async def test_unsolicited_frames_arrive_on_events_in_order(subprotocol: str) -> None:
    frames: list[ServerEvent] = [
        msg(1, "hello"),
        ReceiptNotice(conv="c:1", user="bob", seq=1, status="read"),
        ConvInfo(
            conv="g:1", kind="group", title="G", members=("a", "b"), admins=("b",), last_seq=0
        ),
        ConvLeft(conv="g:2"),
        TypingNotice(conv="c:1", user="bob", state="start"),
        Presence(user="bob", status="offline", last_seen=SERVER_TIME - 1000),
        Presence(user="carol", status="online"),
        Synced(convs={"c:1": 1, "g:1": 0}),
        Error(code=ErrorCode.BAD_REQUEST, reason="receipt.seq: must be an integer"),
    ]
    async with (
        serve_peer() as server,
        open_client(server.url, token("alice"), subprotocol=subprotocol) as client,
    ):
        peer = await server.accept()
        await peer.send(*frames)
        received = [await next_event(client.events) for _ in frames]
    assert received == frames


@pytest.mark.parametrize("subprotocol", [MSGPACK, JSON])
async def test_bytes_bodies_arrive_as_bytes_on_both_subprotocols(subprotocol: str) -> None:
    async with (
        serve_peer() as server,
        open_client(server.url, token("alice"), subprotocol=subprotocol) as client,
    ):
        peer = await server.accept()
        await peer.send(msg(1, b"\x00\xffcipher"))  # json: sent as body_b64
        event = await next_event(client.events)
    assert isinstance(event, Msg)
    assert event.body == b"\x00\xffcipher"


async def test_unknown_frame_types_are_skipped_and_unknown_fields_ignored() -> None:
    async with (
        serve_peer() as server,
        open_client(server.url, token("alice"), subprotocol=JSON) as client,
    ):
        peer = await server.accept()
        await peer.send_raw('{"type":"future.thing","x":1}')
        await peer.send_raw('{"type":"conv.left","conv":"g:9","why":"kicked"}')
        assert await next_event(client.events) == ConvLeft(conv="g:9")
        assert client.statistics().unknown_frames == 1


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # not msgpack
        "{}",  # a text frame under msgpack
        b"\x91\x01",  # a list, not a map
        b"\x82\xa4type\xa3msg\xa4conv\x01",  # msg with a mistyped conv and missing fields
    ],
)
async def test_a_frame_the_protocol_forbids_closes_with_1002(data: bytes | str) -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.serve, lambda r: [])
            await peer.send_raw(data)
            closed = await next_event(client.events)
        assert isinstance(closed, Closed)
        assert closed.code == 1002
        assert client.closed == closed
        with pytest.raises(ConnectionClosedError) as caught:
            await client.ping()
        assert caught.value.code == 1002


# ------------------------------------------------------------------------------------------
# Requests answered by several frames


async def test_sync_returns_the_messages_then_synced_and_keeps_them_off_events() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                request = await peer.receive()
                assert isinstance(request, Sync)
                assert dict(request.convs) == {"c:1": 1}
                await peer.send(msg(2), msg(3, conv="c:2"), msg(3), msg(3))
                await peer.send(Synced(ref=request.ref, convs={"c:1": 3}))

            nursery.start_soon(answer)
            result = await client.sync({"c:1": 1})
        assert result.messages == (msg(2), msg(3))  # the repeat of 3 is dropped
        assert dict(result.convs) == {"c:1": 3}
        assert client.cursors == {"c:1": 3, "c:2": 3}
        assert await next_event(client.events) == msg(3, conv="c:2")  # not asked: an event


async def test_subscribe_presence_returns_each_users_presence() -> None:
    bob = Presence(user="bob", status="online")
    carol = Presence(user="carol", status="offline", last_seen=5)
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                request = await peer.receive()
                assert isinstance(request, PresenceSub)
                assert request.users == ("bob", "carol")
                await peer.send(carol, bob)
                forbidden = await peer.receive()
                await peer.send(Error(ref=ref_of(forbidden), code=ErrorCode.FORBIDDEN, reason="x"))

            nursery.start_soon(answer)
            assert await client.subscribe_presence(["carol", "bob"]) == {"bob": bob, "carol": carol}
            with pytest.raises(ServerError, match="forbidden"):
                await client.subscribe_presence(["mallory"])
        assert [await next_event(client.events) for _ in "ab"] == [carol, bob]


@pytest.mark.parametrize("answered_with", ["conv.left", "conv"])
async def test_leave_is_done_on_conv_left_or_on_the_reply(answered_with: str) -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                request = await peer.receive()
                assert isinstance(request, ConvRemove)
                assert (request.conv, request.users) == ("g:1", ("alice",))
                if answered_with == "conv.left":
                    await peer.send(ConvLeft(conv="g:2"), ConvLeft(conv="g:1"))
                else:
                    reply = ConvInfo(
                        ref=request.ref,
                        conv="g:1",
                        kind="group",
                        title="G",
                        members=("bob",),
                        admins=("bob",),
                        last_seq=4,
                    )
                    await peer.send(reply)

            nursery.start_soon(answer)
            await client.leave("g:1")


# ------------------------------------------------------------------------------------------
# Closing


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1000, ""),
        (1008, "bad frames"),
        (1009, ""),
        (1012, "shutting down"),
        (4008, "slow"),
        (4009, "replaced"),
    ],
)
async def test_close_codes_are_surfaced(code: int, reason: str) -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        async with trio.open_nursery() as nursery:

            async def waiting_request() -> None:
                with pytest.raises(ConnectionClosedError) as caught:
                    await client.ping()
                assert (caught.value.code, caught.value.reason) == (code, reason)

            nursery.start_soon(waiting_request)
            await peer.receive()
            await peer.send(msg(1))
            await peer.close(code, reason)
        assert await next_event(client.events) == msg(1)  # what came before the close is kept
        assert await next_event(client.events) == Closed(code, reason)
        assert client.closed == Closed(code, reason)
        with pytest.raises(ConnectionClosedError):
            await client.receipt("c:1", 1)


async def test_aclose_closes_with_the_code_and_ends_events() -> None:
    reached = False
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        start = trio.current_time()
        await client.aclose(4000, "bye")
        assert trio.current_time() == start  # the closing handshake, not close_timeout
        await client.aclose()  # idempotent
        assert client.closed == Closed(4000, "bye")
        assert await next_event(client.events) == Closed(4000, "bye")
        with pytest.raises(trio.EndOfChannel):
            await client.events.receive()
        with pytest.raises(ConnectionClosedError):
            await client.ping()
        with pytest.raises(ConnectionClosed) as caught:
            await peer.receive()
        assert caught.value.reason is not None
        assert (caught.value.reason.code, caught.value.reason.reason) == (4000, "bye")
        # aclose() stops the client's tasks, not the caller's block.
        await trio.lowlevel.checkpoint()
        reached = True
    assert reached


# ------------------------------------------------------------------------------------------
# Reconnecting


async def test_reconnect_resumes_and_drops_what_was_already_delivered() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        first = await server.accept()
        await first.send(msg(1), msg(2))
        assert [await next_event(client.events) for _ in "12"] == [msg(1), msg(2)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.serve, lambda r: [ack_for(r, seq=4)])
            own = await client.send_message("c:1", "mine")
            await first.send(msg(3))
            assert await next_event(client.events) == msg(3)
            await first.close(1012, "restarting")
        assert await next_event(client.events) == Closed(1012, "restarting")

        start = trio.current_time()
        welcome = await client.reconnect()
        assert trio.current_time() == start
        assert welcome.user == "alice"
        assert client.closed is None
        second = await server.accept()
        # The connect-time sync repeats everything: only 5 is new (4 is this device's own).
        mine = dataclasses.replace(msg(4, "mine", sender="alice"), id=own.id, cmid=own.cmid)
        await second.send(msg(1), msg(2), msg(3), mine, msg(5), Synced(convs={"c:1": 5}))
        assert await next_event(client.events) == msg(5)
        assert await next_event(client.events) == Synced(convs={"c:1": 5})
        assert client.cursors == {"c:1": 5}
        assert client.statistics().duplicates_dropped == 4
        assert client.statistics().connections == 2


async def test_reconnect_closes_an_open_connection_first() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        first = await server.accept()
        await client.reconnect()
        with pytest.raises(ConnectionClosed) as caught:
            await first.receive()
        assert caught.value.reason is not None
        assert caught.value.reason.code == 1000
        second = await server.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(second.serve, lambda r: [Pong(ref=ref_of(r), server_time=2)])
            assert (await client.ping()).server_time == 2
            nursery.cancel_scope.cancel()


async def test_a_request_waiting_on_the_old_connection_fails() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        await server.accept()
        async with trio.open_nursery() as nursery:

            async def waiting() -> None:
                with pytest.raises(ConnectionClosedError):
                    await client.ping()

            nursery.start_soon(waiting)
            await trio.testing.wait_all_tasks_blocked()
            await client.reconnect()


async def test_reconnect_retries_with_backoff_then_gives_up() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        first = await server.accept()
        await first.close(1012)
        server.reject = 503
        start = trio.current_time()
        with pytest.raises(HandshakeRejected) as caught:
            await client.reconnect(attempts=4, backoff=1, max_backoff=3)
        assert caught.value.status_code == 503
        assert trio.current_time() - start == pytest.approx(1 + 2 + 3)
        assert server.handshakes == 1 + 4

        async with trio.open_nursery() as nursery:

            async def heal() -> None:
                await trio.sleep(10)
                server.reject = None

            nursery.start_soon(heal)
            start = trio.current_time()
            await client.reconnect(attempts=None, backoff=1, max_backoff=4)
            assert trio.current_time() - start == pytest.approx(1 + 2 + 4 + 4)


async def test_reconnect_does_not_retry_a_bad_token() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        await server.accept()
        with pytest.raises(HandshakeRejected) as caught:
            await client.reconnect(token="expired", attempts=5)
        assert caught.value.status_code == 401
        assert server.handshakes == 2
        await client.reconnect(token=token("alice"))
        assert client.welcome.user == "alice"


async def test_reconnect_after_aclose_is_refused() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        await client.aclose()
        with pytest.raises(ConnectionClosedError):
            await client.reconnect()


@pytest.mark.parametrize("read_first", [True, False])
async def test_a_server_that_closes_before_the_upgrade_is_a_connect_error_at_once(
    read_first: bool,
) -> None:
    # A listener being killed accepts the TCP connection and closes it without an answer.
    async def close_at_once(stream: trio.SocketStream) -> None:
        if read_first:
            await stream.receive_some()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), close_at_once, 0)
        port = listeners[0].socket.getsockname()[1]
        start = trio.current_time()
        with pytest.raises(ConnectError, match="before the upgrade"):
            async with open_client(f"ws://127.0.0.1:{port}/ws", token("alice")):
                pytest.fail("connected")  # pragma: no cover
        assert trio.current_time() - start < 1
        nursery.cancel_scope.cancel()
