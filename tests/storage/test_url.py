"""Backend URLs: accepted forms and the errors for the rest."""

from __future__ import annotations

import pytest

from storage import CassandraUrl, ConfigError, PostgresUrl, SqliteUrl, parse_url


def test_sqlite_urls() -> None:
    assert parse_url("sqlite+aiosqlite:///data/shard-0.db") == SqliteUrl("data/shard-0.db")
    full = parse_url("sqlite+aiosqlite:////var/lib/parley/s.db?synchronous=full&busy_timeout_ms=50")
    assert full == SqliteUrl("/var/lib/parley/s.db", "FULL", 50)


def test_postgres_urls() -> None:
    url = parse_url("postgresql+asyncpg://me:secret@db:6543/chat?pool_size=20&max_overflow=0")
    assert isinstance(url, PostgresUrl)
    assert url.sqlalchemy_url == "postgresql+asyncpg://me:secret@db:6543/chat"
    assert (url.pool_size, url.max_overflow, url.schema) == (20, 0, None)
    assert "secret" not in url.redacted()
    assert parse_url("postgresql+asyncpg://root@127.0.0.1/test?schema=s1").schema == "s1"  # type: ignore[union-attr]


def test_cassandra_urls() -> None:
    url = parse_url("cassandra://10.0.0.1,10.0.0.2:9142/chat?protocol_version=3")
    assert url == CassandraUrl(hosts=("10.0.0.1", "10.0.0.2"), port=9142, keyspace="chat",
                               protocol_version=3)  # fmt: skip
    assert url.consistency == "LOCAL_QUORUM"  # type: ignore[union-attr]
    assert url.replication == {"class": "SimpleStrategy", "replication_factor": "1"}  # type: ignore[union-attr]
    nts = parse_url(
        "cassandra://h/ks?replication=NetworkTopologyStrategy:dc1=3,dc2=2&consistency=one"
    )
    assert isinstance(nts, CassandraUrl)
    assert nts.replication == {"class": "NetworkTopologyStrategy", "dc1": "3", "dc2": "2"}
    assert (nts.port, nts.consistency, nts.protocol_version) == (9042, "ONE", None)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("", "non-empty"),
        ("mysql://x/y", "unsupported scheme 'mysql'"),
        ("sqlite:///x.db", "name the driver"),
        ("postgres://u@h/db", "name the driver"),
        ("sqlite+aiosqlite://", "file path"),
        ("sqlite+aiosqlite:///:memory:", "in-memory"),
        ("sqlite+aiosqlite:///x.db?synchronous=OFF", "NORMAL or FULL"),
        ("sqlite+aiosqlite:///x.db?journal=wal", "unknown option 'journal'"),
        ("postgresql+asyncpg:///db", "needs a host"),
        ("postgresql+asyncpg://u@h:99999/db", "bad port"),
        ("postgresql+asyncpg://u@h", "database name"),
        ("postgresql+asyncpg://u@h/db?pool_size=lots", "not an integer"),
        ("postgresql+asyncpg://u@h/db?pool_size=0", "outside 1..1000"),
        ("postgresql+asyncpg://u@h/db?schema=a;drop", "plain identifier"),
        ("cassandra:///ks", "at least one host"),
        ("cassandra://h", "keyspace"),
        ("cassandra://h/bad-name", "keyspace"),
        ("cassandra://h:1:2/ks", "hosts must be"),
        ("cassandra://h/ks?protocol_version=2", "outside 3..5"),
        ("cassandra://h/ks?consistency=MOST", "consistency must be one of"),
        ("cassandra://h/ks?replication=Everywhere", "replication must be"),
        ("cassandra://h/ks?replication=NetworkTopologyStrategy:", "at least one DC"),
        ("cassandra://h/ks?protocol_version=3&protocol_version=4", "given twice"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_url(url)


def test_unknown_scheme_lists_accepted_forms() -> None:
    with pytest.raises(ConfigError) as info:
        parse_url("redis://localhost/0")
    for form in ("sqlite+aiosqlite:///", "postgresql+asyncpg://", "cassandra://"):
        assert form in str(info.value)
