"""The SQL backend: SQLite (aiosqlite) and PostgreSQL (asyncpg) through SQLAlchemy Core.

SQLAlchemy's asyncio engine runs on the process's ``AsyncioBridge`` loop; every public method
submits one coroutine there and translates driver errors at that boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncpg
from sqlalchemy import (
    Row,
    String,
    and_,
    case,
    column,
    delete,
    event,
    func,
    select,
    text,
    update,
    values,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from . import _sql_schema as s
from . import _sqlite_ops as _ops
from ._backend import Backend
from ._bridge import AsyncioBridge
from ._errors import SchemaMismatch, SeqConflict, StorageError, Unavailable
from ._records import (
    AppendResult,
    Conversation,
    Message,
    MessageKey,
    Role,
    UserConversation,
    append_results,
    direct_key,
    first_of_each_key,
)
from ._sqlite_child import MESSAGE_COLUMNS
from ._sqlite_writer import SqliteWriter
from ._url import PostgresUrl, SqliteUrl

__all__ = ["SqlBackend"]

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
#: Rows per IN (...) lookup, well under SQLite's and asyncpg's parameter limits.
_CHUNK = 300
#: Seconds a shielded aclose() may spend disposing the pool.
_CLOSE_DEADLINE = 5.0
# A storage shard runs its committer and 8 pool workers at once. With SQLAlchemy's default
# pool (5 kept) every call beyond 5 in flight opened and closed a connection of its own: an
# aiosqlite thread, the file and the pragmas, each time.
_SQLITE_POOL_SIZE = 12
#: PostgreSQL connections kept for appends while idle: one per transaction a shard keeps in
#: flight (``ShardOptions.pipeline``'s default).
_PG_APPENDERS = 2


# The watermark statements the SQLite writer process runs (the engine's path builds the same
# with SQLAlchemy for PostgreSQL). Watermarks only move forward.
_SQLITE_ADVANCE_DELIVERED = (
    "INSERT INTO delivered (user_id, conv, device, seq) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_id, conv, device) DO UPDATE SET seq = "
    "CASE WHEN delivered.seq < excluded.seq THEN excluded.seq ELSE delivered.seq END "
    "RETURNING seq"
)
_SQLITE_ADVANCE_READ = (
    "UPDATE user_conversations SET read_seq = CASE WHEN read_seq < ? THEN ? ELSE read_seq END "
    "WHERE user_id = ? AND conv = ? RETURNING read_seq"
)

_MESSAGE_COLUMNS = MESSAGE_COLUMNS


def _pg_insert(returning: str, select: str) -> str:
    """A batch of messages in one statement: unnest the column arrays ($1..$9), skip rows that
    conflict, raise each touched conversation's ``last_seq``; then ``select`` over ``ins``."""
    return f"""\
WITH ins AS (
    INSERT INTO messages ({_MESSAGE_COLUMNS})
    SELECT * FROM unnest(
        $1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::bytea[], $8::boolean[], $9::bigint[]
    )
    ON CONFLICT DO NOTHING
    RETURNING {returning}
), top AS (
    SELECT conv, max(seq) AS seq FROM ins GROUP BY conv
), advanced AS (
    UPDATE conversations SET last_seq = top.seq FROM top
    WHERE conversations.conv = top.conv AND conversations.last_seq < top.seq
)
{select}"""


_PG_INSERT = _pg_insert("id, conv, seq", "SELECT id FROM ins")
#: The same insert for a batch of new messages, in one autocommit statement: the final SELECT
#: divides by zero unless every row went in ($10 rows), which aborts (rolls back) the whole
#: statement; the batch then takes the exact path (``_PG_INSERT`` in a transaction, then the
#: look-ups).
_PG_APPEND_NEW = _pg_insert("conv, seq", "SELECT 1 / (count(*) = $10)::int FROM ins")
#: asyncpg errors that mean the connection is gone (or unusable): Unavailable, reconnect.
_PG_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # e.g. pg_terminate_backend
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def _to_message(row: Row[Any]) -> Message:
    raw = bytes(row.body)
    body: str | bytes = raw.decode() if row.body_is_text else raw
    return Message(
        conv=row.conv,
        seq=row.seq,
        id=row.id,
        sender=row.sender,
        cmid=row.cmid,
        kind=row.kind,
        body=body,
        ts=row.ts,
    )


def _message_tuple(m: Message) -> tuple[Any, ...]:
    """The row in ``_MESSAGE_COLUMNS`` order, as the drivers bind it."""
    is_text = isinstance(m.body, str)
    body = m.body.encode() if isinstance(m.body, str) else bytes(m.body)
    return (m.conv, m.seq, m.id, m.sender, m.cmid, m.kind, body, is_text, m.ts)


def _top_seqs(messages: Sequence[Message]) -> dict[str, int]:
    top: dict[str, int] = {}
    for m in messages:
        if top.get(m.conv, 0) < m.seq:
            top[m.conv] = m.seq
    return top


async def _find_stored(
    conn: AsyncConnection, candidates: Sequence[Message], inserted: set[str]
) -> dict[MessageKey, Message]:
    """The stored messages for the candidates whose id is not in ``inserted``, by key.

    Raises ``SeqConflict`` if one of them has no stored message under its key because a
    different message holds its ``(conv, seq)``; ``StorageError`` if its id is taken.
    """
    m_ = s.messages.c
    missing = [m for m in candidates if m.id not in inserted]
    stored = await _stored_by_key(conn, [(m.conv, m.sender, m.cmid) for m in missing])
    for lost in missing:
        if (lost.conv, lost.sender, lost.cmid) in stored:
            continue
        holder = await conn.scalar(select(m_.id).where(m_.conv == lost.conv, m_.seq == lost.seq))
        if holder != lost.id:
            raise SeqConflict(lost.conv, lost.seq, holder)
        raise StorageError(f"message id {lost.id!r} is already used")
    return stored


async def _stored_by_key(
    conn: AsyncConnection, wanted: Sequence[MessageKey]
) -> dict[MessageKey, Message]:
    """The stored messages among the keys ``wanted``, by key."""
    m_ = s.messages.c
    stored: dict[MessageKey, Message] = {}
    for chunk in _chunks(wanted):
        # A join with a VALUES list, not a row-value IN: SQLite scans the whole table for the
        # latter, but searches the unique index for the join.
        keys = (
            values(column("c", String), column("s", String), column("x", String), name="k")
            .data(list(chunk))
            .cte("k")
        )
        rows = await conn.execute(
            select(s.messages).join(
                keys, and_(m_.conv == keys.c.c, m_.sender == keys.c.s, m_.cmid == keys.c.x)
            )
        )
        for row in rows:
            stored[(row.conv, row.sender, row.cmid)] = _to_message(row)
    return stored


def _chunks(items: Sequence[T], size: int = _CHUNK) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class SqlBackend(Backend):
    """A shard in SQLite or PostgreSQL. See ``Backend`` for the API and its errors.

    SQLite: WAL journal, ``synchronous`` NORMAL (process-crash safe) or FULL (power-loss safe),
    ``busy_timeout``, write transactions start with ``BEGIN IMMEDIATE``. PostgreSQL: a pool of
    ``pool_size`` + ``max_overflow`` connections with ``pool_pre_ping``, so a connection killed
    while idle is replaced transparently; one killed during a call gives ``Unavailable`` once.
    """

    def __init__(self, url: SqliteUrl | PostgresUrl, *, bridge: AsyncioBridge | None = None):
        self.url = url
        self.name = "sqlite" if isinstance(url, SqliteUrl) else "postgresql"
        self._bridge = bridge or AsyncioBridge.shared()
        self._engine: AsyncEngine | None = None
        self._acquired = False
        self._writer: SqliteWriter | None = None  # SQLite: the append path's own connection
        # PostgreSQL: the append path's connections (pool connection, asyncpg connection),
        # checked out of the pool and kept while idle, up to _PG_APPENDERS
        self._pg_idle: list[tuple[AsyncConnection, Any]] = []
        self._insert = sqlite.insert if isinstance(url, SqliteUrl) else postgresql.insert

    def __repr__(self) -> str:
        return f"SqlBackend({self.url.redacted()!r})"

    # -- plumbing ----------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._engine is None:
            raise StorageError(f"{self!r} is not open")
        return await self._bridge.run(self._translated, fn, *args)

    async def _translated(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return await fn(*args)
        except StorageError:
            raise
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise Unavailable(f"{self.url.redacted()}: {_short(exc)}") from exc
        except sa_exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise Unavailable(f"{self.url.redacted()}: connection lost: {_short(exc)}") from exc
            raise StorageError(f"{self.url.redacted()}: {_short(exc)}") from exc
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from exc
        except sa_exc.TimeoutError as exc:
            raise Unavailable(f"{self.url.redacted()}: no free connection: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise Unavailable(f"{self.url.redacted()}: {exc!r}") from exc

    def _sqlite_error(self, exc: sqlite3.Error) -> StorageError:
        # The SQLite append path runs statements on a stdlib connection of its own.
        if isinstance(exc, (sqlite3.OperationalError, sqlite3.InterfaceError)):
            return Unavailable(f"{self.url.redacted()}: {_short(exc)}")
        return StorageError(f"{self.url.redacted()}: {_short(exc)}")

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(parley_begin="BEGIN IMMEDIATE")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            yield conn

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._engine is not None:
            return
        self._bridge.acquire()
        self._acquired = True
        try:
            await self._bridge.run(self._translated, self._open)
            if isinstance(self.url, SqliteUrl):
                writer = SqliteWriter(
                    self.url.path,
                    synchronous=self.url.synchronous,
                    busy_timeout_ms=self.url.busy_timeout_ms,
                )
                self._writer = writer
                try:
                    await writer.open()
                except sqlite3.Error as exc:
                    raise Unavailable(
                        f"cannot open {self.name} at {self.url.redacted()}: {_short(exc)}",
                        retry_after=1.0,
                    ) from exc
        except BaseException:
            await self.aclose()
            raise

    def _make_engine(self) -> AsyncEngine:
        url = self.url
        if isinstance(url, SqliteUrl):
            Path(url.path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(
                f"sqlite+aiosqlite:///{url.path}",
                connect_args={"timeout": url.busy_timeout_ms / 1000},
                pool_size=_SQLITE_POOL_SIZE,
            )
            pragmas = (
                "PRAGMA journal_mode=WAL",
                f"PRAGMA synchronous={url.synchronous}",
                f"PRAGMA busy_timeout={url.busy_timeout_ms}",
            )

            @event.listens_for(engine.sync_engine, "connect")
            def on_connect(dbapi_conn: Any, _record: Any) -> None:
                # Take transaction control from the driver, so BEGIN is ours (see on_begin).
                dbapi_conn.isolation_level = None
                cursor = dbapi_conn.cursor()
                for pragma in pragmas:
                    cursor.execute(pragma)
                cursor.close()

            @event.listens_for(engine.sync_engine, "begin")
            def on_begin(conn: Any) -> None:
                # Writers take the lock up front: a deferred transaction that read first could
                # not upgrade to a write lock under WAL without failing (no busy wait then).
                conn.exec_driver_sql(conn.get_execution_options().get("parley_begin", "BEGIN"))

            return engine
        # application_name lets operators (and the fault tests) find a shard's connections.
        settings = {"application_name": f"parley-{url.schema}" if url.schema else "parley"}
        if url.schema:
            settings["search_path"] = url.schema
        connect_args: dict[str, Any] = {"timeout": 10, "server_settings": settings}
        return create_async_engine(
            url.sqlalchemy_url,
            pool_size=url.pool_size,
            max_overflow=url.max_overflow,
            pool_pre_ping=True,
            connect_args=connect_args,
        )

    async def _open(self) -> None:
        engine = self._make_engine()
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(parley_begin="BEGIN IMMEDIATE")
                async with conn.begin():
                    if isinstance(self.url, PostgresUrl):
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                            {"k": f"parley-migrate:{self.url.schema or ''}"},
                        )
                        if self.url.schema:
                            await conn.execute(
                                text(f'CREATE SCHEMA IF NOT EXISTS "{self.url.schema}"')
                            )
                    # Alembic keeps its migration context in module globals: one at a time
                    # per process, or concurrent opens would run each other's migrations.
                    async with _migration_lock():
                        await conn.run_sync(_migrate)
        except (OSError, sa_exc.OperationalError, sa_exc.InterfaceError, TimeoutError) as exc:
            await engine.dispose()
            raise Unavailable(
                f"cannot open {self.name} at {self.url.redacted()}: {_short(exc)}", retry_after=1.0
            ) from exc
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        acquired, self._acquired = self._acquired, False
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.aclose()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_DEADLINE):
            try:
                if engine is not None:
                    while self._pg_idle:
                        await self._bridge.run(self._release_pg_appender, self._pg_idle.pop())
                    await self._bridge.run(engine.dispose)
            finally:
                if acquired:
                    self._bridge.release()

    async def ping(self) -> None:
        async def go() -> None:
            async with self._read() as conn:
                await conn.execute(text("SELECT 1"))

        await self._call(go)

    async def _on_writer(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """One statement (its own transaction) on the SQLite writer process's connection.

        The watermarks move once per receipt, about once per message delivered: through the
        engine each took the bridge's thread and aiosqlite's, and SQLAlchemy building the
        statement, all Python that held the GIL against the node's loop. The writer process
        runs them in order with the appends, which SQLite serialises anyway.
        """
        assert self._writer is not None
        try:
            return await self._writer.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from exc

    async def _on_script(self, steps: list[_ops.Step]) -> _ops.Results:
        """Steps in one transaction on the SQLite writer process (see storage/_sqlite_ops.py
        for why every SQLite write goes there)."""
        assert self._writer is not None
        try:
            return await self._writer.script(steps)
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from exc

    # -- messages ----------------------------------------------------------------------------

    async def append_messages(self, batch: Sequence[Message]) -> list[AppendResult]:
        if not batch:
            return []
        writer = self._writer
        if writer is not None:
            # New messages go in whole in one transaction of the writer process; a batch with
            # a key twice, a resend or a seq conflict takes the exact path below.
            if len({(m.conv, m.sender, m.cmid) for m in batch}) == len(batch):
                try:
                    whole = await writer.append(
                        [_message_tuple(m) for m in batch], list(_top_seqs(batch).items())
                    )
                except sqlite3.Error as exc:
                    raise self._sqlite_error(exc) from exc
                if whole:
                    return [AppendResult(m, False) for m in batch]
            batch = list(batch)
            first, candidates = first_of_each_key(batch)
            return append_results(batch, first, await self._store_sqlite(candidates))
        if self.name == "postgresql":
            return await self._call(self._append_postgres, batch)
        return await self._call(self._append, list(batch))

    async def _append_postgres(self, batch: Sequence[Message]) -> list[AppendResult]:
        """One round trip for a batch of new messages (``_PG_APPEND_NEW``), else the exact
        path; on the bridge loop. The statement runs on a connection kept for appends: the
        shard's committer has up to ``pipeline`` transactions in flight, each on one of them."""
        if len({(m.conv, m.sender, m.cmid) for m in batch}) == len(batch):
            columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
            for m in batch:
                for column_, value in zip(columns, _message_tuple(m), strict=True):
                    column_.append(value)
            held = await self._pg_appender()
            done = await self._pg_append_new(held, columns, len(batch))
            if done:
                return [AppendResult(m, False) for m in batch]
        return await self._append(list(batch))

    async def _pg_append_new(
        self, held: tuple[AsyncConnection, Any], columns: tuple[list[Any], ...], count: int
    ) -> bool:
        """Run ``_PG_APPEND_NEW`` on a held connection; False if the batch did not go in whole
        (nothing committed). The connection goes back to the idle ones, or, when it failed or
        was cancelled mid-statement, is dropped.

        Raises ``Unavailable`` if the connection is gone, ``StorageError`` if the server
        rejects a row or asyncpg cannot encode one.
        """
        db = held[1]
        try:
            await db.fetchval(_PG_APPEND_NEW, *columns, count)
        except asyncpg.DivisionByZeroError:
            self._pg_idle.append(held)
            return False
        except Exception as exc:
            # asyncpg's client-side DataError is an InterfaceError and a ValueError: a row it
            # could not encode, like a row the server rejected, is a StorageError.
            if db.is_closed() or (
                isinstance(exc, _PG_CONNECTION_ERRORS) and not isinstance(exc, ValueError)
            ):
                await self._release_pg_appender(held, invalidate=True)
                raise Unavailable(f"{self.url.redacted()}: {_short(exc)}") from exc
            self._pg_idle.append(held)
            if isinstance(exc, asyncpg.PostgresError | ValueError):
                raise StorageError(f"{self.url.redacted()}: {_short(exc)}") from exc
            raise
        except BaseException:
            # Cancelled mid-statement: the next call starts on a fresh connection.
            await self._release_pg_appender(held, invalidate=True)
            raise
        if len(self._pg_idle) < _PG_APPENDERS:
            self._pg_idle.append(held)
        else:
            await self._release_pg_appender(held)
        return True

    async def _pg_appender(self) -> tuple[AsyncConnection, Any]:
        """An idle append connection (its pool connection and asyncpg connection), else one
        checked out of the pool (pre-pinged) for appends; closed ones are dropped."""
        idle = self._pg_idle
        while idle:
            held = idle.pop()
            if not held[1].is_closed():
                return held
            await self._release_pg_appender(held, invalidate=True)
        assert self._engine is not None
        conn = await self._engine.connect()
        try:
            driver = (await conn.get_raw_connection()).driver_connection
        except BaseException:
            await conn.close()
            raise
        return (conn, driver)

    async def _release_pg_appender(
        self, held: tuple[AsyncConnection, Any], *, invalidate: bool = False
    ) -> None:
        conn = held[0]
        try:
            if invalidate:
                await conn.invalidate()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _append(self, batch: list[Message]) -> list[AppendResult]:
        if self.name != "postgresql":  # SQLite appends only through its writer process
            raise StorageError(f"{self.url.redacted()}: the SQLite writer process is not open")
        first, candidates = first_of_each_key(batch)
        return append_results(batch, first, await self._store_postgres(candidates))

    async def _store_sqlite(self, candidates: list[Message]) -> dict[MessageKey, Message]:
        """Insert ``candidates`` (distinct keys); return the already stored ones by key.

        The exact path, taken when the writer process found a batch that does not go in whole
        (a resend, or a seq conflict), in one transaction there (``_sqlite_ops.store_messages``).

        Raises ``SeqConflict`` if a candidate has no stored message under its key because a
        different message holds its ``(conv, seq)`` (nothing is committed), ``StorageError``
        if its id is taken.
        """
        rows = [_message_tuple(m) for m in candidates]
        convs = sorted({m.conv for m in candidates})
        results = await self._on_script(_ops.store_messages(rows, convs))
        lost = _ops.conflict(results)
        if lost is not None:
            conv, seq, id_, holder = lost
            if holder != id_:
                raise SeqConflict(conv, seq, holder)
            raise StorageError(f"message id {id_!r} is already used")
        inserted, found = _ops.stored(rows, results)
        return {(m.conv, m.sender, m.cmid): m for m in found if m.id not in inserted}

    async def _store_postgres(self, candidates: list[Message]) -> dict[MessageKey, Message]:
        """Insert ``candidates`` (distinct keys); return the already stored ones by key.

        One statement per batch: the rows go as nine arrays through ``unnest``, and a
        data-modifying CTE moves ``last_seq`` in the same round trip; ``RETURNING`` names the
        rows inserted, and only the others are looked up.
        """
        columns: tuple[list[Any], ...] = tuple([] for _ in range(9))
        for m in candidates:
            for column_, value in zip(columns, _message_tuple(m), strict=True):
                column_.append(value)
        async with self._write() as conn:
            result = await conn.exec_driver_sql(_PG_INSERT, columns)
            return await _find_stored(conn, candidates, {row[0] for row in result})

    async def messages_after(self, conv: str, after_seq: int, limit: int) -> list[Message]:
        async def go() -> list[Message]:
            m_ = s.messages.c
            async with self._read() as conn:
                rows = await conn.execute(
                    select(s.messages)
                    .where(m_.conv == conv, m_.seq > after_seq)
                    .order_by(m_.seq)
                    .limit(limit)
                )
                return [_to_message(r) for r in rows]

        if limit <= 0:
            return []
        return await self._call(go)

    async def messages_before(
        self, conv: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        async def go() -> tuple[list[Message], bool]:
            m_ = s.messages.c
            query = select(s.messages).where(m_.conv == conv)
            if before_seq is not None:
                query = query.where(m_.seq < before_seq)
            async with self._read() as conn:
                rows = list(await conn.execute(query.order_by(m_.seq.desc()).limit(limit + 1)))
            more = len(rows) > limit
            return [_to_message(r) for r in reversed(rows[:limit])], more

        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        return await self._call(go)

    async def last_seq(self, conv: str) -> int:
        async def go() -> int:
            async with self._read() as conn:
                return await _last_seq(conn, conv)

        return await self._call(go)

    async def find_messages(
        self, conv: str, keys: Sequence[tuple[str, str]]
    ) -> list[Message] | None:
        async def go() -> list[Message]:
            async with self._read() as conn:
                found = await _stored_by_key(conn, [(conv, sender, cmid) for sender, cmid in keys])
                return list(found.values())

        if not keys:
            await anyio.lowlevel.checkpoint()
            return []
        return await self._call(go)

    # -- conversations -----------------------------------------------------------------------

    async def create_conversation(self, conv: Conversation) -> Conversation:
        key: str | None = None
        if conv.kind == "direct":
            if len(conv.members) != 2:
                raise ValueError(f"a direct conversation has two members, got {conv.members!r}")
            key = direct_key(*sorted(conv.members))
        elif conv.kind != "group":
            raise ValueError(f"conversation kind must be 'direct' or 'group', got {conv.kind!r}")

        if self._writer is not None:
            stored = _ops.loaded_conversation(
                await self._on_script(_ops.create_conversation(conv, key))
            )
            if stored is None:  # pragma: no cover - a unique index we do not know
                raise StorageError(f"conversation {conv.conv!r} could not be created")
            return stored

        async def go() -> Conversation:
            c_ = s.conversations.c
            async with self._write() as conn:
                result = await conn.execute(
                    self._insert(s.conversations)
                    .values(
                        conv=conv.conv,
                        kind=conv.kind,
                        title=conv.title,
                        created_ts=conv.created_ts,
                        last_seq=0,
                        direct_key=key,
                    )
                    .on_conflict_do_nothing()
                )
                if result.rowcount == 1:
                    rows = [
                        {
                            "conv": conv.conv,
                            "user_id": u,
                            "role": "admin" if u in conv.admins else "member",
                            "joined_ts": conv.created_ts,
                        }
                        for u in sorted(conv.members | conv.admins)
                    ]
                    if rows:
                        await conn.execute(self._insert(s.members).on_conflict_do_nothing(), rows)
                    found: str | None = conv.conv
                else:
                    found = await conn.scalar(select(c_.conv).where(c_.conv == conv.conv))
                    if found is None and key is not None:
                        found = await conn.scalar(select(c_.conv).where(c_.direct_key == key))
                    if found is None:  # pragma: no cover - a unique index we do not know
                        raise StorageError(f"conversation {conv.conv!r} could not be created")
                stored = await _load_conversation(conn, str(found))
                assert stored is not None
                return stored

        return await self._call(go)

    async def get_conversation(self, conv: str) -> Conversation | None:
        async def go() -> Conversation | None:
            async with self._read() as conn:
                return await _load_conversation(conn, conv)

        return await self._call(go)

    async def find_direct(self, user_a: str, user_b: str) -> Conversation | None:
        key = direct_key(user_a, user_b)

        async def go() -> Conversation | None:
            c_ = s.conversations.c
            async with self._read() as conn:
                found = await conn.scalar(select(c_.conv).where(c_.direct_key == key))
                return None if found is None else await _load_conversation(conn, found)

        return await self._call(go)

    async def add_members(
        self, conv: str, users: Sequence[str], role: Role = "member", *, joined_ts: int = 0
    ) -> None:
        if self._writer is not None:
            if users:
                await self._on_script(_ops.add_members(conv, users, role, joined_ts))
            return
        rows = [{"conv": conv, "user_id": u, "role": role, "joined_ts": joined_ts} for u in users]

        async def go() -> None:
            async with self._write() as conn:
                await conn.execute(self._insert(s.members).on_conflict_do_nothing(), rows)

        if rows:
            await self._call(go)

    async def remove_members(self, conv: str, users: Sequence[str]) -> None:
        if self._writer is not None:
            if users:
                await self._on_script(_ops.remove_members(conv, users))
            return

        async def go() -> None:
            mb = s.members.c
            async with self._write() as conn:
                for chunk in _chunks(list(users)):
                    await conn.execute(
                        delete(s.members).where(mb.conv == conv, mb.user_id.in_(chunk))
                    )

        if users:
            await self._call(go)

    async def set_role(self, conv: str, users: Sequence[str], role: Role) -> None:
        if self._writer is not None:
            if users:
                await self._on_script(_ops.set_role(conv, users, role))
            return

        async def go() -> None:
            mb = s.members.c
            async with self._write() as conn:
                for chunk in _chunks(list(users)):
                    await conn.execute(
                        update(s.members)
                        .where(mb.conv == conv, mb.user_id.in_(chunk))
                        .values(role=role)
                    )

        if users:
            await self._call(go)

    # -- user-scoped rows --------------------------------------------------------------------

    async def add_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        if self._writer is not None:
            if convs:
                await self._on_script(_ops.add_user_conversations(user, convs))
            return
        rows = [{"user_id": user, "conv": c, "read_seq": 0} for c in convs]

        async def go() -> None:
            async with self._write() as conn:
                await conn.execute(
                    self._insert(s.user_conversations).on_conflict_do_nothing(), rows
                )

        if rows:
            await self._call(go)

    async def remove_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        if self._writer is not None:
            if convs:
                await self._on_script(_ops.remove_user_conversations(user, convs))
            return

        async def go() -> None:
            uc, dl = s.user_conversations.c, s.delivered.c
            async with self._write() as conn:
                for chunk in _chunks(list(convs)):
                    await conn.execute(
                        delete(s.user_conversations).where(uc.user_id == user, uc.conv.in_(chunk))
                    )
                    await conn.execute(
                        delete(s.delivered).where(dl.user_id == user, dl.conv.in_(chunk))
                    )

        if convs:
            await self._call(go)

    async def user_conversations(self, user: str) -> list[UserConversation]:
        async def go() -> list[UserConversation]:
            uc, dl = s.user_conversations.c, s.delivered.c
            async with self._read() as conn:
                rows = list(
                    await conn.execute(
                        select(uc.conv, uc.read_seq).where(uc.user_id == user).order_by(uc.conv)
                    )
                )
                marks: dict[str, dict[str, int]] = {}
                for row in await conn.execute(
                    select(dl.conv, dl.device, dl.seq).where(dl.user_id == user)
                ):
                    marks.setdefault(row.conv, {})[row.device] = row.seq
            return [UserConversation(r.conv, r.read_seq, marks.get(r.conv, {})) for r in rows]

        return await self._call(go)

    async def users_conversations(self, users: Sequence[str]) -> dict[str, list[UserConversation]]:
        wanted = list(dict.fromkeys(users))

        async def go() -> dict[str, list[UserConversation]]:
            uc, dl = s.user_conversations.c, s.delivered.c
            lists: dict[str, list[tuple[str, int]]] = {u: [] for u in wanted}
            marks: dict[tuple[str, str], dict[str, int]] = {}
            async with self._read() as conn:
                for chunk in _chunks(wanted):
                    for row in await conn.execute(
                        select(uc.user_id, uc.conv, uc.read_seq)
                        .where(uc.user_id.in_(chunk))
                        .order_by(uc.user_id, uc.conv)
                    ):
                        lists[row.user_id].append((row.conv, row.read_seq))
                    for mark in await conn.execute(
                        select(dl.user_id, dl.conv, dl.device, dl.seq).where(dl.user_id.in_(chunk))
                    ):
                        marks.setdefault((mark.user_id, mark.conv), {})[mark.device] = mark.seq
            return {
                user: [UserConversation(c, r, marks.get((user, c), {})) for c, r in rows]
                for user, rows in lists.items()
            }

        if not wanted:
            return {}
        return await self._call(go)

    async def advance_delivered(self, user: str, device: str, conv: str, seq: int) -> int:
        if self._writer is not None:
            [(value,)] = await self._on_writer(_SQLITE_ADVANCE_DELIVERED, user, conv, device, seq)
            return int(value)

        async def go() -> int:
            dl = s.delivered
            ins = self._insert(dl).values(user_id=user, conv=conv, device=device, seq=seq)
            stmt = ins.on_conflict_do_update(
                index_elements=[dl.c.user_id, dl.c.conv, dl.c.device],
                set_={"seq": case((dl.c.seq < ins.excluded.seq, ins.excluded.seq), else_=dl.c.seq)},
            ).returning(dl.c.seq)
            async with self._write() as conn:
                value = await conn.scalar(stmt)
            assert value is not None
            return int(value)

        return await self._call(go)

    async def advance_read(self, user: str, conv: str, seq: int) -> int | None:
        if self._writer is not None:
            rows = await self._on_writer(_SQLITE_ADVANCE_READ, seq, seq, user, conv)
            return int(rows[0][0]) if rows else None

        async def go() -> int | None:
            uc = s.user_conversations.c
            async with self._write() as conn:
                value = await conn.scalar(
                    update(s.user_conversations)
                    .where(uc.user_id == user, uc.conv == conv)
                    .values(read_seq=case((uc.read_seq < seq, seq), else_=uc.read_seq))
                    .returning(uc.read_seq)
                )
            return None if value is None else int(value)

        return await self._call(go)

    async def touch_user(self, user: str, last_seen_ts: int) -> None:
        await self.touch_users({user: last_seen_ts})

    async def touch_users(self, seen: Mapping[str, int]) -> None:
        if self._writer is not None:
            if seen:
                await self._on_script(_ops.touch_users(seen))
            return
        rows = [{"user_id": user, "last_seen_ts": ts} for user, ts in seen.items()]

        async def go() -> None:
            async with self._write() as conn:
                await conn.execute(_upsert_last_seen(self._insert), rows)

        if rows:
            await self._call(go)

    async def last_seen(self, user: str) -> int | None:
        async def go() -> int | None:
            us = s.users.c
            async with self._read() as conn:
                value = await conn.scalar(select(us.last_seen_ts).where(us.user_id == user))
            return None if value is None else int(value)

        return await self._call(go)


@functools.cache
def _upsert_last_seen(insert: Callable[..., Any]) -> Any:
    """The last-seen upsert of a dialect (keeps the later time), built once."""
    us = s.users
    ins = insert(us)
    return ins.on_conflict_do_update(
        index_elements=[us.c.user_id],
        set_={
            "last_seen_ts": case(
                (us.c.last_seen_ts < ins.excluded.last_seen_ts, ins.excluded.last_seen_ts),
                else_=us.c.last_seen_ts,
            )
        },
    )


async def _last_seq(conn: AsyncConnection, conv: str) -> int:
    m_ = s.messages.c
    value = await conn.scalar(select(func.max(m_.seq)).where(m_.conv == conv))
    return int(value or 0)


async def _load_conversation(conn: AsyncConnection, conv: str) -> Conversation | None:
    c_, mb = s.conversations.c, s.members.c
    row = (await conn.execute(select(s.conversations).where(c_.conv == conv))).first()
    if row is None:
        return None
    people = list(await conn.execute(select(mb.user_id, mb.role).where(mb.conv == conv)))
    return Conversation(
        conv=row.conv,
        kind=row.kind,
        title=row.title,
        created_ts=row.created_ts,
        last_seq=max(row.last_seq, await _last_seq(conn, conv)),
        members=frozenset(p.user_id for p in people),
        admins=frozenset(p.user_id for p in people if p.role == "admin"),
    )


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


def _migrate(sync_conn: Any) -> None:
    """Bring the schema to ``SCHEMA_HEAD`` with Alembic; refuse an unknown (newer) revision."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = sync_conn
    script = ScriptDirectory.from_config(config)
    known = {rev.revision for rev in script.walk_revisions()}
    current = MigrationContext.configure(sync_conn).get_current_revision()
    if current is not None and current not in known:
        raise SchemaMismatch(
            f"the database is at schema revision {current!r}, unknown to this code "
            f"(it knows {sorted(known)}, head {s.SCHEMA_HEAD!r}); was it written by a newer "
            f"version?"
        )
    command.upgrade(config, s.SCHEMA_HEAD)
    after = MigrationContext.configure(sync_conn).get_current_revision()
    if after != s.SCHEMA_HEAD:  # pragma: no cover - a broken migration chain
        raise SchemaMismatch(f"schema at {after!r} after migrating, expected {s.SCHEMA_HEAD!r}")


def _short(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc)
    return text_.splitlines()[0] if text_ else type(exc).__name__
