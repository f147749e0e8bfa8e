"""Fixtures for the storage tests: one backend per database kind, on trio with a real clock.

Databases are real. SQLite gets a file in ``tmp_path`` per test. PostgreSQL (env
``PARLEY_TEST_POSTGRES``) gets one fresh schema per test session and Cassandra (env
``PARLEY_TEST_CASSANDRA``, ``host:port``) one fresh keyspace, both dropped at the end; tests
keep apart by naming their rows with the ``n`` fixture. When a server is unreachable, its tests
skip (or fail under CI) through ``require_service``.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from storage import Backend, StorageError, backend_from_url
from tests.conftest import require_service

T = TypeVar("T")

POSTGRES = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql+asyncpg://root@127.0.0.1:5432/test")
CASSANDRA = os.environ.get("PARLEY_TEST_CASSANDRA", "127.0.0.1:9042")
#: Cassandra 2.1 (the server .ci/cassandra runs) speaks protocol v3 at most.
CASSANDRA_PROTOCOL = os.environ.get("PARLEY_TEST_CASSANDRA_PROTOCOL", "3")


@pytest.fixture
def anyio_backend() -> str:
    """Storage tests talk to real databases and threads: trio, real clock."""
    return "trio"


def postgres_url(schema: str) -> str:
    sep = "&" if "?" in POSTGRES else "?"
    return f"{POSTGRES}{sep}schema={schema}"


def cassandra_url(keyspace: str) -> str:
    return f"cassandra://{CASSANDRA}/{keyspace}?protocol_version={CASSANDRA_PROTOCOL}"


async def _probe(url: str) -> BaseException | None:
    backend = backend_from_url(url)
    try:
        await backend.open()
    except StorageError as exc:
        return exc
    finally:
        await backend.aclose()
    return None


async def drop_postgres_schema(schema: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from storage import AsyncioBridge

    async def go() -> None:
        engine = create_async_engine(POSTGRES.split("?")[0])
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await engine.dispose()

    bridge = AsyncioBridge.shared()
    bridge.acquire()
    try:
        await bridge.run(go)
    finally:
        bridge.release()


def drop_cassandra_keyspace(keyspace: str) -> None:
    from cassandra.cluster import Cluster
    from cassandra.io.libevreactor import LibevConnection

    host, _, port = CASSANDRA.partition(":")
    cluster = Cluster(
        [host],
        port=int(port or 9042),
        protocol_version=int(CASSANDRA_PROTOCOL),
        connection_class=LibevConnection,
    )
    try:
        cluster.connect().execute(f'DROP KEYSPACE IF EXISTS "{keyspace}"')
    finally:
        cluster.shutdown()


def run_trio(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """``trio.run`` in a fresh thread: session fixtures may be first asked for inside a test's
    own trio run, where another run cannot start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(trio.run, fn, *args).result()


@pytest.fixture(scope="session")
def postgresql_session_url() -> Iterator[tuple[str, BaseException | None]]:
    schema = f"t_{secrets.token_hex(4)}"
    url = postgres_url(schema)
    error = run_trio(_probe, url)
    yield url, error
    if error is None:
        run_trio(drop_postgres_schema, schema)


@pytest.fixture(scope="session")
def cassandra_session_url() -> Iterator[tuple[str, BaseException | None]]:
    keyspace = f"t_{secrets.token_hex(4)}"
    url = cassandra_url(keyspace)
    error = run_trio(_probe, url)
    yield url, error
    if error is None:
        drop_cassandra_keyspace(keyspace)


KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
    pytest.param("cassandra", id="cassandra", marks=pytest.mark.integration),
]


def backend_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a ready database of ``kind`` (skipping when its server is unreachable)."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'shard.db'}"
    url, error = request.getfixturevalue(f"{kind}_session_url")
    require_service(kind, error)
    return str(url)


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """An open backend of each kind."""
    b = backend_from_url(backend_url(request.param, request, tmp_path))
    await b.open()
    try:
        yield b
    finally:
        await b.aclose()


@pytest.fixture
def n() -> Callable[[str], str]:
    """Names unique to this test: ``n("c1")`` -> ``"c1-<random>"``."""
    token = secrets.token_hex(4)
    return lambda name: f"{name}-{token}"
