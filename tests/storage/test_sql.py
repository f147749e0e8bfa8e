"""SQL backends beyond the contract: migrations, schema checks, unreachable databases, durability
after SIGKILL, and a PostgreSQL connection killed under load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from sqlalchemy import text

from storage import (
    Conversation,
    Message,
    SchemaMismatch,
    SeqConflict,
    SqlBackend,
    StorageError,
    Unavailable,
    backend_from_url,
    parse_url,
)
from storage import _sql_schema as schema
from tests.storage.conftest import backend_url

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]

SQL_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
]


def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, request, tmp_path)


@pytest.fixture(params=SQL_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sql_url(request, tmp_path)


def open_sql(url: str) -> SqlBackend:
    backend = backend_from_url(url)
    assert isinstance(backend, SqlBackend)
    return backend


async def test_migrated_schema_matches_the_query_tables(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    backend = open_sql(url)
    await backend.open()
    try:
        assert backend._engine is not None

        async def diff() -> list[object]:
            assert backend._engine is not None
            async with backend._engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), schema.metadata)
                )

        assert await backend._bridge.run(diff) == []
    finally:
        await backend.aclose()


async def test_reopening_keeps_data_and_schema(url: str, n: Callable[[str], str]) -> None:
    conv = n("c")
    for round_ in (1, 2):
        backend = open_sql(url)
        await backend.open()
        try:
            await backend.append_messages(
                [Message(conv, round_, f"{conv}-{round_}", "a", f"m{round_}", "text", "hi", 1)]
            )
            assert await backend.last_seq(conv) == round_
        finally:
            await backend.aclose()


async def raw_execute(url: str, sql: str, **params: object) -> None:
    """Run one statement on the database behind ``url`` with an engine of its own."""
    backend = open_sql(url)
    engine = backend._make_engine()

    async def go() -> None:
        try:
            async with engine.begin() as conn:
                await conn.execute(text(sql), params)
        finally:
            await engine.dispose()

    backend._bridge.acquire()
    try:
        await backend._bridge.run(go)
    finally:
        backend._bridge.release()


async def test_unknown_schema_revision_is_a_mismatch(url: str) -> None:
    backend = open_sql(url)
    await backend.open()
    await backend.aclose()
    await raw_execute(url, "UPDATE alembic_version SET version_num = :r", r="9999")
    try:
        again = open_sql(url)
        with pytest.raises(SchemaMismatch, match="9999"):
            await again.open()
        await again.aclose()
    finally:
        await raw_execute(url, "UPDATE alembic_version SET version_num = :r", r=schema.SCHEMA_HEAD)


async def test_unreachable_postgres_names_what_was_tried() -> None:
    backend = backend_from_url("postgresql+asyncpg://root@127.0.0.1:1/test")
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1/test") as info:
        await backend.open()
    assert info.value.retry_after > 0
    await backend.aclose()


async def test_unopenable_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    backend = backend_from_url(f"sqlite+aiosqlite:///{tmp_path / 'dir.db'}")
    with pytest.raises(Unavailable, match=r"dir\.db"):
        await backend.open()
    await backend.aclose()


async def test_calls_on_a_closed_backend_fail_clearly(tmp_path: Path) -> None:
    backend = backend_from_url(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StorageError, match="not open"):
        await backend.last_seq("c")


async def test_sqlite_uses_wal_and_the_configured_synchronous(tmp_path: Path) -> None:
    async def pragmas(backend: SqlBackend) -> tuple[str, int]:
        assert backend._engine is not None
        async with backend._engine.connect() as conn:
            journal = await conn.scalar(text("PRAGMA journal_mode"))
            sync = await conn.scalar(text("PRAGMA synchronous"))
            return str(journal), int(sync or 0)

    for mode, expected in (("NORMAL", 1), ("FULL", 2)):
        backend = open_sql(f"sqlite+aiosqlite:///{tmp_path / mode}.db?synchronous={mode}")
        await backend.open()
        try:
            assert await backend._bridge.run(pragmas, backend) == ("wal", expected)
            # The append path's own connection, too.
            assert backend._writer is not None
            writer = backend._writer
            assert await writer.execute("PRAGMA journal_mode") == [("wal",)]
            assert await writer.execute("PRAGMA synchronous") == [(expected,)]
        finally:
            await backend.aclose()


async def test_sqlite_writes_go_through_the_writer_under_appends(tmp_path: Path) -> None:
    # SQLite takes one writer at a time. While the writer process appends back to back, a
    # second connection's BEGIN IMMEDIATE finds the lock free only in the gaps between its
    # transactions, so every other write goes through that process too: none waits for a gap
    # (here, none could: the busy timeout is 50 ms).
    backend = open_sql(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}?busy_timeout_ms=50")
    await backend.open()
    try:
        await make_conversation(backend, "busy")
        done = trio.Event()

        async def appender(lane: int) -> None:
            seq = lane * 1_000_000
            while not done.is_set():
                batch = [new("busy", seq + i, f"l{lane}-{seq + i}") for i in range(1, 201)]
                await backend.append_messages(batch)
                seq += 200

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for lane in (1, 2):
                    nursery.start_soon(appender, lane)
                await trio.sleep(0.2)
                for i in range(20):
                    g = f"g{i}"
                    group = Conversation(g, "group", "t", 5, members=frozenset("ab"))
                    made = await backend.create_conversation(group)
                    assert (made.members, made.admins) == (frozenset("ab"), frozenset())
                    await backend.add_members(g, ["c", "d"], joined_ts=6)
                    await backend.set_role(g, ["c"], "admin")
                    await backend.remove_members(g, ["d"])
                    await backend.add_user_conversations("c", [g])
                    await backend.remove_user_conversations("b", [g])
                    await backend.touch_users({"c": 100 + i})
                done.set()
        got = await backend.get_conversation("g19")
        assert got is not None
        assert (got.members, got.admins) == (frozenset("abc"), frozenset("c"))
        groups = sorted(f"g{i}" for i in range(20))
        assert [u.conv for u in await backend.user_conversations("c")] == groups
        assert await backend.user_conversations("b") == []
        assert await backend.last_seen("c") == 119
    finally:
        await backend.aclose()


# -- the append paths ------------------------------------------------------------------------
# A batch whose rows all go in takes the driver-level fast path; one with a resend or a seq
# conflict is found out by its change count (SQLite) or RETURNING (PostgreSQL) and resolved
# exactly. These check both, on batches larger than one lookup chunk, against the tables.


@pytest.fixture
async def sql(url: str) -> AsyncIterator[SqlBackend]:
    backend = open_sql(url)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.aclose()


async def stored_last_seq(backend: SqlBackend, conv: str) -> int:
    """``conversations.last_seq`` as stored (``get_conversation`` also reads the messages)."""

    async def go() -> int:
        assert backend._engine is not None
        async with backend._engine.connect() as conn:
            value = await conn.scalar(
                text("SELECT last_seq FROM conversations WHERE conv = :c"), {"c": conv}
            )
            return int(value)

    return await backend._bridge.run(go)


def new(conv: str, seq: int, cmid: str | None = None) -> Message:
    cmid = cmid or f"m{seq}"
    return Message(conv, seq, f"{conv}-{seq}-{cmid}", "alice", cmid, "text", f"body {seq}", seq)


async def make_conversation(backend: SqlBackend, conv: str) -> None:
    await backend.create_conversation(Conversation(conv, "group", "t", 1, members=frozenset("ab")))


async def test_big_batch_of_new_duplicates_and_in_batch_duplicates(
    sql: SqlBackend, n: Callable[[str], str]
) -> None:
    a, b = n("a"), n("b")
    await make_conversation(sql, a)
    await make_conversation(sql, b)
    first = [new(a, s) for s in range(1, 401)]
    results = await sql.append_messages(first)  # all new: the fast path
    assert not any(r.duplicate for r in results)
    assert await stored_last_seq(sql, a) == 400
    # 350 resends (more than one lookup chunk), 100 new, an in-batch resend, a second conversation
    resends = [
        Message(a, 1000 + s, f"re-{s}", "alice", f"m{s}", "text", "x", 0) for s in range(1, 351)
    ]
    fresh = [new(a, s) for s in range(401, 501)]
    again = Message(a, 999, "again", "alice", "m450", "text", "x", 0)
    other = [new(b, s) for s in range(1, 51)]
    batch = [*fresh[:50], *resends, again, *other, *fresh[50:]]
    results = await sql.append_messages(batch)
    assert [r.duplicate for r in results] == (
        [False] * 50 + [True] * 350 + [True] + [False] * 50 + [False] * 50
    )
    assert [r.message for r in results] == [
        *fresh[:50],
        *first[:350],
        fresh[49],
        *other,
        *fresh[50:],
    ]
    assert await sql.messages_after(a, 0, 1000) == first + fresh
    assert await sql.messages_after(b, 0, 1000) == other
    assert (await stored_last_seq(sql, a), await stored_last_seq(sql, b)) == (500, 50)


async def test_a_batch_over_many_conversations_moves_each_last_seq(
    sql: SqlBackend, n: Callable[[str], str]
) -> None:
    # 150 conversations x 3 messages: several multi-row statements for the rows and for the
    # last_seq updates (SQLite), of different sizes.
    convs = [n(f"c{i}") for i in range(150)]
    for conv in convs[:100]:
        await make_conversation(sql, conv)
    batch = [new(conv, s) for s in (1, 2, 3) for conv in convs]
    results = await sql.append_messages(batch)
    assert [r.message for r in results] == batch
    assert not any(r.duplicate for r in results)
    for conv in convs[:100]:
        assert await stored_last_seq(sql, conv) == 3
    for conv in (convs[0], convs[-1]):
        assert await sql.messages_after(conv, 0, 10) == [new(conv, s) for s in (1, 2, 3)]


async def test_seq_conflict_in_a_batch_of_new_messages(
    sql: SqlBackend, n: Callable[[str], str]
) -> None:
    conv, other = n("c"), n("o")
    await make_conversation(sql, conv)
    await make_conversation(sql, other)
    stored = [new(conv, s) for s in (1, 2, 3)]
    await sql.append_messages(stored)
    clash = new(conv, 2, cmid="clash")
    batch = [*(new(other, s) for s in range(1, 6)), new(conv, 4), clash, new(conv, 5)]
    with pytest.raises(SeqConflict) as info:
        await sql.append_messages(batch)
    assert (info.value.conv, info.value.seq, info.value.existing_id) == (conv, 2, stored[1].id)
    # Nothing of the batch is kept, and last_seq (moved in the same statement on PostgreSQL)
    # is rolled back with it.
    assert await sql.messages_after(conv, 0, 10) == stored
    assert await sql.messages_after(other, 0, 10) == []
    assert (await stored_last_seq(sql, conv), await stored_last_seq(sql, other)) == (3, 0)


async def test_identical_resend_is_a_duplicate(sql: SqlBackend, n: Callable[[str], str]) -> None:
    conv = n("c")
    stored = [new(conv, s) for s in (1, 2)]
    await sql.append_messages(stored)
    results = await sql.append_messages([*stored, new(conv, 3)])
    assert [(r.message, r.duplicate) for r in results] == [
        (stored[0], True),
        (stored[1], True),
        (new(conv, 3), False),
    ]


async def test_last_seq_moves_only_forward(sql: SqlBackend, n: Callable[[str], str]) -> None:
    conv = n("c")
    await make_conversation(sql, conv)
    await sql.append_messages([new(conv, 5)])
    await sql.append_messages([new(conv, 3), new(conv, 4)])
    assert await stored_last_seq(sql, conv) == 5
    # Messages of a conversation without a conversations row are stored all the same.
    loose = n("loose")
    await sql.append_messages([new(loose, 1)])
    assert await sql.last_seq(loose) == 1


async def test_a_row_the_database_rejects_is_a_storage_error(
    sql: SqlBackend, n: Callable[[str], str]
) -> None:
    conv = n("c")
    bad = Message(conv, 2, f"{conv}-2", "alice", "m2", None, "x", 2)  # type: ignore[arg-type]
    with pytest.raises(StorageError) as info:
        await sql.append_messages([new(conv, 1), bad])
    assert not isinstance(info.value, Unavailable)
    assert await sql.messages_after(conv, 0, 10) == []


# -- durability ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_acked_writes_survive_sigkill(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, n: Callable[[str], str]
) -> None:
    url = backend_url(kind, request, tmp_path)
    conv = n("durable")
    acked: list[int] = []
    with subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, read from a worker thread
        [sys.executable, "-m", "tests.storage.durability_child", url, conv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        try:
            with trio.fail_after(30):
                while len(acked) < 400:
                    line = await trio.to_thread.run_sync(child.stdout.readline)
                    if not line:
                        pytest.fail(f"child exited early: {child.stderr.read()[-2000:]}")
                    if line.strip() != "open":
                        acked.extend(int(s) for s in line.split())
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # The child kept appending while we read: what it printed before the kill was acked too.
        rest = child.stdout.read()
        for line in rest.splitlines(keepends=True):
            if line.endswith("\n") and line.strip() != "open":
                acked.extend(int(s) for s in line.split())
    assert child.returncode == -signal.SIGKILL
    backend = backend_from_url(url)
    await backend.open()
    try:
        stored = [m.seq for m in await backend.messages_after(conv, 0, 100_000)]
        # Every acked seq is there; beyond them at most the batch in flight at the kill.
        assert stored[: len(acked)] == acked == list(range(1, len(acked) + 1))
        assert len(stored) - len(acked) in (0, 2)
        assert stored == list(range(1, len(stored) + 1))
    finally:
        await backend.aclose()


# -- faults --------------------------------------------------------------------------------


@pytest.mark.integration
async def test_postgres_connections_killed_under_load(
    request: pytest.FixtureRequest, tmp_path: Path, n: Callable[[str], str]
) -> None:
    """pg_terminate_backend on every connection of the shard, while a big batch commits and
    while idle: calls fail with Unavailable at most once, the backend recovers on its own, and
    no acked write is lost or duplicated."""
    url = backend_url("postgresql", request, tmp_path)
    parsed = parse_url(url)
    backend = open_sql(url)
    killer = open_sql(url.replace(f"schema={parsed.schema}", "schema=public"))  # type: ignore[union-attr]
    await backend.open()
    await killer.open()
    conv = n("c")

    async def kill_all() -> int:
        assert killer._engine is not None
        async with killer._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :app AND pid <> pg_backend_pid()"
                ),
                {"app": f"parley-{parsed.schema}"},  # type: ignore[union-attr]
            )
            return int(result.scalar_one())

    def batch(first: int, count: int) -> list[Message]:
        return [
            Message(conv, s, f"{conv}-{s}", "w", f"m{s}", "text", "y" * 200, s)
            for s in range(first, first + count)
        ]

    outcomes: list[str] = []
    try:
        next_seq = 1
        for _ in range(3):
            messages = batch(next_seq, 3000)
            async with trio.open_nursery() as nursery:

                async def append(messages: list[Message] = messages) -> None:
                    try:
                        await backend.append_messages(messages)
                        outcomes.append("committed")
                    except Unavailable:
                        outcomes.append("unavailable")

                nursery.start_soon(append)
                await trio.sleep(0.02)
                assert await killer._bridge.run(kill_all) >= 1
            # Whatever happened, the retry stores the batch exactly once.
            results = await backend.append_messages(messages)
            assert [r.message for r in results] == messages
            next_seq += len(messages)
        # Killed while idle: pre-ping replaces the connection, or one call fails.
        await killer._bridge.run(kill_all)
        try:
            await backend.ping()
        except Unavailable:
            outcomes.append("idle-unavailable")
        await backend.ping()
        stored = await backend.messages_after(conv, 0, 100_000)
        assert [m.seq for m in stored] == list(range(1, next_seq))
        assert await backend.last_seq(conv) == next_seq - 1
    finally:
        await backend.aclose()
        await killer.aclose()
    print("outcomes:", outcomes)
