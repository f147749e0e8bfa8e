"""Cassandra beyond the contract: schema version checks, unreachable servers, and appends that
find the leftovers of an attempt that died between claiming a cmid and writing the message."""

from __future__ import annotations

import concurrent.futures
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from storage import (
    CassandraBackend,
    CassandraUrl,
    Message,
    SchemaMismatch,
    StorageError,
    Unavailable,
    parse_url,
)
from tests.storage.conftest import backend_url, cassandra_url, drop_cassandra_keyspace

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def cass(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CassandraBackend]:
    url = parse_url(backend_url("cassandra", request, tmp_path))
    assert isinstance(url, CassandraUrl)
    backend = CassandraBackend(url)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.aclose()


def m(conv: str, seq: int, cmid: str, id_: str | None = None) -> Message:
    return Message(conv, seq, id_ or f"{conv}-{seq}-{cmid}", "alice", cmid, "text", "hi", seq)


async def test_orphaned_claim_is_taken_over(
    cass: CassandraBackend, n: Callable[[str], str]
) -> None:
    conv = n("c")
    await cass.append_messages([m(conv, 1, "a")])
    # An attempt died after claiming cmid "b" for seq 2 and before writing the message.
    await cass._q(
        f'INSERT INTO "{cass._ks}".message_dedupe (conv, sender, cmid, seq, id) '
        f"VALUES (?, ?, ?, ?, ?)",
        conv, "alice", "b", 2, "lost-id",
    )  # fmt: skip
    # The restarted writer resumes at last_seq + 1 = 2 and the client resends "b".
    assert await cass.last_seq(conv) == 1
    [result] = await cass.append_messages([m(conv, 2, "b")])
    assert not result.duplicate
    assert result.message == m(conv, 2, "b")
    # A claim pointing at a slot since taken by another message is an orphan too.
    await cass.append_messages([m(conv, 3, "c")])
    await cass._q(
        f'INSERT INTO "{cass._ks}".message_dedupe (conv, sender, cmid, seq, id) '
        f"VALUES (?, ?, ?, ?, ?)",
        conv, "alice", "d", 3, "stale-id",
    )  # fmt: skip
    [result] = await cass.append_messages([m(conv, 4, "d")])
    assert not result.duplicate
    [again] = await cass.append_messages([m(conv, 5, "d", "new-id")])
    assert again.duplicate
    assert again.message == m(conv, 4, "d")
    assert [x.seq for x in await cass.messages_after(conv, 0, 10)] == [1, 2, 3, 4]


async def test_last_seq_finds_writes_past_a_stale_hint(
    cass: CassandraBackend, n: Callable[[str], str]
) -> None:
    conv = n("c")
    await cass.append_messages([m(conv, s, f"x{s}") for s in range(1, 6)])
    # A crash after the messages were written, before last_seq was raised.
    await cass._q(f'UPDATE "{cass._ks}".conversations SET last_seq = ? WHERE conv = ?', 2, conv)
    assert await cass.last_seq(conv) == 5


async def test_newer_schema_version_is_a_mismatch(request: pytest.FixtureRequest) -> None:
    backend_url("cassandra", request, Path("."))  # skips when unreachable
    keyspace = f"t_{secrets.token_hex(4)}"
    url = parse_url(cassandra_url(keyspace))
    assert isinstance(url, CassandraUrl)
    try:
        first = CassandraBackend(url)
        await first.open()
        await first._q(
            f"UPDATE \"{keyspace}\".schema_version SET version = ? WHERE name = 'parley'", 99
        )
        await first.aclose()
        second = CassandraBackend(url)
        with pytest.raises(SchemaMismatch, match="99"):
            await second.open()
        await second.aclose()
    finally:
        drop_cassandra_keyspace(keyspace)


async def test_unreachable_cassandra_names_what_was_tried() -> None:
    url = parse_url("cassandra://127.0.0.1:1/ks?protocol_version=3&connect_timeout=1")
    assert isinstance(url, CassandraUrl)
    backend = CassandraBackend(url)
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1.*protocol 3"):
        await backend.open()
    await backend.aclose()


def _driver_failure_after_unprepared() -> AttributeError:
    # What cassandra-driver raises when it cannot prepare a statement again after a restarted
    # server answered UNPREPARED: a KeyError, then an AttributeError in its error path.
    try:
        try:
            raise KeyError(b"\x08r")
        except KeyError:
            b"id".encode()  # type: ignore[attr-defined]
    except AttributeError as exc:
        return exc
    raise AssertionError("unreachable")


async def test_statements_lost_by_a_restarted_server_are_prepared_again() -> None:
    # The failure itself needs a server restart to race a request (the restart test meets it
    # now and then); here the driver's future carries it, as it does then.
    url = parse_url("cassandra://127.0.0.1:1/ks?protocol_version=3")
    assert isinstance(url, CassandraUrl)
    backend = CassandraBackend(url)
    backend._prepared["SELECT 1"] = object()
    fut: concurrent.futures.Future[object] = concurrent.futures.Future()
    fut.set_exception(_driver_failure_after_unprepared())
    with pytest.raises(Unavailable, match="lost its prepared statements") as info:
        await backend._wait(fut)
    assert info.value.retry_after == 0.1
    assert backend._prepared == {}  # the next call prepares afresh
    other: concurrent.futures.Future[object] = concurrent.futures.Future()
    other.set_exception(AttributeError("a different failure"))
    with pytest.raises(StorageError) as plain:
        await backend._wait(other)
    assert not isinstance(plain.value, Unavailable)
