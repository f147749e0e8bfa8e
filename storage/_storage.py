"""The facade the chat actors use (``Storage``) and the supervisor of the shard actors.

Usage, inside an actor (or from any task on the node's loop)::

    from storage import Storage, StorageSupervisor, sqlite_shard_urls

    urls = sqlite_shard_urls(data_dir, 4)
    sup = await ctx.start_link(StorageSupervisor, urls)    # or node.start(StorageSupervisor, urls)
    storage = Storage(ctx.node, shards=len(urls))
    results = await storage.append_messages([message])    # -> list[AppendResult]
    page = await storage.messages_after(conv, 0, 100)

In a bigger tree, use ``storage_child_spec(urls)`` as the ``storage`` child of the root.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import anyio

from actors import CallError, CallTimeoutError, Node, NoProcError, Ref
from supervisors import Backoff, ChildSpec, Restart, Strategy, Supervisor, SupervisorFlags

from ._backend import Backend
from ._errors import Unavailable
from ._records import AppendResult, Conversation, Message, Role, UserConversation, direct_key
from ._ring import DEFAULT_VNODES, HashRing
from ._shard_actor import Failure, ShardOptions, StorageShard, shard_name

__all__ = [
    "DEFAULT_STORAGE_TIMEOUT",
    "SHARD_BACKOFF",
    "Storage",
    "StorageSupervisor",
    "storage_child_spec",
]

_NO_KWARGS: Final[Mapping[str, Any]] = MappingProxyType({})
#: Seconds a storage call waits for its shard actor's reply by default.
DEFAULT_STORAGE_TIMEOUT: Final = 10.0
#: Restart backoff of a shard actor: 0.1 s doubling to 10 s, with jitter.
SHARD_BACKOFF: Final = Backoff(min=0.1, max=10.0)


class Storage:
    """The storage API of ``Backend``, served by the shard actors of one node.

    Args:
        node: the node the shard actors run on (registered as ``storage.shard.{i}``).
        shards: how many shards (a ``HashRing`` over ``0..shards-1`` with ``vnodes`` points
            each routes keys), or a ``HashRing`` to use as is.
        timeout: seconds each call waits for its shard's reply (default 10; a commit waits
            for its batch); None waits without limit. The caller's cancel scopes apply too.
            For appends the shard actor keeps the deadline, counted from when it takes the
            call (one timer per shard rather than one per call).
        prefix: the shard actors' registered name prefix.

    Conversation-scoped calls route by conversation id, user-scoped ones by user id,
    ``find_direct(a, b)`` by ``direct_key(a, b)``, as ``ShardedStorage`` does. Every method is
    async and checkpoints; it returns what the ``Backend`` method of the same name returns.

    Raises (from every method):
        Unavailable: the shard's database is down (circuit breaker open), its queue is full, its
            actor is restarting or died during the call, or no reply came within ``timeout``.
            A write that failed this way may or may not be committed: retry it (appends are
            idempotent by ``(conv, sender, cmid)``, watermarks by ``max``). ``retry_after`` is a
            hint in seconds.
        StorageError: the database rejected the call (``SeqConflict``, ...), as the backend
            raises it; ``ValueError`` for a malformed request (e.g. a batch spanning
            conversations).
    """

    __slots__ = ("_gathering", "_in_flight", "_names", "_refs", "node", "ring", "timeout")

    def __init__(
        self,
        node: Node,
        shards: int | HashRing,
        *,
        vnodes: int = DEFAULT_VNODES,
        timeout: float | None = DEFAULT_STORAGE_TIMEOUT,
        prefix: str = "storage.shard",
    ) -> None:
        self.node = node
        self.ring = shards if isinstance(shards, HashRing) else HashRing(shards, vnodes=vnodes)
        self.timeout = timeout
        self._names = {i: shard_name(i, prefix) for i in self.ring.shards}
        self._refs: dict[int, Ref] = {}  # resolved shard actors, looked up again once dead
        # user_conversations batching, per shard: the batch being gathered, the one in flight
        self._gathering: dict[int, _ListBatch] = {}
        self._in_flight: dict[int, _ListBatch] = {}

    def shard_ref(self, key: str) -> Ref | None:
        """The actor of the shard owning ``key`` right now (None while it restarts)."""
        return self.node.whereis(self._names[self.ring.shard_for(key)])

    def _resolve(self, index: int) -> Ref:
        ref = self._refs.get(index)
        if ref is None or not ref.alive:
            name = self._names[index]
            ref = self.node.whereis(name)
            if ref is None:
                self._refs.pop(index, None)
                raise Unavailable(f"storage shard {index} ({name}) is not running", retry_after=0.1)
            self._refs[index] = ref
        return ref

    def _unavailable(self, index: int, op: str, exc: Exception) -> Unavailable:
        if isinstance(exc, CallTimeoutError):
            return Unavailable(
                f"storage shard {index} did not answer {op} within {self.timeout} s",
                retry_after=0.1,
            )
        return Unavailable(f"storage shard {index} exited during {op}: {exc}", retry_after=0.1)

    async def _call(
        self, key: str, op: str, args: tuple[Any, ...], kwargs: Mapping[str, Any] = _NO_KWARGS
    ) -> Any:
        index = self.ring.shard_for(key)
        ref = self._resolve(index)
        try:
            reply = await ref.call((op, args, kwargs), timeout=self.timeout)
        except (CallTimeoutError, NoProcError, CallError) as exc:
            raise self._unavailable(index, op, exc) from exc
        if type(reply) is Failure:
            raise reply.error
        return reply

    # -- messages (conversation's shard) -----------------------------------------------------

    async def append_messages(self, batch: Sequence[Message]) -> list[AppendResult]:
        """Append ``batch`` (all of one conversation) in the shard's next group commit.

        Returns one ``AppendResult`` per message, in order, once they are committed. Raises
        ``ValueError`` if the batch spans conversations; ``[]`` for an empty batch.
        """
        if not batch:
            return []
        conv = batch[0].conv
        if len(batch) > 1:
            for m in batch:
                if m.conv != conv:
                    raise ValueError(
                        "a batch must hold one conversation's messages, got "
                        f"{conv!r} and {m.conv!r}"
                    )
        # The hot path of a chat node: _call inlined (one coroutine less per message), and the
        # shard keeps the deadline (one timer for all its writers instead of one per call).
        index = self.ring.shard_for(conv)
        ref = self._resolve(index)
        request = ("append_messages", (tuple(batch), self.timeout), _NO_KWARGS)
        try:
            reply = await ref.call(request, timeout=None)
        except (CallTimeoutError, NoProcError, CallError) as exc:
            raise self._unavailable(index, "append_messages", exc) from exc
        if type(reply) is Failure:
            raise reply.error
        result: list[AppendResult] = reply
        return result

    async def messages_after(self, conv: str, after_seq: int, limit: int) -> list[Message]:
        """Up to ``limit`` messages with ``seq > after_seq``, ascending by seq."""
        result: list[Message] = await self._call(conv, "messages_after", (conv, after_seq, limit))
        return result

    async def messages_before(
        self,
        conv: str,
        before_seq: int | None,
        limit: int,
    ) -> tuple[list[Message], bool]:
        """The ``limit`` messages just below ``before_seq`` (None: the newest), ascending, and
        whether older ones exist."""
        result: tuple[list[Message], bool] = await self._call(
            conv, "messages_before", (conv, before_seq, limit)
        )
        return result

    async def last_seq(self, conv: str) -> int:
        """The highest stored seq of ``conv``, 0 when it has no messages."""
        result: int = await self._call(conv, "last_seq", (conv,))
        return result

    async def find_messages(
        self, conv: str, keys: Sequence[tuple[str, str]]
    ) -> list[Message] | None:
        """The stored messages of ``conv`` with these ``(sender, cmid)`` keys (any order);
        None when the backend cannot look them up."""
        result: list[Message] | None = await self._call(conv, "find_messages", (conv, tuple(keys)))
        return result

    # -- conversations (conversation's shard) ------------------------------------------------

    async def create_conversation(self, conv: Conversation) -> Conversation:
        """Create ``conv`` (idempotent); returns what is stored. See ``Backend``."""
        result: Conversation = await self._call(conv.conv, "create_conversation", (conv,))
        return result

    async def get_conversation(self, conv: str) -> Conversation | None:
        """The conversation with members, admins and ``last_seq``; None when unknown."""
        result: Conversation | None = await self._call(conv, "get_conversation", (conv,))
        return result

    async def find_direct(self, user_a: str, user_b: str) -> Conversation | None:
        """The pair's direct conversation (routed by ``direct_key(a, b)``), None when none."""
        result: Conversation | None = await self._call(
            direct_key(user_a, user_b), "find_direct", (user_a, user_b)
        )
        return result

    async def add_members(
        self,
        conv: str,
        users: Sequence[str],
        role: Role = "member",
        *,
        joined_ts: int = 0,
    ) -> None:
        """Add users (``joined_ts`` in ms); existing members keep their role and join time."""
        await self._call(conv, "add_members", (conv, tuple(users), role), {"joined_ts": joined_ts})

    async def remove_members(self, conv: str, users: Sequence[str]) -> None:
        """Remove users from the conversation; unknown users are ignored."""
        await self._call(conv, "remove_members", (conv, tuple(users)))

    async def set_role(
        self,
        conv: str,
        users: Sequence[str],
        role: Role,
    ) -> None:
        """Set the role of users who are members; others are ignored."""
        await self._call(conv, "set_role", (conv, tuple(users), role))

    # -- user-scoped rows (user's shard) -----------------------------------------------------

    async def add_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        """Put conversations in the user's list (watermarks 0); existing entries are kept."""
        await self._call(user, "add_user_conversations", (user, tuple(convs)))

    async def remove_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        """Drop conversations, and their watermarks, from the user's list."""
        await self._call(user, "remove_user_conversations", (user, tuple(convs)))

    async def user_conversations(self, user: str) -> list[UserConversation]:
        """The user's conversations with read and per-device delivered watermarks.

        Concurrent calls for users of one shard are read together: while one batch is in
        flight, the calls arriving meanwhile gather into the next, which goes as one
        ``users_conversations`` call when the first is answered (a burst of connections
        costs a few shard round trips, not one each). The task that opened a batch sends it
        shielded from cancellation (the call's own timeout bounds it), since the others wait
        on it; a cancelled follower just stops waiting.
        """
        index = self.ring.shard_for(user)
        batch = self._gathering.get(index)
        if batch is not None:
            batch.users.add(user)
            await batch.done.wait()
            return batch.outcome(user)
        batch = self._gathering[index] = _ListBatch({user})
        with anyio.CancelScope(shield=True):
            ahead = self._in_flight.get(index)
            if ahead is not None:
                await ahead.done.wait()
            del self._gathering[index]
            self._in_flight[index] = batch
            try:
                batch.lists = await self._call(
                    user, "users_conversations", (tuple(sorted(batch.users)),)
                )
            except Exception as exc:
                batch.error = exc
            finally:
                del self._in_flight[index]
                batch.done.set()
        return batch.outcome(user)

    async def users_conversations(self, users: Sequence[str]) -> dict[str, list[UserConversation]]:
        """``user_conversations`` of many users: user → list, one call per shard they live on."""
        by_shard: dict[int, list[str]] = {}
        for user in users:
            by_shard.setdefault(self.ring.shard_for(user), []).append(user)
        lists: dict[str, list[UserConversation]] = {}
        for group in by_shard.values():
            lists.update(await self._call(group[0], "users_conversations", (tuple(group),)))
        return lists

    async def advance_delivered(
        self,
        user: str,
        device: str,
        conv: str,
        seq: int,
    ) -> int:
        """Move the device's delivered watermark up to ``seq``; returns the watermark after."""
        result: int = await self._call(user, "advance_delivered", (user, device, conv, seq))
        return result

    async def advance_read(self, user: str, conv: str, seq: int) -> int | None:
        """Move the read watermark up to ``seq``; the watermark after, None if not listed."""
        result: int | None = await self._call(user, "advance_read", (user, conv, seq))
        return result

    async def touch_user(self, user: str, last_seen_ts: int) -> None:
        """Record that the user was seen at ``last_seen_ts`` (ms); older times are ignored."""
        await self._call(user, "touch_user", (user, last_seen_ts))

    async def touch_users(self, seen: Mapping[str, int]) -> None:
        """Record many users' last-seen times (user → ms), one call per shard they live on;
        older times are ignored. Every shard is tried; the first error is raised after."""
        by_shard: dict[int, dict[str, int]] = {}
        for user, ts in seen.items():
            by_shard.setdefault(self.ring.shard_for(user), {})[user] = ts
        error: Exception | None = None
        for group in by_shard.values():
            try:
                await self._call(next(iter(group)), "touch_users", (group,))
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    async def last_seen(self, user: str) -> int | None:
        """The user's last-seen time in ms, None if never seen."""
        result: int | None = await self._call(user, "last_seen", (user,))
        return result

    def __repr__(self) -> str:
        return f"Storage(shards={len(self.ring.shards)}, timeout={self.timeout})"


class _ListBatch:
    """Users whose conversation lists are read in one call, and the outcome."""

    __slots__ = ("done", "error", "lists", "users")

    def __init__(self, users: set[str]) -> None:
        self.users = users
        self.done = anyio.Event()
        self.lists: dict[str, list[UserConversation]] = {}
        self.error: Exception | None = None

    def outcome(self, user: str) -> list[UserConversation]:
        if self.error is not None:
            raise self.error
        return self.lists[user]


class StorageSupervisor(Supervisor):
    """A one_for_one supervisor of one :class:`StorageShard` per URL, with backoff restarts.

    Start it with ``await ctx.start_link(StorageSupervisor, urls)`` or
    ``(StorageSupervisor, urls, options)`` with a :class:`ShardOptions`; shard ``i`` serves
    ``urls[i]`` and registers as ``storage.shard.{i}``. Each shard restarts after
    :data:`SHARD_BACKOFF` (0.1 s doubling to 10 s); the intensity is 20 restarts in 60 s (the
    backoff spaces restarts, so OTP's 1 in 5 s would be too tight). The start fails with
    ``SpawnError`` if a shard's database is unreachable then; a running shard whose database
    goes away does not crash (its circuit breaker fails calls fast) and a shard that crashes is
    restarted after its backoff.
    """

    def configure(self, *args: Any) -> tuple[SupervisorFlags, Sequence[ChildSpec]]:
        if not 1 <= len(args) <= 2:
            raise TypeError("StorageSupervisor takes (urls) or (urls, ShardOptions)")
        urls: Sequence[str | Callable[[], Backend]] = args[0]
        options: ShardOptions = args[1] if len(args) == 2 else ShardOptions()
        if not urls:
            raise ValueError("StorageSupervisor needs at least one shard URL")
        flags = SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=20, period=60.0)
        specs = [
            ChildSpec(
                id=shard_name(i, options.name_prefix),
                start=StorageShard,
                args=(i, url, options),
                restart=Restart.PERMANENT,
                backoff=SHARD_BACKOFF,
            )
            for i, url in enumerate(urls)
        ]
        return flags, specs


def storage_child_spec(
    urls: Sequence[str], options: ShardOptions | None = None, *, id: str = "storage"
) -> ChildSpec:
    """The ``storage`` child of a node's root supervisor: a :class:`StorageSupervisor` over
    ``urls``."""
    return ChildSpec(id=id, start=StorageSupervisor, args=(list(urls), options or ShardOptions()))
