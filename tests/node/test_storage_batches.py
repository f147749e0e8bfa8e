"""What the node batches on its way to storage: last-seen times (presence gathers the
``Offline`` times and stores them with one ``touch_users`` per shard per flush, and stores what
it still holds when the node stops), and concurrent reads of users' conversation lists (the
connect-time sync)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gateway import _presence
from gateway._services import PRESENCE

from ._memory import MemoryBackend
from .test_in_process import WAIT, InProcessNode, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def presence_status(n: InProcessNode) -> dict[str, Any]:
    ref = n.node.whereis(PRESENCE)
    assert ref is not None
    status: dict[str, Any] = n.node.context(ref).behaviour.format_status()
    return status


def backend(n: InProcessNode) -> MemoryBackend:
    store = n.services.backend  # type: ignore[attr-defined]
    assert isinstance(store, MemoryBackend)
    return store


async def test_users_leaving_together_are_stored_in_one_batch(tmp_path: Path) -> None:
    users = [f"u{i}" for i in range(8)]
    async with running(tmp_path) as n:
        async with trio.open_nursery() as nursery:
            clients = []
            for user in users:
                clients.append(await nursery.start(_hold, n, user))
            for scope in clients:
                scope.cancel()  # all leave at once
        await eventually(lambda: set(backend(n).seen) == set(users))
        assert backend(n).touches == 1
        assert presence_status(n)["last_seen_unstored"] == 0
        seen = dict(backend(n).seen)
        # Leaving again later is a new batch; the later times win.
        async with n.client("u0"), n.client("u1"):
            pass
        await eventually(lambda: backend(n).touches >= 2)
        assert backend(n).seen["u0"] >= seen["u0"]
        assert backend(n).touches == 2


async def test_unstored_times_are_stored_when_the_node_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_presence, "LAST_SEEN_FLUSH", 3600.0)  # no flush before the stop
    async with running(tmp_path) as n:
        async with n.client("ann"):
            pass
        await eventually(lambda: presence_status(n)["last_seen_unstored"] == 1)
        store = backend(n)
        assert store.seen == {}
    assert set(store.seen) == {"ann"}


async def eventually(predicate: Callable[[], bool]) -> None:
    for _ in range(int(WAIT / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("still false")


async def _hold(
    n: InProcessNode, user: str, task_status: trio.TaskStatus[trio.CancelScope]
) -> None:
    with trio.CancelScope() as scope:
        async with n.client(user):
            task_status.started(scope)
            await trio.sleep_forever()


async def test_concurrent_list_reads_are_batched(tmp_path: Path) -> None:
    async with running(tmp_path) as n:
        store = backend(n)
        for i in range(30):
            await store.add_user_conversations(f"r{i}", [f"c{i}", "shared"])
        await store.advance_delivered("r3", "phone", "c3", 7)
        before = store.list_reads
        results: dict[str, Any] = {}

        async def read(user: str) -> None:
            results[user] = await n.services.store.user_conversations(user)

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(read, f"r{i}")
            nursery.start_soon(read, "nobody")
        assert store.list_reads - before <= 3  # the first alone, the rest gathered
        assert results["nobody"] == []
        assert [e.conv for e in results["r5"]] == ["c5", "shared"]
        assert results["r3"][0].delivered == {"phone": 7}
        # Alone, a read is one call, answered at once.
        assert [e.conv for e in await n.services.store.user_conversations("r1")] == ["c1", "shared"]
        assert store.list_reads - before <= 4


async def test_a_cancelled_reader_does_not_strand_the_others(tmp_path: Path) -> None:
    async with running(tmp_path) as n:
        store = backend(n)
        await store.add_user_conversations("x", ["cx"])
        results: dict[str, Any] = {}

        async def read(user: str) -> None:
            results[user] = await n.services.store.user_conversations(user)

        async def give_up(user: str) -> None:
            with trio.move_on_after(0):  # cancelled while it waits as a follower
                results[user] = await n.services.store.user_conversations(user)

        with trio.CancelScope() as first:
            first.cancel()
            await n.services.store.user_conversations("y")  # a leader's read runs shielded
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for user in ("x", "y", "w", "z"):
                    nursery.start_soon(give_up if user == "w" else read, user)
        assert [e.conv for e in results["x"]] == ["cx"]
        assert results["y"] == results["z"] == []


async def test_presence_keeps_the_latest_last_seen_times_and_reads_older_ones_from_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_presence, "LAST_SEEN_CACHE", 2)
    async with running(tmp_path) as n:
        for user in ("ann", "ben", "cat"):
            async with n.client(user):
                pass
            await eventually(lambda user=user: user in backend(n).seen)
        assert presence_status(n)["last_seen_cached"] == 2  # ann's time left the memory
        async with n.client("zed") as z:
            await z.create_direct("ann")
            answer = await z.subscribe_presence(["ann"])
        assert answer["ann"].status == "offline"
        assert answer["ann"].last_seen == backend(n).seen["ann"]
