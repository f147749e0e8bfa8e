"""Gapless, in-order delivery by the client library, against a scripted peer that loses pushes:
a ``msg`` above the next expected ``seq`` is held, the client asks ``sync`` for the gap, and the
application sees every message once and in order."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from gateway import (
    Closed,
    ConnectionClosedError,
    ErrorCode,
    RequestTimeout,
    Send,
    ServerError,
    Sync,
    Synced,
    open_client,
)
from gateway._client import GAP_BACKOFF, GAP_GRACE
from gateway._frames import Error

from ._peer import Peer, serve_peer, token
from .test_client import ack_for, msg, next_event, ref_of

pytestmark = pytest.mark.anyio


async def sync_request(peer: Peer) -> Sync:
    with trio.fail_after(30):
        request = await peer.receive()
    assert isinstance(request, Sync), request
    return request


async def nothing_from(peer: Peer, seconds: float) -> None:
    with trio.move_on_after(seconds):
        request = await peer.receive()
        pytest.fail(f"the client sent {request!r}")


async def test_a_message_after_a_gap_is_held_until_sync_fills_the_gap() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1), msg(2), msg(4), msg(5), msg(2, conv="c:2"))
        assert [await next_event(client.events) for _ in "123"] == [
            msg(1),
            msg(2),
            msg(2, conv="c:2"),  # another conversation is not held up
        ]
        request = await sync_request(peer)
        assert dict(request.convs) == {"c:1": 2}
        assert client.statistics().messages_held == 2
        assert client.cursors == {"c:1": 2, "c:2": 2}
        await peer.send(msg(3), msg(4), msg(5), Synced(ref=request.ref, convs={"c:1": 5}))
        assert [await next_event(client.events) for _ in "345"] == [msg(3), msg(4), msg(5)]
        await peer.send(msg(3), msg(6))  # a late repeat of the lost push is dropped
        assert await next_event(client.events) == msg(6)
        assert client.cursors == {"c:1": 6, "c:2": 2}
        stats = client.statistics()
        assert (stats.messages_held, stats.gap_syncs, stats.duplicates_dropped) == (0, 1, 3)


async def test_one_gap_sync_per_conversation_at_a_time() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1), msg(3))
        assert await next_event(client.events) == msg(1)
        request = await sync_request(peer)
        await peer.send(msg(4), msg(6))  # more, and another gap, while the sync runs
        await nothing_from(peer, 5)
        await peer.send(msg(2), msg(3), Synced(ref=request.ref, convs={"c:1": 3}))
        assert [await next_event(client.events) for _ in "234"] == [msg(2), msg(3), msg(4)]
        again = await sync_request(peer)  # 5 is still missing: a second sync, after the first
        assert dict(again.convs) == {"c:1": 4}
        await peer.send(msg(5), msg(6), Synced(ref=again.ref, convs={"c:1": 6}))
        assert [await next_event(client.events) for _ in "56"] == [msg(5), msg(6)]
        assert client.statistics().gap_syncs == 2


async def test_an_own_ack_that_overtakes_a_push_does_not_cause_a_sync() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1))
        assert await next_event(client.events) == msg(1)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                await peer.send(ack_for(await peer.receive(), seq=3))
                await trio.sleep(GAP_GRACE / 2)
                await peer.send(msg(2))

            nursery.start_soon(answer)
            ack = await client.send_message("c:1", "mine")
        assert ack.seq == 3
        assert await next_event(client.events) == msg(2)
        assert client.cursors == {"c:1": 3}
        await nothing_from(peer, 10 * GAP_GRACE)
        # The echo of the own message (in a later connect-time sync) is not delivered.
        mine = dataclasses.replace(msg(3, "mine", sender="alice"), id=ack.id)
        await peer.send(mine, msg(4))
        assert await next_event(client.events) == msg(4)
        assert client.statistics().gap_syncs == 0


async def test_a_gap_behind_an_own_ack_is_filled_after_the_grace() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1))
        assert await next_event(client.events) == msg(1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: peer.serve(lambda r: [ack_for(r, seq=3)]))
            await client.send_message("c:1", "mine")
            nursery.cancel_scope.cancel()
        started = trio.current_time()
        request = await sync_request(peer)
        assert trio.current_time() - started == pytest.approx(GAP_GRACE)
        assert dict(request.convs) == {"c:1": 1}
        mine = dataclasses.replace(msg(3, "mine", sender="alice"), id="A3")
        await peer.send(msg(2), mine, Synced(ref=request.ref, convs={"c:1": 3}))
        assert await next_event(client.events) == msg(2)
        await peer.send(msg(4))
        assert await next_event(client.events) == msg(4)  # the echo of 3 was dropped
        assert client.cursors == {"c:1": 4}


async def test_a_gap_sync_cut_short_by_a_reconnect_is_made_again() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        first = await server.accept()
        await first.send(msg(1), msg(3))
        assert await next_event(client.events) == msg(1)
        await sync_request(first)
        await first.close(1012, "restarting")
        assert await next_event(client.events) == Closed(1012, "restarting")
        await client.reconnect()
        second = await server.accept()
        # The connect-time sync (the device's delivered watermark is 0 here) and synced.
        await second.send(msg(1), Synced(convs={"c:1": 3}))
        request = await sync_request(second)
        assert dict(request.convs) == {"c:1": 1}
        await second.send(msg(2), msg(3), Synced(ref=request.ref, convs={"c:1": 3}))
        events = [await next_event(client.events) for _ in "s23"]
        assert events == [Synced(convs={"c:1": 3}), msg(2), msg(3)]
        assert client.statistics().connections == 2


async def test_synced_above_the_cursor_is_a_gap_to_fill() -> None:
    # More than sync_limit missed: the connect-time sync stops short of the last seq.
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(11), msg(12), Synced(convs={"c:1": 14}))
        assert [await next_event(client.events) for _ in "ab"] == [msg(11), msg(12)]
        assert await next_event(client.events) == Synced(convs={"c:1": 14})
        request = await sync_request(peer)
        assert dict(request.convs) == {"c:1": 12}
        await peer.send(msg(13), msg(14), Synced(ref=request.ref, convs={"c:1": 14}))
        assert [await next_event(client.events) for _ in "cd"] == [msg(13), msg(14)]


async def test_held_messages_are_bounded_and_fetched_again() -> None:
    async with (
        serve_peer() as server,
        open_client(server.url, token("alice"), event_buffer=4) as client,
    ):
        peer = await server.accept()
        await peer.send(msg(1), *(msg(seq) for seq in range(3, 11)))
        assert await next_event(client.events) == msg(1)
        request = await sync_request(peer)
        await trio.testing.wait_all_tasks_blocked(0.01)
        assert client.statistics().messages_held == 4  # 3..6; 7..10 were let go
        await peer.send(*(msg(seq) for seq in range(2, 11)))
        await peer.send(Synced(ref=request.ref, convs={"c:1": 10}))
        got = [await next_event(client.events) for _ in range(2, 11)]
        assert got == [msg(seq) for seq in range(2, 11)]
        assert client.statistics().messages_held == 0


async def test_a_gap_the_server_refuses_to_fill_is_dropped() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1), msg(3))
        assert await next_event(client.events) == msg(1)
        request = await sync_request(peer)
        await peer.send(Error(ref=ref_of(request), code=ErrorCode.FORBIDDEN, reason="left"))
        await nothing_from(peer, 5)
        assert client.statistics().messages_held == 0
        await peer.send(msg(4))
        assert await next_event(client.events) == msg(4)


async def test_a_new_client_starts_where_the_server_starts() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        # Above the device's delivered watermark, as a connect-time sync sends them.
        await peer.send(msg(41), msg(42), Synced(convs={"c:1": 42, "c:2": 7}))
        events = [await next_event(client.events) for _ in "ab$"]
        assert events == [msg(41), msg(42), Synced(convs={"c:1": 42, "c:2": 7})]
        await peer.send(msg(8, conv="c:2"))
        assert await next_event(client.events) == msg(8, conv="c:2")
        assert client.cursors == {"c:1": 42, "c:2": 8}
        await nothing_from(peer, 5)


async def test_the_send_request_is_not_confused_with_a_gap_sync() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1))
        assert await next_event(client.events) == msg(1)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                send = await peer.receive()
                assert isinstance(send, Send)
                await peer.send(msg(3))  # 2 is the device's own, not acked yet
                await nothing_from(peer, GAP_GRACE / 2)  # no sync while the send is in flight
                await peer.send(ack_for(send, seq=2))

            nursery.start_soon(answer)
            assert (await client.send_message("c:1", "mine")).seq == 2
        assert await next_event(client.events) == msg(3)
        assert client.statistics().gap_syncs == 0


async def test_a_send_in_flight_holds_a_gap_sync_back_for_the_grace_only() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1))
        assert await next_event(client.events) == msg(1)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                send = await peer.receive()
                assert isinstance(send, Send)
                await peer.send(msg(3))  # 2 was lost, not this send's
                started = trio.current_time()
                request = await sync_request(peer)
                assert trio.current_time() - started == pytest.approx(GAP_GRACE)
                assert dict(request.convs) == {"c:1": 1}
                await peer.send(msg(2), msg(3), Synced(ref=request.ref, convs={"c:1": 3}))
                await peer.send(ack_for(send, seq=4))

            nursery.start_soon(answer)
            assert (await client.send_message("c:1", "mine")).seq == 4
        assert [await next_event(client.events) for _ in "23"] == [msg(2), msg(3)]
        assert client.cursors == {"c:1": 4}


# ------------------------------------------------------------------------------------------
# The application's own sync


async def test_a_sync_after_a_reconnect_holds_nothing_at_or_below_its_cursors() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        first = await server.accept()
        await first.send(*(msg(seq) for seq in range(1, 6)))
        assert [await next_event(client.events) for _ in range(5)] == [
            msg(seq) for seq in range(1, 6)
        ]
        await client.reconnect()
        second = await server.accept()
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                request = await sync_request(second)
                assert dict(request.convs) == {"c:1": 5}
                # The connect-time push from the device's (lagging) delivered watermark arrives
                # while the sync is pending, then the sync's own answer.
                await second.send(*(msg(seq) for seq in range(1, 7)), Synced(convs={"c:1": 6}))
                await second.send(msg(6), msg(7), Synced(ref=request.ref, convs={"c:1": 7}))

            nursery.start_soon(answer)
            result = await client.sync({"c:1": 5})
        assert result.messages == (msg(6), msg(7))
        events = [await next_event(client.events) for _ in "cs"]  # and no msg
        assert events == [Closed(1000, "reconnecting"), Synced(convs={"c:1": 6})]
        await second.send(msg(7), msg(8))
        assert await next_event(client.events) == msg(8)
        assert client.cursors == {"c:1": 8}


async def test_a_sync_answer_stops_at_a_gap_and_the_rest_follows_in_order() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1))
        assert await next_event(client.events) == msg(1)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                request = await sync_request(peer)
                await peer.send(msg(2), msg(4), Synced(ref=request.ref, convs={"c:1": 4}))
                gap = await sync_request(peer)
                assert dict(gap.convs) == {"c:1": 2}
                await peer.send(msg(3), msg(4), Synced(ref=gap.ref, convs={"c:1": 4}))

            nursery.start_soon(answer)
            result = await client.sync(client.cursors)
            assert result.messages == (msg(2),)
            assert [await next_event(client.events) for _ in "34"] == [msg(3), msg(4)]


async def test_a_cursor_above_the_clients_counts_as_had() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(1))
        assert await next_event(client.events) == msg(1)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                request = await sync_request(peer)
                await peer.send(msg(3), msg(4), msg(5), Synced(ref=request.ref, convs={"c:1": 5}))

            nursery.start_soon(answer)
            result = await client.sync({"c:1": 3})
        assert result.messages == (msg(4), msg(5))
        assert client.cursors == {"c:1": 5}
        await nothing_from(peer, 5)


async def test_what_a_failed_sync_collected_comes_on_events_in_order() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(217))
        assert await next_event(client.events) == msg(217)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                request = await sync_request(peer)
                await peer.send(msg(218), msg(219), msg(220))
                busy = Error(ref=ref_of(request), code=ErrorCode.UNAVAILABLE, reason="restarting")
                await peer.send(busy)

            nursery.start_soon(answer)
            with pytest.raises(ServerError, match="unavailable"):
                await client.sync(client.cursors)
        assert [await next_event(client.events) for _ in "abc"] == [msg(218), msg(219), msg(220)]
        await peer.send(msg(221))
        assert await next_event(client.events) == msg(221)
        assert client.statistics().messages_held == 0


async def test_a_gap_behind_a_failed_sync_is_filled_with_backoff() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(217))
        assert await next_event(client.events) == msg(217)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                request = await sync_request(peer)
                await peer.send(msg(219), msg(220))  # 218's push was lost
                busy = Error(ref=ref_of(request), code=ErrorCode.UNAVAILABLE, reason="restarting")
                await peer.send(busy)

            nursery.start_soon(answer)
            with pytest.raises(ServerError, match="unavailable"):
                await client.sync(client.cursors)
        started = trio.current_time()
        for _ in range(2):  # the shard is still down: the gap sync is made again, later
            request = await sync_request(peer)
            assert dict(request.convs) == {"c:1": 217}
            await peer.send(Error(ref=ref_of(request), code=ErrorCode.UNAVAILABLE, reason="down"))
        request = await sync_request(peer)
        assert trio.current_time() - started == pytest.approx(GAP_BACKOFF * 3)
        await peer.send(msg(218), msg(219), msg(220), Synced(ref=request.ref, convs={"c:1": 220}))
        assert [await next_event(client.events) for _ in "abc"] == [msg(218), msg(219), msg(220)]
        assert client.statistics().messages_held == 0


async def test_what_a_sync_cut_short_by_a_close_collected_comes_after_the_reconnect() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        first = await server.accept()
        await first.send(msg(217))
        assert await next_event(client.events) == msg(217)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                await sync_request(first)
                await first.send(msg(218), msg(219))
                await first.close(1012, "restarting")

            nursery.start_soon(answer)
            with pytest.raises(ConnectionClosedError):
                await client.sync(client.cursors)
        assert await next_event(client.events) == Closed(1012, "restarting")
        await client.reconnect()
        second = await server.accept()
        # The delivered watermark lags: the connect-time sync pushes 210..219 again.
        await second.send(*(msg(seq) for seq in range(210, 220)), Synced(convs={"c:1": 219}))
        events = [await next_event(client.events) for _ in "ab$"]
        assert events == [msg(218), msg(219), Synced(convs={"c:1": 219})]
        await nothing_from(second, 5)


async def test_what_a_timed_out_sync_collected_comes_on_events() -> None:
    async with serve_peer() as server, open_client(server.url, token("alice")) as client:
        peer = await server.accept()
        await peer.send(msg(217))
        assert await next_event(client.events) == msg(217)
        client.request_timeout = 5
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                await sync_request(peer)
                await peer.send(msg(218), msg(219))  # then nothing: the sync times out

            nursery.start_soon(answer)
            with pytest.raises(RequestTimeout):
                await client.sync(client.cursors)
        request = await sync_request(peer)  # the gap sync, at once
        assert dict(request.convs) == {"c:1": 217}
        await peer.send(msg(218), msg(219), Synced(ref=request.ref, convs={"c:1": 219}))
        assert [await next_event(client.events) for _ in "ab"] == [msg(218), msg(219)]
