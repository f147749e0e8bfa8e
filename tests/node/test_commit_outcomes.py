"""Sends whose commit outcome the conversation actor never learned, in an in-process node: the
actor killed between the commit and its reply, and the storage shard killed likewise. The
message is durable though its sender got ``unavailable``; the resend must be acked with the
original id and seq and reach the other members, and no later message may take its seq."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway import Msg, ServerError
from gateway._services import conv_name
from storage import Message, shard_name

from ._memory import MemoryBackend
from .test_in_process import InProcessNode, msg_seq, running, until
from .test_in_process import anyio_backend as anyio_backend  # trio, virtual time

pytestmark = pytest.mark.anyio


def memory(n: InProcessNode) -> MemoryBackend:
    backend = n.services.backend  # type: ignore[attr-defined]
    assert isinstance(backend, MemoryBackend)
    return backend


def kill_once_after_commit(n: InProcessNode, name: str) -> list[Message]:
    """Kill ``name`` right after the next commit, before its reply; the committed batch."""
    committed: list[Message] = []

    def hook(batch: list[Message]) -> None:
        memory(n).after_append = None
        committed.extend(batch)
        n.kill(name)

    memory(n).after_append = hook
    return committed


async def test_a_resend_of_a_message_whose_actor_died_before_the_fan_out_is_delivered(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as n, n.client("ann") as a, n.client("ben") as b:
        conv = (await a.create_direct("ben")).conv
        assert (await a.send_message(conv, "one")).seq == 1
        await until(b, msg_seq(conv, 1))
        committed = kill_once_after_commit(n, conv_name(conv))
        with pytest.raises(ServerError) as refused:
            await a.send_message(conv, "two", cmid="two")
        assert refused.value.code == "unavailable"
        assert [m.seq for m in committed] == [2]  # durable, though ann was not told
        ack = await a.send_message(conv, "two", cmid="two")
        assert (ack.seq, ack.id, ack.ts) == (2, committed[0].id, committed[0].ts)
        delivered = await until(b, msg_seq(conv, 2))  # the new incarnation fanned it out
        assert delivered.id == ack.id
        assert (await a.send_message(conv, "three")).seq == 3


async def test_after_an_unknown_outcome_the_next_send_takes_the_next_seq(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as n, n.client("ann") as a, n.client("ben") as b:
        conv = (await a.create_direct("ben")).conv
        assert (await a.send_message(conv, "one")).seq == 1
        committed = kill_once_after_commit(n, shard_name(0))
        with pytest.raises(ServerError) as refused:
            await a.send_message(conv, "two", cmid="two")
        assert refused.value.code == "unavailable"
        assert [m.seq for m in committed] == [2]
        conversation = n.node.whereis(conv_name(conv))
        # Another message first: it must not reuse seq 2, nor meet it as a conflict.
        three = await a.send_message(conv, "three", cmid="three", retries=5)
        assert three.seq == 3
        assert memory(n).conflicts == 0
        again = await a.send_message(conv, "two", cmid="two")
        assert (again.seq, again.id) == (2, committed[0].id)
        assert (await a.send_message(conv, "four")).seq == 4
        assert n.node.whereis(conv_name(conv)) == conversation  # the same incarnation
        history = await b.history(conv)
        assert [m.seq for m in history.messages] == [1, 2, 3, 4]


async def test_a_resend_after_an_unknown_outcome_is_acked_and_fanned_out(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as n, n.client("ann") as a, n.client("ben") as b:
        conv = (await a.create_direct("ben")).conv
        committed = kill_once_after_commit(n, shard_name(0))
        with pytest.raises(ServerError):
            await a.send_message(conv, "one", cmid="one")
        await trio.sleep(1)  # the shard restarts after its backoff
        ack = await a.send_message(conv, "one", cmid="one")
        assert (ack.seq, ack.id) == (1, committed[0].id)
        assert (await until(b, msg_seq(conv, 1))).id == ack.id
        assert (await a.send_message(conv, "two")).seq == 2
        await until(b, msg_seq(conv, 2))
        assert memory(n).conflicts == 0


async def test_a_push_lost_with_its_actor_is_filled_in_order_by_the_client(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as n, n.client("ann") as a, n.client("ben") as b:
        conv = (await a.create_direct("ben")).conv
        assert (await a.send_message(conv, "one")).seq == 1
        await until(b, msg_seq(conv, 1))
        committed = kill_once_after_commit(n, conv_name(conv))
        with pytest.raises(ServerError):
            await a.send_message(conv, "two", cmid="two")
        # ann does not resend: the push of 2 died with the actor, 3 is pushed live.
        assert (await a.send_message(conv, "three")).seq == 3
        first = await until(b, lambda e: isinstance(e, Msg) and e.conv == conv)
        second = await until(b, lambda e: isinstance(e, Msg) and e.conv == conv)
        assert (first.seq, first.id) == (2, committed[0].id)
        assert second.seq == 3
        assert b.cursors[conv] == 3
        assert b.statistics().gap_syncs == 1


async def test_a_member_added_by_a_change_that_failed_midway_is_settled(tmp_path: Path) -> None:
    # The add is written to the members, then the new member's conversation list fails: the
    # admin hears `unavailable`, but storage holds the member. The conversation must settle
    # before its next request: the member gets what is sent and sees the conversation listed.
    async with (
        running(tmp_path) as n,
        n.client("ann") as a,
        n.client("ben") as b,
        n.client("cat") as c,
    ):
        conv = (await a.create_group("g", ["ben"])).conv
        memory(n).fail_list_adds = 1
        with pytest.raises(ServerError) as refused:
            await a.add_members(conv, ["cat"])
        assert refused.value.code == "unavailable"
        assert "cat" in memory(n).roles[conv]  # the member was written
        ack = await a.send_message(conv, "after the add")
        delivered = await until(c, msg_seq(conv, ack.seq))
        assert delivered.id == ack.id
        await until(b, msg_seq(conv, ack.seq))
        assert conv in {summary.conv for summary in await c.convs()}
