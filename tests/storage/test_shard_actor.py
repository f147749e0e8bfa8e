"""The storage actors against real databases: group commit, the read pool, the bounded queue, the
circuit breaker, supervision, and the facade's routing. Trio with a real clock (see conftest)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from sqlalchemy import text

from actors import KILL, Node, SpawnError, open_node
from storage import (
    AppendResult,
    Backend,
    Conversation,
    Message,
    SeqConflict,
    ShardOptions,
    Storage,
    StorageShard,
    StorageSupervisor,
    Unavailable,
    backend_from_url,
    parse_url,
    shard_name,
)
from tests.storage.conftest import backend_url

pytestmark = pytest.mark.anyio


class Probe:
    """A real backend with instruments: counts transactions, can hold commits at a gate, can
    pretend the database is down (calls raise ``Unavailable`` without reaching it)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.transactions: list[int] = []  # batch sizes, in commit order
        self.committed: set[str] = set()  # message ids committed so far
        self.gate: trio.Event | None = None
        self.gates: dict[str, trio.Event] = {}  # by the batch's first conversation
        self.down = False
        self.pings = 0

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise Unavailable("the test says the database is down")
        await self.inner.ping()

    async def append_messages(self, batch: Sequence[Message]) -> list[AppendResult]:
        if self.gate is not None:
            await self.gate.wait()
        gate = self.gates.get(batch[0].conv) if batch else None
        if gate is not None:
            await gate.wait()
        if self.down:
            raise Unavailable("the test says the database is down")
        results = await self.inner.append_messages(batch)
        self.transactions.append(len(batch))
        self.committed.update(m.id for m in batch)
        return results

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if self.down and callable(attr):

            async def down(*args: Any, **kwargs: Any) -> Any:
                raise Unavailable("the test says the database is down")

            return down
        return attr


def msg(conv: str, seq: int, sender: str = "u", cmid: str | None = None) -> Message:
    return Message(conv, seq, f"{conv}-{seq}", sender, cmid or f"m{seq}", "text", "b" * 200, seq)


async def start_shard(
    node: Node, url: str, options: ShardOptions | None = None, *, index: int = 0
) -> tuple[Probe, Storage]:
    """One shard actor over a ``Probe`` of ``url``, and a one-shard facade."""
    probes: list[Probe] = []

    def factory() -> Any:
        probe = Probe(backend_from_url(url))
        probes.append(probe)
        return probe

    await node.start(StorageShard, index, factory, options or ShardOptions())
    return probes[0], Storage(node, shards=1)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with open_node() as node:
        yield node


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'shard.db'}"


def status(node: Node, index: int = 0) -> dict[str, Any]:
    summary = node.context(shard_name(index)).info().summary
    assert summary is not None
    return dict(summary)


async def test_group_commit_batches_and_answers_after_the_commit(
    node: Node, sqlite_url: str
) -> None:
    probe, storage = await start_shard(node, sqlite_url)
    acked_before_commit: list[str] = []

    async def writer(i: int) -> None:
        m = msg(f"c{i}", 1)
        [result] = await storage.append_messages([m])
        assert result == AppendResult(m, duplicate=False)
        if m.id not in probe.committed:
            acked_before_commit.append(m.id)

    async with trio.open_nursery() as nursery:
        for i in range(300):
            nursery.start_soon(writer, i)
    assert acked_before_commit == []
    assert sum(probe.transactions) == 300
    assert len(probe.transactions) < 300 / 5, probe.transactions  # batched, not one by one
    assert max(probe.transactions) <= ShardOptions().max_batch
    st = status(node)
    assert st["commits"] == len(probe.transactions)
    assert st["committed_messages"] == 300
    assert st["breaker"] == "closed"
    assert st["queued_messages"] == 0


async def test_a_batch_is_answered_while_the_next_one_commits(node: Node, sqlite_url: str) -> None:
    # One transaction at a time: the shard starts the next transaction before it answers the
    # writers of the last one (so that their next calls do not hold up its start), and
    # answers them once it has.
    probe, storage = await start_shard(node, sqlite_url, ShardOptions(pipeline=1))
    first_gate, second_gate = trio.Event(), trio.Event()
    probe.gate = first_gate
    answered: list[str] = []
    a_answered = trio.Event()

    async def writer(conv: str) -> None:
        await storage.append_messages([msg(conv, 1)])
        answered.append(conv)
        if conv == "a":
            a_answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "a")
        await trio.testing.wait_all_tasks_blocked()  # a's transaction waits at the first gate
        nursery.start_soon(writer, "b")
        await trio.testing.wait_all_tasks_blocked()  # b waits in the queue
        probe.gate = second_gate
        first_gate.set()
        with trio.fail_after(5):
            await a_answered.wait()
        assert answered == ["a"]  # b's transaction is held at the second gate meanwhile
        assert status(node)["in_flight_messages"] == 1
        second_gate.set()
    assert answered == ["a", "b"]
    assert probe.transactions == [1, 1]


async def test_two_transactions_are_in_flight_at_once(node: Node, sqlite_url: str) -> None:
    # pipeline=2 (the default): while a's transaction is held, b's goes to the backend too;
    # c waits in the queue for a free slot. Each writer is answered once its own commits,
    # in whatever order they do.
    probe, storage = await start_shard(node, sqlite_url)
    gates = {"a": trio.Event(), "b": trio.Event()}
    probe.gates = gates
    answered: list[str] = []

    async def writer(conv: str) -> None:
        await storage.append_messages([msg(conv, 1)])
        answered.append(conv)

    async with trio.open_nursery() as nursery:
        for conv in "abc":
            nursery.start_soon(writer, conv)
            await trio.testing.wait_all_tasks_blocked()
        st = status(node)
        assert (st["in_flight_batches"], st["in_flight_messages"], st["queued_messages"]) == (
            2,
            2,
            1,
        )
        gates["b"].set()  # b commits first: its writer is answered; c takes the free slot
        with trio.fail_after(5):
            while answered != ["b", "c"]:  # noqa: ASYNC110 (polls a list the writers fill)
                await trio.sleep(0.01)
        assert status(node)["in_flight_batches"] == 1
        gates["a"].set()
    assert answered == ["b", "c", "a"]
    assert sorted(probe.committed) == ["a-1", "b-1", "c-1"]
    assert await storage.last_seq("a") == 1


async def test_pipeline_one_has_one_transaction_in_flight(node: Node, sqlite_url: str) -> None:
    probe, storage = await start_shard(node, sqlite_url, ShardOptions(pipeline=1))
    probe.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        for conv in "abc":
            nursery.start_soon(storage.append_messages, [msg(conv, 1)])
            await trio.testing.wait_all_tasks_blocked()
        st = status(node)
        assert (st["in_flight_batches"], st["queued_messages"]) == (1, 2)
        probe.gate.set()
    assert probe.transactions == [1, 2]


async def test_batch_size_is_bounded(node: Node, sqlite_url: str) -> None:
    probe, storage = await start_shard(node, sqlite_url, ShardOptions(max_batch=10))
    probe.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(45):
            nursery.start_soon(storage.append_messages, [msg(f"c{i}", 1)])
        await trio.sleep(0.05)
        probe.gate.set()
    assert max(probe.transactions) <= 10
    assert sum(probe.transactions) == 45


async def test_seqs_stay_gapless_with_many_concurrent_writers(tmp_path: Path) -> None:
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'shard-{i}.db'}" for i in range(3)]
    async with open_node() as node:
        await node.start(StorageSupervisor, urls)
        storage = Storage(node, shards=3)

        async def writer(conv: str) -> None:
            for seq in range(1, 21):  # one writer per conversation, as the conversation actor
                await storage.append_messages([msg(conv, seq)])

        convs = [f"g{i}" for i in range(60)]
        async with trio.open_nursery() as nursery:
            for conv in convs:
                nursery.start_soon(writer, conv)
        for conv in convs:
            page = await storage.messages_after(conv, 0, 100)
            assert [m.seq for m in page] == list(range(1, 21))
            assert await storage.last_seq(conv) == 20
        used = {storage.ring.shard_for(c) for c in convs}
        assert used == {0, 1, 2}


async def test_resend_is_idempotent_in_one_batch_and_across_batches(
    node: Node, sqlite_url: str
) -> None:
    # One transaction in flight, so that the resends go in after the first: two in flight
    # would hold up at the same gate and race to commit (either one stored, the other a
    # duplicate of it; the node never has two appends of one conversation in flight).
    probe, storage = await start_shard(node, sqlite_url, ShardOptions(pipeline=1))
    first = msg("c", 1, cmid="x")
    resend = Message("c", 2, "other-id", "u", "x", "text", "again", 2)
    probe.gate = trio.Event()
    results: list[list[AppendResult]] = []

    async def append(batch: list[Message]) -> None:
        results.append(await storage.append_messages(batch))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(append, [first])
        await trio.sleep(0.02)
        nursery.start_soon(append, [resend])  # queued behind the gate: same transaction
        nursery.start_soon(append, [resend])
        await trio.sleep(0.02)
        probe.gate.set()
    assert sorted(r.duplicate for [r] in results) == [False, True, True]
    assert all(r.message == first for [r] in results)
    [again] = await storage.append_messages([resend])
    assert again == AppendResult(first, duplicate=True)
    assert [m.id for m in await storage.messages_after("c", 0, 10)] == [first.id]


async def test_one_writers_seq_conflict_fails_only_that_writer(node: Node, sqlite_url: str) -> None:
    probe, storage = await start_shard(node, sqlite_url)
    await storage.append_messages([msg("c", 1)])
    probe.gate = trio.Event()
    outcomes: dict[str, object] = {}

    async def append(key: str, m: Message) -> None:
        try:
            outcomes[key] = await storage.append_messages([m])
        except SeqConflict as exc:
            outcomes[key] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(append, "bad", Message("c", 1, "intruder", "v", "z", "text", "", 1))
        nursery.start_soon(append, "good", msg("d", 1))
        await trio.sleep(0.02)
        probe.gate.set()
    assert isinstance(outcomes["bad"], SeqConflict)
    assert isinstance(outcomes["good"], list)
    assert status(node)["breaker"] == "closed"


async def test_reads_do_not_wait_behind_a_slow_write(node: Node, sqlite_url: str) -> None:
    probe, storage = await start_shard(node, sqlite_url)
    await storage.append_messages([msg("c", 1)])
    await storage.create_conversation(Conversation("c", "group", "t", 1))
    probe.gate = trio.Event()  # the next commit hangs
    async with trio.open_nursery() as nursery:
        nursery.start_soon(storage.append_messages, [msg("c", 2)])
        await trio.sleep(0.02)
        assert status(node)["in_flight_messages"] == 1
        with trio.fail_after(2):
            page = await storage.messages_after("c", 0, 10)
            conv = await storage.get_conversation("c")
            await storage.touch_user("u", 5)  # other writes use the pool, not the commit queue
            assert await storage.last_seen("u") == 5
        assert [m.seq for m in page] == [1]
        assert conv is not None
        assert conv.title == "t"
        probe.gate.set()
    assert [m.seq for m in await storage.messages_after("c", 0, 10)] == [1, 2]


async def test_a_full_queue_fails_fast_with_unavailable(node: Node, sqlite_url: str) -> None:
    probe, storage = await start_shard(node, sqlite_url, ShardOptions(max_queue=10))
    probe.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(storage.append_messages, [msg(f"c{i}", 1)])
        await trio.sleep(0.05)
        with trio.fail_after(0.5), pytest.raises(Unavailable, match="overloaded") as info:
            await storage.append_messages([msg("late", 1)])
        assert info.value.retry_after > 0
        probe.gate.set()
    assert sum(probe.transactions) == 10
    assert status(node)["rejected_calls"] == 1


async def test_circuit_breaker_opens_probes_and_closes(node: Node, sqlite_url: str) -> None:
    options = ShardOptions(breaker_threshold=3, breaker_cooldown=0.2, breaker_max_cooldown=0.4)
    probe, storage = await start_shard(node, sqlite_url, options)
    probe.down = True
    for seq in range(1, 4):
        with pytest.raises(Unavailable, match="down"):
            await storage.append_messages([msg("c", seq)])
    assert status(node)["breaker"] == "open"
    # Open: every call fails at once without touching the database, with a retry hint.
    start = trio.current_time()
    with pytest.raises(Unavailable, match="circuit breaker open") as info:
        await storage.append_messages([msg("c", 1)])
    with pytest.raises(Unavailable, match="circuit breaker"):
        await storage.messages_after("c", 0, 10)
    assert trio.current_time() - start < 0.1
    assert 0 < info.value.retry_after <= 0.2
    # The first probe fails (still down): open again with a doubled cool-down.
    await trio.sleep(0.3)
    assert probe.pings >= 1
    assert status(node)["breaker"] == "open"
    assert status(node)["cooldown_s"] == 0.4
    probe.down = False
    await trio.sleep(0.5)
    assert status(node)["breaker"] == "closed"
    [result] = await storage.append_messages([msg("c", 1)])
    assert not result.duplicate


async def test_unreachable_database_at_start_fails_the_spawn(node: Node) -> None:
    url = "postgresql+asyncpg://root@127.0.0.1:1/test"
    with pytest.raises(SpawnError) as info:
        await node.start(StorageShard, 0, url)
    assert isinstance(info.value.reason, Unavailable)
    assert "127.0.0.1:1" in str(info.value.reason)
    assert node.whereis(shard_name(0)) is None


async def test_supervisor_restarts_a_killed_shard_and_the_facade_follows(
    tmp_path: Path,
) -> None:
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'shard-{i}.db'}" for i in range(2)]
    async with open_node() as node:
        await node.start(StorageSupervisor, urls)
        storage = Storage(node, shards=2)
        conv = next(f"k{i}" for i in range(100) if storage.ring.shard_for(f"k{i}") == 0)
        await storage.append_messages([msg(conv, 1)])
        old = node.whereis(shard_name(0))
        assert old is not None
        node.exit(old, KILL)
        with pytest.raises(Unavailable):  # killed: not running until its backoff has passed
            await storage.append_messages([msg(conv, 2)])
        with trio.fail_after(5):
            # The registry has no change notification: poll it (the backoff is 0.1 s).
            while (new := node.whereis(shard_name(0))) is None or new == old:  # noqa: ASYNC110
                await trio.sleep(0.02)
        [result] = await storage.append_messages([msg(conv, 2)])
        assert not result.duplicate
        assert [m.seq for m in await storage.messages_after(conv, 0, 10)] == [1, 2]
        assert node.whereis(shard_name(1)) is not None


async def test_facade_routes_like_sharded_storage_and_rejects_mixed_batches(
    tmp_path: Path,
) -> None:
    urls = [f"sqlite+aiosqlite:///{tmp_path / f'shard-{i}.db'}" for i in range(2)]
    async with open_node() as node:
        await node.start(StorageSupervisor, urls)
        storage = Storage(node, shards=2)
        with pytest.raises(ValueError, match="one conversation"):
            await storage.append_messages([msg("a", 1), msg("b", 1)])
        assert await storage.append_messages([]) == []
        direct = Conversation("direct:1:a:b", "direct", None, 1, members=frozenset({"a", "b"}))
        await storage.create_conversation(direct)
        assert await storage.find_direct("b", "a") == direct
        await storage.add_members("g", ["x"], joined_ts=3)  # keyword arguments reach the backend
        await storage.add_user_conversations("x", ["g"])
        assert await storage.advance_read("x", "g", 4) == 4
        assert await storage.advance_delivered("x", "phone", "g", 2) == 2
        [entry] = await storage.user_conversations("x")
        assert (entry.read_seq, dict(entry.delivered)) == (4, {"phone": 2})
        seen = {f"u{i}": 100 + i for i in range(20)}  # users on both shards
        assert {storage.ring.shard_for(u) for u in seen} == {0, 1}
        await storage.touch_users(seen)
        await storage.touch_users({"u0": 50})
        assert {u: await storage.last_seen(u) for u in seen} == seen


async def test_a_call_past_its_deadline_is_unavailable(node: Node, sqlite_url: str) -> None:
    probe, _ = await start_shard(node, sqlite_url)
    storage = Storage(node, shards=1, timeout=0.05)
    probe.gate = trio.Event()
    with pytest.raises(Unavailable, match="did not answer"):
        await storage.append_messages([msg("c", 1)])
    probe.gate.set()
    assert Storage(node, shards=1, timeout=None).timeout is None
    assert math.isfinite(Storage(node, shards=1).timeout or math.inf)


async def test_the_shard_answers_each_writer_at_its_own_deadline(
    node: Node, sqlite_url: str
) -> None:
    # one transaction in flight, so that the later writers wait in the queue
    probe, _ = await start_shard(node, sqlite_url, ShardOptions(pipeline=1))
    patient = Storage(node, shards=1, timeout=None)
    slow = Storage(node, shards=1, timeout=30.0)
    hasty = Storage(node, shards=1, timeout=0.05)
    probe.gate = trio.Event()
    outcomes: dict[str, object] = {}

    async def append(name: str, storage: Storage, m: Message) -> None:
        try:
            outcomes[name] = await storage.append_messages([m])
        except Unavailable as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(append, "in_flight", patient, msg("a", 1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(append, "slow", slow, msg("b", 1))
        await trio.testing.wait_all_tasks_blocked()
        # queued behind a later deadline: still answered at its own
        with trio.fail_after(5):
            await append("hasty", hasty, msg("c", 1))
        assert isinstance(outcomes["hasty"], Unavailable)
        assert "did not answer append_messages within 0.05 s" in str(outcomes["hasty"])
        assert status(node)["queued_writers"] == 1  # the late one left the queue
        probe.gate.set()
    assert [type(outcomes[k]) for k in ("in_flight", "slow")] == [list, list]
    assert "c-1" not in probe.committed  # answered Unavailable, and not written behind its back
    assert await hasty.append_messages([msg("c", 1)]) == [AppendResult(msg("c", 1), False)]


# -- PostgreSQL: connections killed mid-batch -------------------------------------------------


@pytest.mark.integration
async def test_postgres_connections_killed_mid_batch(
    request: pytest.FixtureRequest, tmp_path: Path, n: Callable[[str], str]
) -> None:
    """pg_terminate_backend on the shard's connections while writers commit: callers see
    Unavailable at worst, retry, and every acked write is stored exactly once, gaplessly."""
    url = backend_url("postgresql", request, tmp_path)
    parsed = parse_url(url)
    killer = backend_from_url(url.replace(f"schema={parsed.schema}", "schema=public"))  # type: ignore[union-attr]
    await killer.open()

    async def kill_all() -> None:
        engine = killer._engine  # type: ignore[attr-defined]

        async def go() -> None:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :app AND pid <> pg_backend_pid()"
                    ),
                    {"app": f"parley-{parsed.schema}"},  # type: ignore[union-attr]
                )

        await killer._bridge.run(go)  # type: ignore[attr-defined]

    unavailable = 0
    try:
        async with open_node() as node:
            await node.start(StorageShard, 0, url, ShardOptions(breaker_cooldown=0.1))
            storage = Storage(node, shards=1)
            convs = [n(f"pg{i}") for i in range(20)]
            acked: dict[str, int] = dict.fromkeys(convs, 0)

            async def writer(conv: str) -> None:
                nonlocal unavailable
                seq = 1
                while seq <= 40:
                    try:
                        await storage.append_messages([msg(conv, seq)])
                    except Unavailable:
                        unavailable += 1
                        await trio.sleep(0.02)
                        continue  # resend: idempotent by cmid
                    acked[conv] = seq
                    seq += 1

            async with trio.open_nursery() as nursery:
                for conv in convs:
                    nursery.start_soon(writer, conv)
                for _ in range(3):
                    await trio.sleep(0.05)
                    await kill_all()
            for conv in convs:
                page = await storage.messages_after(conv, 0, 100)
                assert [m.seq for m in page] == list(range(1, acked[conv] + 1))
    finally:
        await killer.aclose()
    assert all(v == 40 for v in acked.values())
