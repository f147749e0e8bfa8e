"""A conversation's group commit, in an in-process node: sends that arrive while a commit is in
flight are committed together in the next one, each acked after its own commit, with seqs
gapless and fan-out in seq order, also when a batch holds a resend of a message stored earlier
or when the batch's outcome is unknown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gateway import Ack, Msg, ServerError
from gateway._services import conv_name
from storage import Message, shard_name

from ._memory import MemoryBackend
from .test_commit_outcomes import kill_once_after_commit, memory
from .test_in_process import anyio_backend as anyio_backend  # trio, virtual time
from .test_in_process import msg_seq, running, until

pytestmark = pytest.mark.anyio


class Gate:
    """Holds every commit of ``conv`` after it is stored and before its reply, until opened:
    the conversation's next sends queue up meanwhile."""

    def __init__(self, backend: MemoryBackend, conv: str) -> None:
        self.conv = conv
        self.batches: list[list[int]] = []
        self.held = trio.Event()
        self.open = trio.Event()
        backend.after_append = self.hook

    async def hook(self, batch: list[Message]) -> None:
        if batch[0].conv != self.conv:
            return
        self.batches.append([m.seq for m in batch])
        self.held.set()
        await self.open.wait()


async def send_all(client: Any, conv: str, texts: list[str]) -> list[Ack]:
    acks: list[Ack] = []
    for text in texts:
        acks.append(await client.send_message(conv, text, cmid=text, retries=5))
    return acks


async def msgs(client: Any, conv: str, count: int) -> list[Msg]:
    got: list[Msg] = []
    while len(got) < count:
        got.append(await until(client, lambda e: isinstance(e, Msg) and e.conv == conv))
    return got


async def test_sends_queued_behind_a_commit_are_committed_together(tmp_path: Path) -> None:
    users = ["ann", "ben", "cat", "dan"]
    async with (
        running(tmp_path, send_burst=100) as n,
        n.client("ann") as a,
        n.client("ben") as b,
        n.client("cat") as c,
        n.client("dan") as d,
    ):
        clients = dict(zip(users, (a, b, c, d), strict=True))
        conv = (await a.create_group("g", users[1:])).conv
        gate = Gate(memory(n), conv)
        acks: dict[str, list[Ack]] = {}

        async def sender(user: str) -> None:
            acks[user] = await send_all(clients[user], conv, [f"{user}{i}" for i in range(5)])

        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(sender, user)
            await gate.held.wait()
            await trio.sleep(1)  # the other three senders' first messages queue up
            gate.open.set()
        seqs = sorted(ack.seq for user in users for ack in acks[user])
        assert seqs == list(range(1, 21))
        for user in users:  # each sender's messages in the order sent
            assert [ack.seq for ack in acks[user]] == sorted(ack.seq for ack in acks[user])
        assert len(gate.batches) < 20
        assert max(len(batch) for batch in gate.batches) > 1
        assert all(batch == list(range(batch[0], batch[-1] + 1)) for batch in gate.batches)
        # Every member gets the others' messages, gaplessly and in seq order.
        for user in users:
            others = [ack for other in users if other != user for ack in acks[other]]
            got = await msgs(clients[user], conv, len(others))
            assert [m.id for m in got] == [ack.id for ack in sorted(others, key=lambda k: k.seq)]
        history = await a.history(conv, limit=50)
        assert [m.seq for m in history.messages] == list(range(1, 21))


async def test_the_same_cmid_twice_in_one_batch_is_one_message(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as n,
        n.client("ann", "phone") as phone,
        n.client("ann", "laptop") as laptop,
        n.client("ben") as b,
    ):
        conv = (await phone.create_direct("ben")).conv
        gate = Gate(memory(n), conv)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.send_message, conv, "first")
            await gate.held.wait()
            results: list[Ack] = []

            async def send(client: Any) -> None:
                results.append(await client.send_message(conv, "same", cmid="dup"))

            nursery.start_soon(send, phone)
            nursery.start_soon(send, laptop)
            await trio.sleep(1)
            gate.open.set()
        assert len(results) == 2
        assert [(r.id, r.seq, r.ts) for r in results] == [(results[0].id, 2, results[0].ts)] * 2
        assert gate.batches == [[1], [2]]
        assert [m.seq for m in memory(n).messages[conv].values()] == [1, 2]
        got = await until(b, msg_seq(conv, 2))
        assert got.id == results[0].id


async def test_a_resend_in_a_batch_takes_no_seq(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as n,
        n.client("ann") as a,
        n.client("ben") as b,
        n.client("cat") as c,
    ):
        conv = (await a.create_group("g", ["ben", "cat"])).conv
        assert (await a.send_message(conv, "one")).seq == 1
        committed = kill_once_after_commit(n, conv_name(conv))
        with pytest.raises(ServerError):
            await a.send_message(conv, "two", cmid="two")  # stored at 2, ann not told
        assert [m.seq for m in committed] == [2]
        gate = Gate(memory(n), conv)
        acks: dict[str, Ack] = {}

        async def send(client: Any, text: str) -> None:
            acks[text] = await client.send_message(conv, text, cmid=text, retries=5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, b, "three")
            await gate.held.wait()
            nursery.start_soon(send, a, "two")  # the resend
            nursery.start_soon(send, c, "four")
            await trio.sleep(1)
            gate.open.set()
        assert (acks["two"].seq, acks["two"].id) == (2, committed[0].id)
        assert {acks["three"].seq, acks["four"].seq} == {3, 4}
        assert sorted(memory(n).messages[conv]) == [1, 2, 3, 4]
        assert memory(n).lookups >= 1


async def test_after_a_batch_with_an_unknown_outcome_seqs_resume_from_storage(
    tmp_path: Path,
) -> None:
    async with (
        running(tmp_path) as n,
        n.client("ann") as a,
        n.client("ben") as b,
        n.client("cat") as c,
    ):
        conv = (await a.create_group("g", ["ben", "cat"])).conv
        gate = Gate(memory(n), conv)
        acks: dict[str, Ack] = {}
        errors: list[str] = []

        async def send(client: Any, text: str) -> None:
            try:
                acks[text] = await client.send_message(conv, text, cmid=text)
            except ServerError as exc:
                errors.append(exc.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, a, "one")
            await gate.held.wait()
            nursery.start_soon(send, b, "two")
            nursery.start_soon(send, c, "three")
            await trio.sleep(1)
            # The batch of two and three is stored, then the shard dies before it answers.
            memory(n).after_append = None
            committed = kill_once_after_commit(n, shard_name(0))
            gate.open.set()
        assert acks["one"].seq == 1
        assert [m.seq for m in committed] == [2, 3]
        assert errors == ["unavailable", "unavailable"]
        await trio.sleep(1)  # the shard restarts
        four = await a.send_message(conv, "four", cmid="four", retries=5)
        assert four.seq == 4
        again = await c.send_message(conv, "three", cmid="three", retries=5)
        (stored,) = [m for m in committed if m.cmid == "three"]
        assert (again.seq, again.id) == (stored.seq, stored.id)
        assert memory(n).conflicts == 0
        assert sorted(memory(n).messages[conv]) == [1, 2, 3, 4]


async def test_without_a_lookup_by_key_sends_are_committed_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def cannot(self: MemoryBackend, conv: str, keys: Any) -> None:
        await trio.lowlevel.checkpoint()

    monkeypatch.setattr(MemoryBackend, "find_messages", cannot)
    async with (
        running(tmp_path) as n,
        n.client("ann") as a,
        n.client("ben") as b,
        n.client("cat") as c,
    ):
        conv = (await a.create_group("g", ["ben", "cat"])).conv
        gate = Gate(memory(n), conv)
        acks: list[Ack] = []

        async def send(client: Any, text: str) -> None:
            acks.append(await client.send_message(conv, text, cmid=text))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, a, "one")
            await gate.held.wait()
            for client, text in ((b, "two"), (c, "three"), (a, "four")):
                nursery.start_soon(send, client, text)
            await trio.sleep(1)
            gate.open.set()
        assert sorted(ack.seq for ack in acks) == [1, 2, 3, 4]
        assert all(len(batch) == 1 for batch in gate.batches)
