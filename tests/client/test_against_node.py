"""The client library against a real node: ``parley serve --port 0`` in its own process.

Real time here (a separate process cannot share a virtual clock); every wait is bounded.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway import (
    Client,
    Closed,
    ConnectionClosedError,
    ConvLeft,
    ErrorCode,
    HandshakeRejected,
    Incoming,
    Msg,
    ReceiptNotice,
    ServerError,
    Synced,
    TypingNotice,
    open_client,
)
from tests.node._node import NodeProcess, running_node, unique

pytestmark = pytest.mark.anyio

WAIT = 10.0


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {})


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("client-node") / "data") as process:
        yield process


async def until(client: Client, kind: type[Any], **fields: object) -> Any:
    """The next event of type ``kind`` with these field values (others are skipped)."""
    with trio.fail_after(WAIT):
        async for event in client.events:
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items()):
                return event
    raise AssertionError("the events ended")  # pragma: no cover


async def drain(client: Client, seconds: float = 0.3) -> list[Incoming]:
    """Everything that arrives within ``seconds``."""
    events: list[Incoming] = []
    with trio.move_on_after(seconds):
        async for event in client.events:
            events.append(event)
    return events


async def test_two_users_chat(node: NodeProcess) -> None:
    alice, bob = unique("alice"), unique("bob")
    async with (
        open_client(node.url, node.token(alice)) as a,
        open_client(node.url, node.token(bob), subprotocol="parley.v1.json") as b,
    ):
        await until(a, Synced)
        await until(b, Synced)
        conv = (await a.create_direct(bob)).conv
        assert (await b.create_direct(alice)).conv == conv  # the same pair, the same conversation

        ack = await a.send_message(conv, "hi bob")
        assert ack.seq == 1
        got = await until(b, Msg, conv=conv)
        assert (got.id, got.seq, got.from_user, got.body) == (ack.id, 1, alice, "hi bob")

        await b.receipt(conv, got.seq, "read")
        notice = await until(a, ReceiptNotice, conv=conv)
        assert (notice.user, notice.seq, notice.status) == (bob, 1, "read")

        await b.typing(conv, "start")
        assert (await until(a, TypingNotice, conv=conv)).user == bob

        presence = await a.subscribe_presence([bob])
        assert presence[bob].status == "online"

        reply = await b.send_message(conv, "hello alice", cmid="bob-1")
        again = await b.send_message(conv, "hello alice", cmid="bob-1")  # idempotent resend
        assert (again.id, again.seq) == (reply.id, reply.seq) == (again.id, 2)
        assert (await until(a, Msg, conv=conv)).body == "hello alice"
        assert [m for m in await drain(a) if isinstance(m, Msg)] == []  # stored once, sent once

        ciphertext = await a.send_message(conv, b"\x00\xff", kind="e2e")
        assert (await until(b, Msg, seq=ciphertext.seq)).body == b"\x00\xff"  # json: body_b64

        page = await b.history(conv, limit=2)
        assert [m.seq for m in page.messages] == [2, 3]
        assert page.more
        summary = {c.conv: c for c in await a.convs()}[conv]
        assert (summary.kind, summary.last_seq) == ("direct", 3)
        assert (await a.ping()).server_time > 0
        start = trio.current_time()
        await b.aclose()
        assert trio.current_time() - start < 1.0  # the closing handshake, not close_timeout


async def test_errors_from_the_node(node: NodeProcess) -> None:
    alice, bob, eve = unique("alice"), unique("bob"), unique("eve")
    async with (
        open_client(node.url, node.token(alice)) as a,
        open_client(node.url, node.token(eve)) as e,
    ):
        conv = (await a.create_direct(bob)).conv
        with pytest.raises(ServerError) as caught:
            await e.send_message(conv, "let me in")
        assert caught.value.code is ErrorCode.FORBIDDEN
        with pytest.raises(ServerError) as caught:
            await e.history(conv)
        assert caught.value.code is ErrorCode.FORBIDDEN
        with pytest.raises(ServerError) as caught:
            await a.send_message(conv, "x" * 20_000)
        assert caught.value.code is ErrorCode.TOO_LARGE
    with pytest.raises(HandshakeRejected) as refused:
        async with open_client(node.url, "not.a.token"):
            pytest.fail("connected")  # pragma: no cover
    assert refused.value.status_code == 401


async def test_group_admin_and_leave(node: NodeProcess) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    async with (
        open_client(node.url, node.token(alice)) as a,
        open_client(node.url, node.token(bob)) as b,
        open_client(node.url, node.token(carol)) as c,
    ):
        group = await a.create_group("Friends", [bob])
        assert set(group.members) == {alice, bob}
        assert group.admins == (alice,)
        with pytest.raises(ServerError, match="forbidden"):
            await b.add_members(group.conv, [carol])
        assert set((await a.add_members(group.conv, [carol])).members) == {alice, bob, carol}
        await a.send_message(group.conv, "welcome carol")
        assert (await until(c, Msg, conv=group.conv)).body == "welcome carol"
        await c.leave(group.conv)
        await until(c, ConvLeft, conv=group.conv)
        updated = await a.remove_members(group.conv, [bob])
        assert set(updated.members) == {alice}
        await until(b, ConvLeft, conv=group.conv)


async def test_reconnect_delivers_what_was_missed_exactly_once(node: NodeProcess) -> None:
    alice, bob = unique("alice"), unique("bob")
    async with open_client(node.url, node.token(alice)) as a:
        async with open_client(node.url, node.token(bob)) as b:
            conv = (await a.create_direct(bob)).conv
            first = await a.send_message(conv, "one")
            assert (await until(b, Msg, conv=conv)).id == first.id  # no delivered receipt sent
            mine = await b.send_message(conv, "mine")
        missed = [await a.send_message(conv, text) for text in ("two", "three")]
        async with open_client(node.url, node.token(bob)) as b2:
            got = [e for e in await drain_until_synced(b2) if isinstance(e, Msg)]
        # A new client without cursors gets the connect-time sync as the node sends it.
        assert [m.id for m in got][-2:] == [m.id for m in missed]

        # The same client reconnecting drops what it already delivered (and its own message).
        async with open_client(node.url, node.token(bob)) as b3:
            await until(b3, Synced)
            fourth = await a.send_message(conv, "four")
            assert (await until(b3, Msg, conv=conv)).id == fourth.id
            await b3.reconnect()
            events = await drain_until_synced(b3)
            assert [e for e in events if isinstance(e, Msg)] == []
            assert b3.cursors[conv] == fourth.seq
            assert b3.statistics().duplicates_dropped >= 1
            assert mine.seq < fourth.seq


async def drain_until_synced(client: Client) -> list[Incoming]:
    events: list[Incoming] = []
    with trio.fail_after(WAIT):
        async for event in client.events:
            events.append(event)
            if isinstance(event, Synced):
                return events
    raise AssertionError("the events ended")  # pragma: no cover


async def test_sigterm_closes_with_1012(tmp_path: Path) -> None:
    with running_node(tmp_path / "data") as own:
        async with open_client(own.url, own.token("alice")) as a:
            await until(a, Synced)
            await trio.to_thread.run_sync(own.signal, signal.SIGTERM)
            closed = await until(a, Closed)
            assert closed.code == 1012
            with pytest.raises(ConnectionClosedError):
                await a.ping()


async def test_a_gap_in_what_the_node_pushes_is_filled_in_order(node: NodeProcess) -> None:
    alice, bob = unique("alice"), unique("bob")
    async with (
        open_client(node.url, node.token(alice)) as a,
        open_client(node.url, node.token(bob)) as b,
    ):
        conv = (await a.create_direct(bob)).conv
        acks = [await a.send_message(conv, "one")]
        assert (await until(b, Msg, conv=conv)).seq == 1
        # Another process of the same device replaces b's connection (4009), is sent the next
        # messages and says it has everything up to 3: b's connect-time sync starts above that,
        # which leaves b a gap at 2 and 3.
        async with open_client(node.url, node.token(bob)) as other:
            assert (await until(b, Closed)).code == 4009
            acks += [await a.send_message(conv, text) for text in ("two", "three", "four", "five")]
            assert (await until(other, Msg, conv=conv, seq=5)).id == acks[-1].id
            await other.receipt(conv, 3, "delivered")
            await other.ping()  # the receipt was handled before the ping's pong
        await b.reconnect()
        got: list[Msg] = []
        with trio.fail_after(WAIT):
            async for event in b.events:
                if isinstance(event, Msg) and event.conv == conv:
                    got.append(event)
                    if event.seq == 5:
                        break
        assert [m.seq for m in got] == [2, 3, 4, 5]
        assert [m.id for m in got] == [ack.id for ack in acks[1:]]
        assert b.cursors[conv] == 5
        assert b.statistics().gap_syncs == 1


async def test_a_sync_right_after_a_reconnect_brings_nothing_twice(node: NodeProcess) -> None:
    alice, bob = unique("alice"), unique("bob")
    async with (
        open_client(node.url, node.token(alice)) as a,
        open_client(node.url, node.token(bob)) as b,
    ):
        await until(b, Synced)
        conv = (await a.create_direct(bob)).conv
        acks = [await a.send_message(conv, f"m{i}") for i in range(1, 6)]
        assert (await until(b, Msg, conv=conv, seq=5)).id == acks[-1].id
        # bob sends no receipts: his delivered watermark stays at 0, so the connect-time sync
        # pushes 1..5 again while his sync is pending.
        await b.reconnect()
        result = await b.sync({conv: 5})
        assert [m.seq for m in result.messages] == []
        sixth = await a.send_message(conv, "m6")
        events = [e for e in await drain_until_synced(b) if isinstance(e, Msg)]
        assert [m.seq for m in events] == []
        assert (await until(b, Msg, conv=conv)).id == sixth.id
        assert b.cursors[conv] == 6
