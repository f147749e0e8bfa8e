"""The Cassandra backend (cassandra-driver), working with protocol v3 (Cassandra 2.1) to v5.

Layout (the Discord one): messages are partitioned by ``(conv, bucket)`` with
``bucket = seq // BUCKET_SIZE`` and clustered by ``seq``, so a partition holds at most
``BUCKET_SIZE`` messages and paging walks buckets. See docs/storage.md for the tables.

Idempotent append for a single writer per conversation (its conversation actor):

1. Claim each ``(conv, sender, cmid)`` in ``message_dedupe`` with ``INSERT ... IF NOT EXISTS``
   (a lightweight transaction), recording the seq and id the message will be stored under.
2. A claim that already exists names ``(seq0, id0)``. If the message at ``seq0`` has id ``id0``,
   the message is stored: the result is that stored message with ``duplicate=True``. Otherwise
   the claim is an orphan of an attempt that died between claiming and writing (it was never
   acked, because acks follow the whole call); it is taken over with ``UPDATE ... IF id = id0``.
3. The slots ``(conv, seq)`` of the new messages are read; a different message in one of them
   raises ``SeqConflict`` after the claims made by this call are released (a claim left behind by
   a crash here is an orphan, handled by step 2 on a retry).
4. The messages are written per ``(conv, bucket)`` partition as single-partition unlogged batches
   (atomic and isolated in Cassandra), partitions of one conversation in seq order, so a failure
   leaves a prefix of the conversation's messages, never a hole. Then ``conversations.last_seq``
   is raised (a hint: ``last_seq()`` also probes the buckets after it).

Every write is idempotent (same key, same values), so retrying after ``Unavailable`` is safe.
Watermarks are raised with a read-check (read, then write the max) rather than an LWT, because
their writer is one session actor per user and an LWT per delivery would cost a Paxos round;
two concurrent writers could race, and the later write would win. ``last_seen`` uses the write
timestamp (``USING TIMESTAMP ms*1000``) so the highest time wins without any read.

Protocol v3 has no unset values and binding None writes a tombstone, so no statement here binds
None: statements are built with only the columns that have values.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from ._backend import Backend
from ._bridge import wait_threadsafe
from ._errors import SchemaMismatch, SeqConflict, StorageError, Unavailable
from ._records import (
    AppendResult,
    Conversation,
    Message,
    Role,
    UserConversation,
    append_results,
    direct_key,
    first_of_each_key,
)
from ._url import CassandraUrl

__all__ = ["BUCKET_SIZE", "CassandraBackend"]

#: Messages per partition: ``bucket = seq // BUCKET_SIZE``.
BUCKET_SIZE = 1000
#: The schema version this code writes (stored in the ``schema_version`` table).
SCHEMA_VERSION = 1
#: Messages per single-partition batch.
_BATCH_ROWS = 100
_CLOSE_DEADLINE = 10.0


def _bucket(seq: int) -> int:
    return seq // BUCKET_SIZE


def _tables(ks: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS "{ks}".messages (
            conv text, bucket bigint, seq bigint, id text, sender text, cmid text, kind text,
            body blob, body_is_text boolean, ts bigint,
            PRIMARY KEY ((conv, bucket), seq)) WITH CLUSTERING ORDER BY (seq ASC)""",
        f"""CREATE TABLE IF NOT EXISTS "{ks}".message_dedupe (
            conv text, sender text, cmid text, seq bigint, id text,
            PRIMARY KEY ((conv, sender, cmid)))""",
        f"""CREATE TABLE IF NOT EXISTS "{ks}".conversations (
            conv text PRIMARY KEY, kind text, title text, created_ts bigint, last_seq bigint,
            direct_key text)""",
        f"""CREATE TABLE IF NOT EXISTS "{ks}".members (
            conv text, user_id text, role text, joined_ts bigint,
            PRIMARY KEY (conv, user_id))""",
        f"""CREATE TABLE IF NOT EXISTS "{ks}".direct_pairs (
            direct_key text PRIMARY KEY, conv text)""",
        f"""CREATE TABLE IF NOT EXISTS "{ks}".user_conversations (
            user_id text, conv text, joined boolean, read_seq bigint,
            delivered map<text, bigint>, PRIMARY KEY (user_id, conv))""",
        f"""CREATE TABLE IF NOT EXISTS "{ks}".users (
            user_id text PRIMARY KEY, last_seen_ts bigint)""",
    ]


def _to_message(row: dict[str, Any]) -> Message:
    raw = bytes(row["body"] or b"")
    return Message(
        conv=row["conv"],
        seq=row["seq"],
        id=row["id"],
        sender=row["sender"],
        cmid=row["cmid"],
        kind=row["kind"],
        body=raw.decode() if row["body_is_text"] else raw,
        ts=row["ts"],
    )


class CassandraBackend(Backend):
    """A shard in a Cassandra keyspace. See ``Backend`` for the API, and the module docstring
    for how appends stay idempotent and gapless without transactions.

    The driver runs its own I/O thread (the libev reactor); its futures are handed back to the
    caller's trio or asyncio loop with ``wait_threadsafe``, so no call blocks the loop. Blocking
    driver calls (connect, prepare, shutdown) run in worker threads.
    """

    name = "cassandra"

    def __init__(self, url: CassandraUrl) -> None:
        self.url = url
        self._ks = url.keyspace
        self._cluster: Any = None
        self._session: Any = None
        self._prepared: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"CassandraBackend({self.url.redacted()!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._session is not None:
            return
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile

        # The libev reactor: a C extension with its own I/O thread. The driver's default on
        # Python 3.11 is the asyncore reactor, whose import warns (asyncore is deprecated) and
        # warnings are errors here; the asyncio reactor would need a loop thread of its own.
        from cassandra.io.libevreactor import LibevConnection
        from cassandra.policies import (
            DCAwareRoundRobinPolicy,
            ExponentialReconnectionPolicy,
            TokenAwarePolicy,
        )
        from cassandra.query import dict_factory

        url = self.url
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=ConsistencyLevel.name_to_value[url.consistency],
            serial_consistency_level=ConsistencyLevel.name_to_value[url.serial_consistency],
            request_timeout=10.0,
            row_factory=dict_factory,
        )
        options: dict[str, Any] = {}
        if url.protocol_version is not None:
            options["protocol_version"] = url.protocol_version
        cluster = Cluster(
            contact_points=list(url.hosts),
            port=url.port,
            connection_class=LibevConnection,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 10.0),
            connect_timeout=url.connect_timeout_s,
            control_connection_timeout=url.connect_timeout_s,
            **options,
        )
        try:
            session = await anyio.to_thread.run_sync(cluster.connect)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(cluster.shutdown)
            if isinstance(exc, Exception):
                raise Unavailable(
                    f"cannot open cassandra at {url.redacted()} "
                    f"(tried {', '.join(f'{h}:{url.port}' for h in url.hosts)}, protocol "
                    f"{url.protocol_version or 'driver default'}): {_short(exc)}",
                    retry_after=1.0,
                ) from exc
            raise
        session.default_fetch_size = None
        self._cluster, self._session = cluster, session
        try:
            await self._create_schema()
        except BaseException:
            await self.aclose()
            raise

    async def _create_schema(self) -> None:
        ks = self._ks
        replication = ", ".join(f"'{k}': '{v}'" for k, v in self.url.replication.items())
        await self._run(
            f'CREATE KEYSPACE IF NOT EXISTS "{ks}" WITH replication = {{{replication}}}'
        )
        await self._run(
            f'CREATE TABLE IF NOT EXISTS "{ks}".schema_version (name text PRIMARY KEY, version int)'
        )
        rows = await self._run(f"SELECT version FROM \"{ks}\".schema_version WHERE name = 'parley'")
        found = rows[0]["version"] if rows else None
        if found is not None and found != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"keyspace {ks!r} holds Parley schema version {found}, this code knows "
                f"{SCHEMA_VERSION}; was it written by a newer version?"
            )
        for ddl in _tables(ks):
            await self._run(ddl)
        if found is None:
            await self._run(
                f'INSERT INTO "{ks}".schema_version (name, version) VALUES (%s, %s)',
                ("parley", SCHEMA_VERSION),
            )

    async def aclose(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        self._prepared.clear()
        if cluster is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_DEADLINE):
            await anyio.to_thread.run_sync(cluster.shutdown)

    async def ping(self) -> None:
        await self._run("SELECT release_version FROM system.local")

    # -- plumbing ----------------------------------------------------------------------------

    async def _stmt(self, query: str) -> Any:
        prepared = self._prepared.get(query)
        if prepared is None:
            session = self._live()
            try:
                prepared = await anyio.to_thread.run_sync(session.prepare, query)
            except Exception as exc:
                raise _translate(exc, self.url) from exc
            self._prepared[query] = prepared
        return prepared

    def _live(self) -> Any:
        if self._session is None:
            raise StorageError(f"{self!r} is not open")
        return self._session

    def _submit(self, stmt: Any, params: Sequence[Any] = ()) -> concurrent.futures.Future[Any]:
        """Start a statement (sync, non-blocking); the future completes on a driver thread."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()
        try:
            response = self._live().execute_async(stmt, params)
        except Exception as exc:
            fut.set_exception(exc)
            return fut
        response.add_callbacks(fut.set_result, fut.set_exception)
        return fut

    async def _wait(self, fut: concurrent.futures.Future[Any]) -> list[dict[str, Any]]:
        try:
            rows = await wait_threadsafe(fut)
        except StorageError:
            raise
        except Exception as exc:
            if _lost_prepared(exc):
                # A restarted server answered UNPREPARED and the driver failed to prepare the
                # statement again: the id it looked up was not in its cache (KeyError), and
                # its error path then failed too (AttributeError; see
                # apache/cassandra-python-driver#1277). Prepare ours afresh; the caller
                # retries, as for any outage (appends are idempotent).
                self._prepared.clear()
                raise Unavailable(
                    f"{self.url.redacted()}: the server lost its prepared statements; retry",
                    retry_after=0.1,
                ) from exc
            raise _translate(exc, self.url) from exc
        return list(rows or [])

    async def _run(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return await self._wait(self._submit(query, params))

    async def _q(self, query: str, *params: Any) -> list[dict[str, Any]]:
        return await self._wait(self._submit(await self._stmt(query), params))

    async def _all(self, query: str, param_sets: Sequence[Sequence[Any]]) -> list[Any]:
        stmt = await self._stmt(query)
        futs = [self._submit(stmt, p) for p in param_sets]
        return [await self._wait(f) for f in futs]

    # -- messages ----------------------------------------------------------------------------

    async def append_messages(self, batch: Sequence[Message]) -> list[AppendResult]:
        if not batch:
            return []
        ks = self._ks
        first, uniq = first_of_each_key(batch)
        slots: dict[tuple[str, int], str] = {}
        for m in uniq:
            if slots.setdefault((m.conv, m.seq), m.id) != m.id:
                raise SeqConflict(m.conv, m.seq, slots[(m.conv, m.seq)])

        # 1. claim (conv, sender, cmid)
        claims = await self._all(
            f'INSERT INTO "{ks}".message_dedupe (conv, sender, cmid, seq, id) '
            f"VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
            [(m.conv, m.sender, m.cmid, m.seq, m.id) for m in uniq],
        )
        claimed: list[Message] = []
        prior: list[tuple[Message, int, str]] = []
        for m, rows in zip(uniq, claims, strict=True):
            if rows[0]["[applied]"]:
                claimed.append(m)
            else:
                prior.append((m, rows[0]["seq"], rows[0]["id"]))

        # 2. existing claims: stored duplicates, or orphans to take over
        stored: dict[tuple[str, str, str], Message] = {}
        orphans: list[tuple[Message, str]] = []
        if prior:
            found = await self._all(
                f'SELECT * FROM "{ks}".messages WHERE conv = ? AND bucket = ? AND seq = ?',
                [(m.conv, _bucket(seq0), seq0) for m, seq0, _ in prior],
            )
            for (m, _, id0), rows in zip(prior, found, strict=True):
                if rows and rows[0]["id"] == id0:
                    stored[(m.conv, m.sender, m.cmid)] = _to_message(rows[0])
                else:
                    orphans.append((m, id0))
        new = sorted(claimed + [m for m, _ in orphans], key=lambda m: (m.conv, m.seq))

        # 3. the new messages' slots must be free (or hold the same message)
        try:
            await self._check_slots(new)
        except SeqConflict:
            with anyio.CancelScope(shield=True):
                await self._all(
                    f'DELETE FROM "{ks}".message_dedupe WHERE conv = ? AND sender = ? '
                    f"AND cmid = ? IF id = ?",
                    [(m.conv, m.sender, m.cmid, m.id) for m in claimed],
                )
            raise
        if orphans:
            taken = await self._all(
                f'UPDATE "{ks}".message_dedupe SET seq = ?, id = ? '
                f"WHERE conv = ? AND sender = ? AND cmid = ? IF id = ?",
                [(m.seq, m.id, m.conv, m.sender, m.cmid, id0) for m, id0 in orphans],
            )
            if not all(rows[0]["[applied]"] for rows in taken):
                raise StorageError(
                    "a client message id was claimed concurrently: more than one writer is "
                    "appending to the same conversation"
                )

        # 4. write, per partition, in seq order
        await self._write_messages(new)
        top: dict[str, int] = {}
        for m in new:
            top[m.conv] = max(top.get(m.conv, 0), m.seq)
        if top:
            await self._all(
                f'UPDATE "{ks}".conversations SET last_seq = ? WHERE conv = ?',
                [(seq, conv) for conv, seq in top.items()],
            )

        return append_results(batch, first, stored)

    async def find_messages(self, conv: str, keys: Sequence[tuple[str, str]]) -> list[Message]:
        """The stored messages of ``conv`` among ``keys`` (``(sender, cmid)``): each key's claim
        in ``message_dedupe``, kept when the message at the claimed seq has the claimed id (a
        claim without it is an orphan: not stored). Two reads per key, in parallel."""
        if not keys:
            await anyio.lowlevel.checkpoint()
            return []
        ks = self._ks
        claims = await self._all(
            f'SELECT seq, id FROM "{ks}".message_dedupe WHERE conv = ? AND sender = ? AND cmid = ?',
            [(conv, sender, cmid) for sender, cmid in keys],
        )
        held = [(rows[0]["seq"], rows[0]["id"]) for rows in claims if rows]
        if not held:
            return []
        found = await self._all(
            f'SELECT * FROM "{ks}".messages WHERE conv = ? AND bucket = ? AND seq = ?',
            [(conv, _bucket(seq), seq) for seq, _ in held],
        )
        return [
            _to_message(rows[0])
            for (_, id0), rows in zip(held, found, strict=True)
            if rows and rows[0]["id"] == id0
        ]

    async def _check_slots(self, new: list[Message]) -> None:
        groups: dict[tuple[str, int], list[Message]] = {}
        for m in new:
            groups.setdefault((m.conv, _bucket(m.seq)), []).append(m)
        keys = list(groups)
        found = await self._all(
            f'SELECT seq, id FROM "{self._ks}".messages WHERE conv = ? AND bucket = ? '
            f"AND seq >= ? AND seq <= ?",
            [(c, b, groups[(c, b)][0].seq, groups[(c, b)][-1].seq) for c, b in keys],
        )
        for key, rows in zip(keys, found, strict=True):
            held = {r["seq"]: r["id"] for r in rows}
            for m in groups[key]:
                if held.get(m.seq, m.id) != m.id:
                    raise SeqConflict(m.conv, m.seq, held[m.seq])

    async def _write_messages(self, new: list[Message]) -> None:
        from cassandra.query import BatchStatement, BatchType

        stmt = await self._stmt(
            f'INSERT INTO "{self._ks}".messages (conv, bucket, seq, id, sender, cmid, kind, '
            f"body, body_is_text, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        # Per conversation: its partitions' chunks in seq order; conversations in parallel.
        lanes: dict[str, list[Any]] = {}
        current: tuple[str, int] | None = None
        for m in new:
            key = (m.conv, _bucket(m.seq))
            lane = lanes.setdefault(m.conv, [])
            if key != current or len(lane[-1]) >= _BATCH_ROWS:
                lane.append(BatchStatement(batch_type=BatchType.UNLOGGED))
                current = key
            body = m.body.encode() if isinstance(m.body, str) else bytes(m.body)
            lane[-1].add(
                stmt,
                (m.conv, key[1], m.seq, m.id, m.sender, m.cmid, m.kind, body,
                 isinstance(m.body, str), m.ts),
            )  # fmt: skip
        pending = {conv: iter(chunks) for conv, chunks in lanes.items()}
        while pending:
            step = [(conv, next(it, None)) for conv, it in pending.items()]
            futs = [(conv, self._submit(b)) for conv, b in step if b is not None]
            for conv, b in step:
                if b is None:
                    del pending[conv]
            for _, fut in futs:
                await self._wait(fut)

    async def last_seq(self, conv: str) -> int:
        rows = await self._q(
            f'SELECT last_seq FROM "{self._ks}".conversations WHERE conv = ?', conv
        )
        best = (rows[0]["last_seq"] or 0) if rows else 0
        bucket = _bucket(best)
        while True:
            top = await self._q(
                f'SELECT seq FROM "{self._ks}".messages WHERE conv = ? AND bucket = ? '
                f"ORDER BY seq DESC LIMIT 1",
                conv,
                bucket,
            )
            if not top:
                return best
            best = max(best, top[0]["seq"])
            bucket += 1

    async def messages_after(self, conv: str, after_seq: int, limit: int) -> list[Message]:
        if limit <= 0:
            return []
        last = await self.last_seq(conv)
        out: list[Message] = []
        bucket = _bucket(max(after_seq + 1, 0))
        while len(out) < limit and bucket <= _bucket(last):
            rows = await self._q(
                f'SELECT * FROM "{self._ks}".messages WHERE conv = ? AND bucket = ? '
                f"AND seq > ? LIMIT ?",
                conv,
                bucket,
                after_seq,
                limit - len(out),
            )
            out.extend(_to_message(r) for r in rows)
            bucket += 1
        return out

    async def messages_before(
        self, conv: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        upper = before_seq - 1 if before_seq is not None else await self.last_seq(conv)
        newest_first: list[Message] = []
        bucket = _bucket(upper)
        while upper >= 0 and len(newest_first) <= limit and bucket >= 0:
            rows = await self._q(
                f'SELECT * FROM "{self._ks}".messages WHERE conv = ? AND bucket = ? '
                f"AND seq <= ? ORDER BY seq DESC LIMIT ?",
                conv,
                bucket,
                upper,
                limit + 1 - len(newest_first),
            )
            newest_first.extend(_to_message(r) for r in rows)
            bucket -= 1
        more = len(newest_first) > limit
        return list(reversed(newest_first[:limit])), more

    # -- conversations -----------------------------------------------------------------------

    async def create_conversation(self, conv: Conversation) -> Conversation:
        ks = self._ks
        key: str | None = None
        if conv.kind == "direct":
            if len(conv.members) != 2:
                raise ValueError(f"a direct conversation has two members, got {conv.members!r}")
            key = direct_key(*sorted(conv.members))
        elif conv.kind != "group":
            raise ValueError(f"conversation kind must be 'direct' or 'group', got {conv.kind!r}")
        existing = await self.get_conversation(conv.conv)
        if existing is not None:
            return existing
        conv_id = conv.conv
        if key is not None:
            rows = await self._q(
                f'INSERT INTO "{ks}".direct_pairs (direct_key, conv) VALUES (?, ?) IF NOT EXISTS',
                key,
                conv.conv,
            )
            if not rows[0]["[applied]"]:
                conv_id = rows[0]["conv"]
                existing = await self.get_conversation(conv_id)
                if existing is not None:
                    return existing
        people = sorted(conv.members | conv.admins)
        await self._all(
            f'INSERT INTO "{ks}".members (conv, user_id, role, joined_ts) VALUES (?, ?, ?, ?)',
            [(conv_id, u, "admin" if u in conv.admins else "member", conv.created_ts)
             for u in people],
        )  # fmt: skip
        columns = {"conv": conv_id, "kind": conv.kind, "created_ts": conv.created_ts}
        if conv.title is not None:
            columns["title"] = conv.title
        if key is not None:
            columns["direct_key"] = key
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        await self._q(
            f'INSERT INTO "{ks}".conversations ({names}) VALUES ({marks}) IF NOT EXISTS',
            *columns.values(),
        )
        stored = await self.get_conversation(conv_id)
        if stored is None:  # pragma: no cover - written just above
            raise StorageError(f"conversation {conv_id!r} vanished after being created")
        return stored

    async def get_conversation(self, conv: str) -> Conversation | None:
        ks = self._ks
        rows = await self._q(f'SELECT * FROM "{ks}".conversations WHERE conv = ?', conv)
        if not rows or rows[0]["kind"] is None:
            return None
        row = rows[0]
        people = await self._q(f'SELECT user_id, role FROM "{ks}".members WHERE conv = ?', conv)
        return Conversation(
            conv=row["conv"],
            kind=row["kind"],
            title=row["title"],
            created_ts=row["created_ts"],
            last_seq=await self.last_seq(conv),
            members=frozenset(p["user_id"] for p in people),
            admins=frozenset(p["user_id"] for p in people if p["role"] == "admin"),
        )

    async def find_direct(self, user_a: str, user_b: str) -> Conversation | None:
        rows = await self._q(
            f'SELECT conv FROM "{self._ks}".direct_pairs WHERE direct_key = ?',
            direct_key(user_a, user_b),
        )
        return await self.get_conversation(rows[0]["conv"]) if rows else None

    async def _member_ids(self, conv: str) -> set[str]:
        rows = await self._q(f'SELECT user_id FROM "{self._ks}".members WHERE conv = ?', conv)
        return {r["user_id"] for r in rows}

    async def add_members(
        self, conv: str, users: Sequence[str], role: Role = "member", *, joined_ts: int = 0
    ) -> None:
        if not users:
            return
        present = await self._member_ids(conv)
        await self._all(
            f'INSERT INTO "{self._ks}".members (conv, user_id, role, joined_ts) '
            f"VALUES (?, ?, ?, ?)",
            [(conv, u, role, joined_ts) for u in dict.fromkeys(users) if u not in present],
        )

    async def remove_members(self, conv: str, users: Sequence[str]) -> None:
        await self._all(
            f'DELETE FROM "{self._ks}".members WHERE conv = ? AND user_id = ?',
            [(conv, u) for u in dict.fromkeys(users)],
        )

    async def set_role(self, conv: str, users: Sequence[str], role: Role) -> None:
        if not users:
            return
        present = await self._member_ids(conv)
        await self._all(
            f'UPDATE "{self._ks}".members SET role = ? WHERE conv = ? AND user_id = ?',
            [(role, conv, u) for u in dict.fromkeys(users) if u in present],
        )

    # -- user-scoped rows --------------------------------------------------------------------

    async def add_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        # Sets only the membership flag: an existing entry keeps its watermarks, no read needed.
        await self._all(
            f'UPDATE "{self._ks}".user_conversations SET joined = true '
            f"WHERE user_id = ? AND conv = ?",
            [(user, c) for c in dict.fromkeys(convs)],
        )

    async def remove_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        await self._all(
            f'DELETE FROM "{self._ks}".user_conversations WHERE user_id = ? AND conv = ?',
            [(user, c) for c in dict.fromkeys(convs)],
        )

    async def user_conversations(self, user: str) -> list[UserConversation]:
        rows = await self._q(
            f'SELECT conv, joined, read_seq, delivered FROM "{self._ks}".user_conversations '
            f"WHERE user_id = ?",
            user,
        )
        return [
            UserConversation(r["conv"], r["read_seq"] or 0, dict(r["delivered"] or {}))
            for r in rows
            if r["joined"]
        ]

    async def users_conversations(self, users: Sequence[str]) -> dict[str, list[UserConversation]]:
        """One query per user (a user's list is one partition), all in flight at once."""
        wanted = list(dict.fromkeys(users))
        if not wanted:
            return {}
        rows = await self._all(
            f'SELECT conv, joined, read_seq, delivered FROM "{self._ks}".user_conversations '
            f"WHERE user_id = ?",
            [(user,) for user in wanted],
        )
        return {
            user: [
                UserConversation(r["conv"], r["read_seq"] or 0, dict(r["delivered"] or {}))
                for r in found
                if r["joined"]
            ]
            for user, found in zip(wanted, rows, strict=True)
        }

    async def advance_delivered(self, user: str, device: str, conv: str, seq: int) -> int:
        ks = self._ks
        rows = await self._q(
            f'SELECT delivered FROM "{ks}".user_conversations WHERE user_id = ? AND conv = ?',
            user,
            conv,
        )
        current = dict((rows[0]["delivered"] or {}) if rows else {}).get(device)
        if current is not None and current >= seq:
            return int(current)
        await self._q(
            f'UPDATE "{ks}".user_conversations SET delivered[?] = ? WHERE user_id = ? AND conv = ?',
            device,
            seq,
            user,
            conv,
        )
        return seq

    async def advance_read(self, user: str, conv: str, seq: int) -> int | None:
        ks = self._ks
        rows = await self._q(
            f'SELECT joined, read_seq FROM "{ks}".user_conversations '
            f"WHERE user_id = ? AND conv = ?",
            user,
            conv,
        )
        if not rows or not rows[0]["joined"]:
            return None
        current = rows[0]["read_seq"] or 0
        if current >= seq:
            return int(current)
        await self._q(
            f'UPDATE "{ks}".user_conversations SET read_seq = ? WHERE user_id = ? AND conv = ?',
            seq,
            user,
            conv,
        )
        return seq

    async def touch_user(self, user: str, last_seen_ts: int) -> None:
        await self._q(
            f'INSERT INTO "{self._ks}".users (user_id, last_seen_ts) VALUES (?, ?) '
            f"USING TIMESTAMP ?",
            user,
            last_seen_ts,
            last_seen_ts * 1000,
        )

    async def touch_users(self, seen: Mapping[str, int]) -> None:
        """One write per user, all in flight at once (each a single-partition insert; the
        write timestamp keeps the latest time)."""
        if seen:
            await self._all(
                f'INSERT INTO "{self._ks}".users (user_id, last_seen_ts) VALUES (?, ?) '
                f"USING TIMESTAMP ?",
                [(user, ts, ts * 1000) for user, ts in seen.items()],
            )

    async def last_seen(self, user: str) -> int | None:
        rows = await self._q(f'SELECT last_seen_ts FROM "{self._ks}".users WHERE user_id = ?', user)
        return int(rows[0]["last_seen_ts"]) if rows else None


def _lost_prepared(exc: BaseException) -> bool:
    """Whether ``exc`` is cassandra-driver failing to re-prepare after an UNPREPARED answer."""
    return isinstance(exc, KeyError) or (
        isinstance(exc, AttributeError) and isinstance(exc.__context__, KeyError)
    )


def _translate(exc: BaseException, url: CassandraUrl) -> StorageError:
    from cassandra import (
        OperationTimedOut,
        ReadTimeout,
        WriteTimeout,
    )
    from cassandra import (
        Unavailable as CUnavailable,
    )
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    unavailable = (
        NoHostAvailable,
        OperationTimedOut,
        CUnavailable,
        ReadTimeout,
        WriteTimeout,
        ConnectionException,
        OSError,
        TimeoutError,
    )
    if isinstance(exc, unavailable):
        return Unavailable(f"{url.redacted()}: {_short(exc)}", retry_after=1.0)
    return StorageError(f"{url.redacted()}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}"[:500]
