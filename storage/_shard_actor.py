"""The storage actor of one shard: group commit, a read pool, a bounded queue, a circuit breaker.

One ``StorageShard`` owns one shard's :class:`Backend`. It is a plain ``Actor`` that never waits
on the database itself: it hands work to helper function actors it spawns and links at start,

* one **committer**, which hands ``append_messages`` transactions to the backend, up to
  ``pipeline`` (2) at once. Appends arriving while the transactions are in flight wait in the
  shard's queue and go together into the next one (up to ``max_batch`` messages): group
  commit. With two in flight the next batch is already at the database when one commits (the
  SQLite writer runs them in order; PostgreSQL on two connections), instead of waiting for
  the answer to travel back and the next batch to be made. Each writer is answered only after
  the transaction holding its messages has committed (or failed). A conversation actor has
  one append in flight at a time, so two batches never hold two of its messages.
* ``readers`` **workers** (default 8), which run every other call (reads, membership and
  watermark writes) concurrently; they never wait behind the write queue.

The shard answers ``call`` s with ``NOREPLY`` and replies later through ``From.reply``; an error
is replied as a :class:`Failure`, which :class:`storage.Storage` raises in the caller, so a
database error never crashes the actor. Beyond ``max_queue`` messages waiting or in flight,
appends fail at once with ``Unavailable``. After ``breaker_threshold`` consecutive ``Unavailable``
failures the circuit breaker opens: every call fails fast with ``Unavailable(retry_after)`` for a
cool-down (``breaker_cooldown`` s, doubling after each failed probe up to ``breaker_max_cooldown``);
then one ``ping`` probes the database (half-open) and its success closes the breaker.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import anyio
import structlog

from actors import NOREPLY, Actor, Context, Exit, From, Ref

from ._backend import Backend
from ._errors import StorageError, Unavailable
from ._failpoints import STORAGE_AFTER_COMMIT, STORAGE_AFTER_REPLY, Failpoints
from ._records import AppendResult, Message
from ._sharded import backend_from_url

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_QUEUE",
    "READ_OPS",
    "WRITE_OPS",
    "BreakerState",
    "Failure",
    "ShardOptions",
    "StorageShard",
    "shard_name",
]

log = structlog.get_logger("storage")

DEFAULT_MAX_BATCH: Final = 500  # messages per group-commit transaction
DEFAULT_MAX_QUEUE: Final = 10_000  # messages waiting or in flight before appends are refused
DEFAULT_READERS: Final = 8  # concurrent non-append calls
DEFAULT_PIPELINE: Final = 2  # append transactions in flight at once
_LATENCY_SAMPLES: Final = 512

#: Calls the worker pool runs (everything but ``append_messages``, which is group-committed).
READ_OPS: Final = frozenset(
    {
        "messages_after",
        "messages_before",
        "last_seq",
        "find_messages",
        "get_conversation",
        "find_direct",
        "user_conversations",
        "users_conversations",
        "last_seen",
    }
)
WRITE_OPS: Final = frozenset(
    {
        "create_conversation",
        "add_members",
        "remove_members",
        "set_role",
        "add_user_conversations",
        "remove_user_conversations",
        "advance_delivered",
        "advance_read",
        "touch_user",
        "touch_users",
    }
)
_POOL_OPS: Final = READ_OPS | WRITE_OPS

BreakerState = Literal["closed", "open", "half_open"]


def shard_name(index: int, prefix: str = "storage.shard") -> str:
    """The registered name of shard ``index``'s actor, e.g. ``"storage.shard.0"``."""
    return f"{prefix}.{index}"


@dataclass(frozen=True, slots=True)
class Failure:
    """A call's error, replied instead of a value; the facade raises ``error`` in the caller."""

    error: BaseException


# -- messages between the shard and its helpers -----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Commit:
    number: int  # the shard's count of batches, naming this one in its _Committed
    batch: tuple[tuple[Message, ...], ...]  # one tuple of messages per writer


@dataclass(frozen=True, slots=True)
class _Committed:
    number: int
    outcomes: tuple[list[AppendResult] | BaseException, ...]  # one per writer, in order
    seconds: float
    ok: bool  # the database answered (False: Unavailable)


@dataclass(frozen=True, slots=True)
class _Started:
    pass  # the committer has handed its transaction to the backend


_STARTED: Final = _Started()


@dataclass(frozen=True, slots=True)
class _Ping:
    pass


@dataclass(frozen=True, slots=True)
class _Pinged:
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class _Job:
    op: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    from_: From


@dataclass(frozen=True, slots=True)
class _JobDone:
    worker: Ref
    unavailable: bool  # the job failed with Unavailable (counts toward the breaker)


@dataclass(frozen=True, slots=True)
class _ProbeDue:
    generation: int


@dataclass(frozen=True, slots=True)
class _DeadlineDue:
    generation: int


async def _close_quietly(backend: Backend) -> None:
    with anyio.move_on_after(10, shield=True):
        try:
            await backend.aclose()
        except Exception:
            log.exception("storage_close_failed", backend=repr(backend))


async def _committer(ctx: Context, backend: Backend, shard: Ref) -> None:
    """Run the shard's transactions, each in a task of its own (the shard bounds how many are
    in flight); close the backend when the shard exits."""
    ctx.trap_exit = True
    now = ctx.node.now

    async def commit(message: _Commit) -> None:
        started = now()
        # The shard sees this only once we wait inside the backend call, by when the
        # transaction is on its way (written to the SQLite writer's pipe, or submitted to the
        # bridge): it answers the previous batch's writers then.
        shard.send(_STARTED)
        outcomes, ok = await _commit(backend, message.batch)
        shard.send(_Committed(message.number, outcomes, now() - started, ok))

    try:
        async with anyio.create_task_group() as tasks:
            while True:
                message = await ctx.receive()
                if type(message) is _Commit:
                    tasks.start_soon(commit, message)
                elif type(message) is _Ping:
                    try:
                        await backend.ping()
                    except Exception as exc:
                        shard.send(_Pinged(exc))
                    else:
                        shard.send(_Pinged(None))
                elif type(message) is Exit and message.ref == shard:
                    tasks.cancel_scope.cancel()  # the shard told their writers Unavailable
                    return
    finally:
        await _close_quietly(backend)


async def _commit(
    backend: Backend, batch: tuple[tuple[Message, ...], ...]
) -> tuple[tuple[list[AppendResult] | BaseException, ...], bool]:
    """One transaction for the whole batch; split back into one outcome per writer.

    If the database rejects the batch for a reason that is one writer's (a ``SeqConflict``, a
    bad message), each writer's messages are retried in a transaction of their own, so only the
    faulty writer gets the error.
    """
    flat = [m for part in batch for m in part]
    try:
        results = await backend.append_messages(flat)
    except Unavailable as exc:
        return tuple(exc for _ in batch), False
    except Exception as exc:
        if len(batch) == 1:
            return (exc,), True
        outcomes: list[list[AppendResult] | BaseException] = []
        for part in batch:
            try:
                outcomes.append(await backend.append_messages(part))
            except Unavailable as unavailable:
                outcomes.append(unavailable)
                return tuple(outcomes) + tuple(unavailable for _ in batch[len(outcomes) :]), False
            except Exception as single:
                outcomes.append(single)
        return tuple(outcomes), True
    split: list[list[AppendResult] | BaseException] = []
    i = 0
    for part in batch:
        split.append(results[i : i + len(part)])
        i += len(part)
    return tuple(split), True


async def _worker(ctx: Context, backend: Backend, shard: Ref) -> None:
    """Run pool jobs one at a time, answering each caller directly."""
    while True:
        job = await ctx.receive()
        if type(job) is not _Job:
            continue
        unavailable = False
        try:
            value = await getattr(backend, job.op)(*job.args, **job.kwargs)
        except Exception as exc:
            unavailable = isinstance(exc, Unavailable)
            job.from_.reply(Failure(exc))
        else:
            job.from_.reply(value)
        shard.send(_JobDone(ctx.ref, unavailable))


class _Writer:
    __slots__ = ("deadline", "from_", "messages", "timeout")

    def __init__(
        self, messages: tuple[Message, ...], from_: From, deadline: float, timeout: float | None
    ) -> None:
        self.messages = messages
        self.from_ = from_
        self.deadline = deadline  # loop time; math.inf without a timeout
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class ShardOptions:
    """How a :class:`StorageShard` batches, queues and protects its database.

    ``max_batch``: most messages in one group-commit transaction (500). ``max_queue``: most
    messages waiting or in flight, and most non-append calls waiting for a reader; beyond it
    calls fail at once with ``Unavailable`` (10,000). ``readers``: non-append calls run
    concurrently (8). ``pipeline``: append transactions in flight at once (2; 1 waits for each
    commit before the next batch is made). ``breaker_threshold``: consecutive ``Unavailable``
    failures that open the circuit breaker (3). ``breaker_cooldown``: seconds it stays open
    before the first probe (1.0); each failed probe doubles it, up to ``breaker_max_cooldown``
    (30.0).
    ``name_prefix``: the actor registers as ``f"{name_prefix}.{index}"``. ``failpoints``: the
    node's :class:`storage.Failpoints` (``storage.after_commit``, ``storage.after_reply``), for
    chaos tests; None (the default) has none.

    Raises ``ValueError`` for a count below 1 or cool-downs out of order.
    """

    max_batch: int = DEFAULT_MAX_BATCH
    max_queue: int = DEFAULT_MAX_QUEUE
    readers: int = DEFAULT_READERS
    breaker_threshold: int = 3
    breaker_cooldown: float = 1.0
    breaker_max_cooldown: float = 30.0
    name_prefix: str = "storage.shard"
    pipeline: int = DEFAULT_PIPELINE
    failpoints: Failpoints | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for field in ("max_batch", "max_queue", "readers", "breaker_threshold", "pipeline"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)!r}")
        if not 0 < self.breaker_cooldown <= self.breaker_max_cooldown:
            raise ValueError(
                "need 0 < breaker_cooldown <= breaker_max_cooldown, got "
                f"{self.breaker_cooldown!r} and {self.breaker_max_cooldown!r}"
            )


class StorageShard(Actor):
    """The storage actor of one shard: ``start_link(StorageShard, index, url[, options])``.

    Args (of ``init``):
        index: the shard's index; the actor registers as ``shard_name(index, prefix)``.
        url: the shard's backend URL (see ``storage.parse_url``), or a function returning a
            new unopened ``Backend`` (called at each start; the actor opens the backend, and
            closes it when it exits).
        options: a :class:`ShardOptions` (default ``ShardOptions()``).

    ``init`` opens the backend: an unreachable database makes the start fail with
    ``SpawnError`` whose reason is the ``Unavailable`` naming what was tried (a supervisor with
    backoff retries it). Requests are ``(op, args, kwargs)`` tuples naming a ``Backend`` method;
    :class:`storage.Storage` builds them. An append's args are ``(messages,)`` or
    ``(messages, timeout)``: with a timeout (seconds, or None) the shard itself answers
    ``Unavailable`` if the messages are not committed that long after it took them, with one
    timer for all its writers, so the caller's ``call`` needs none of its own.
    """

    mailbox_size = 100_000

    backend: Backend
    _committer: Ref
    _workers: list[Ref]

    async def init(
        self, index: int, url: str | Callable[[], Backend], options: ShardOptions | None = None
    ) -> None:
        options = options or ShardOptions()
        self.index = index
        self.options = options
        self.max_batch = options.max_batch
        self.max_queue = options.max_queue
        self.pipeline = options.pipeline
        self.breaker_threshold = options.breaker_threshold
        self.breaker_cooldown = options.breaker_cooldown
        self.breaker_max_cooldown = options.breaker_max_cooldown
        self._failpoints = options.failpoints
        readers = options.readers
        name_prefix = options.name_prefix
        backend = backend_from_url(url) if isinstance(url, str) else url()
        try:
            await backend.open()
        except BaseException:
            await _close_quietly(backend)
            raise
        self.backend = backend
        ctx = self.ctx
        ctx.trap_exit = True
        ctx.register(shard_name(index, name_prefix))
        self._committer = ctx.spawn_link(_committer, backend, self.ref)
        self._workers = [ctx.spawn_link(_worker, backend, self.ref) for _ in range(readers)]
        self._helpers = {self._committer.pid, *(w.pid for w in self._workers)}
        self._idle: list[Ref] = list(self._workers)
        self._jobs: deque[_Job] = deque()
        # group commit
        self._pending: deque[_Writer] = deque()
        self._pending_msgs = 0
        # batches handed to the committer and not answered yet, by number, oldest first
        self._in_flight: dict[int, tuple[_Writer, ...]] = {}
        self._in_flight_msgs = 0
        self._batches = 0
        # a committed batch whose writers are answered when the next transaction has started
        self._answering: tuple[tuple[_Writer, ...], tuple[Any, ...]] | None = None
        self._probing = False
        # appends' deadlines: one timer, armed for the earliest
        self._deadline_at = math.inf
        self._deadline_generation = 0
        # breaker
        self._breaker: BreakerState = "closed"
        self._failures = 0
        self._cooldown = self.breaker_cooldown
        self._open_until = 0.0
        self._generation = 0
        # statistics
        self._commits = 0
        self._committed_msgs = 0
        self._failed_commits = 0
        self._last_batch = 0
        self._max_batch_seen = 0
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._rejected = 0

    # -- calls ------------------------------------------------------------------------------

    def handle_call(self, request: Any, from_: From) -> Any:
        op, args, kwargs = request
        if self._breaker != "closed":
            self._rejected += 1
            return Failure(self._refusal())
        if op == "append_messages":
            messages = tuple(args[0])
            count = len(messages)
            if not count:
                return []
            queued = self._pending_msgs + self._in_flight_msgs
            if queued + count > self.max_queue:
                self._rejected += 1
                return Failure(
                    Unavailable(
                        f"storage shard {self.index} is overloaded: {queued} messages queued",
                        retry_after=self._drain_estimate(),
                    )
                )
            timeout = args[1] if len(args) > 1 else None
            if timeout is None:
                deadline = math.inf
            else:
                deadline = self.ctx.node.now() + timeout
                if deadline < self._deadline_at:
                    self._arm_deadline(deadline)
            self._pending.append(_Writer(messages, from_, deadline, timeout))
            self._pending_msgs += count
            if len(self._in_flight) < self.pipeline:
                self._dispatch_commit()
            return NOREPLY
        if op == "ping":
            return None
        if op not in _POOL_OPS:
            return Failure(StorageError(f"unknown storage operation {op!r}"))
        job = _Job(op, tuple(args), kwargs, from_)
        if self._idle:
            self._idle.pop().send(job)
        elif len(self._jobs) >= self.max_queue:
            self._rejected += 1
            return Failure(
                Unavailable(
                    f"storage shard {self.index} is overloaded: {len(self._jobs)} calls queued",
                    retry_after=0.1,
                )
            )
        else:
            self._jobs.append(job)
        return NOREPLY

    def _refusal(self) -> Unavailable:
        wait = max(0.0, self._open_until - self.ctx.node.now())
        if self._breaker == "half_open":
            wait = max(wait, 0.05)
        return Unavailable(
            f"storage shard {self.index} is unavailable (circuit breaker {self._breaker} after "
            f"{self._failures} consecutive failures)",
            retry_after=round(wait, 3) or 0.05,
        )

    def _drain_estimate(self) -> float:
        queued = self._pending_msgs + self._in_flight_msgs
        if not self._latencies:
            return 0.1
        per_batch = sum(self._latencies) / len(self._latencies)
        return round(max(0.01, math.ceil(queued / self.max_batch) * per_batch), 3)

    # -- group commit -------------------------------------------------------------------------

    def _dispatch_commit(self) -> None:
        taken: list[_Writer] = []
        count = 0
        pending = self._pending
        while pending and (not taken or count + len(pending[0].messages) <= self.max_batch):
            writer = pending.popleft()
            taken.append(writer)
            count += len(writer.messages)
        self._pending_msgs -= count
        self._batches += 1
        self._in_flight[self._batches] = tuple(taken)
        self._in_flight_msgs += count
        self._committer.send(_Commit(self._batches, tuple(w.messages for w in taken)))

    def _on_committed(self, done: _Committed) -> None:
        failpoints = self._failpoints
        if failpoints is not None and done.ok:
            # Crashing here leaves the batch in flight: terminate() tells its writers
            # Unavailable, though their messages are committed.
            failpoints.fire(STORAGE_AFTER_COMMIT)
        writers = self._in_flight.pop(done.number)
        count = sum(len(w.messages) for w in writers)
        self._in_flight_msgs -= count
        if done.ok:
            self._commits += 1
            self._committed_msgs += count
            self._last_batch = count
            self._max_batch_seen = max(self._max_batch_seen, count)
            self._latencies.append(done.seconds)
            self._succeeded()
        else:
            self._failed_commits += 1
            self._failed()
        if self._pending and self._breaker == "closed" and len(self._in_flight) < self.pipeline:
            # Start the next transaction first, and answer these writers once it is on its way
            # (_Started): woken now, their next calls would run before the committer does.
            self._on_started()  # (an earlier batch's writers, if still waiting for that)
            self._answering = (writers, done.outcomes)
            self._dispatch_commit()
        else:
            self._answer(writers, done.outcomes)

    def _answer(
        self,
        writers: tuple[_Writer, ...],
        outcomes: tuple[list[AppendResult] | BaseException, ...],
        *,
        failpoint: bool = True,
    ) -> None:
        committed = False
        for writer, outcome in zip(writers, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                writer.from_.reply(Failure(outcome))
            else:
                writer.from_.reply(outcome)
                committed = True
        if committed and failpoint and self._failpoints is not None:
            self._failpoints.fire(STORAGE_AFTER_REPLY)  # the writers have their answers

    def _on_started(self, *, failpoint: bool = True) -> None:
        answering, self._answering = self._answering, None
        if answering is not None:
            self._answer(*answering, failpoint=failpoint)

    # -- deadlines ------------------------------------------------------------------------------

    def _arm_deadline(self, deadline: float) -> None:
        self._deadline_at = deadline
        self._deadline_generation += 1
        delay = max(0.0, deadline - self.ctx.node.now())
        self.ctx.send_after(delay, self.ref, _DeadlineDue(self._deadline_generation))

    def _on_deadline_due(self, due: _DeadlineDue) -> None:
        """Answer ``Unavailable`` to the writers past their deadline; re-arm for the next one.

        Writers still waiting are dropped from the queue; those in flight stay in their
        transaction (which may still commit) and their late outcome is ignored.
        """
        if due.generation != self._deadline_generation:
            return
        self._deadline_at = math.inf
        now = self.ctx.node.now()
        late = [w for w in self._pending if w.deadline <= now]
        if late:
            self._pending = deque(w for w in self._pending if w.deadline > now)
            self._pending_msgs -= sum(len(w.messages) for w in late)
        late.extend(w for b in self._in_flight.values() for w in b if w.deadline <= now)
        for writer in late:
            writer.from_.reply(
                Failure(
                    Unavailable(
                        f"storage shard {self.index} did not answer append_messages within "
                        f"{writer.timeout} s",
                        retry_after=0.1,
                    )
                )
            )
        in_flight = [w for b in self._in_flight.values() for w in b]
        waiting = [w.deadline for w in (*in_flight, *self._pending) if not w.from_.done]
        if waiting:
            self._arm_deadline(min(waiting))

    # -- circuit breaker ----------------------------------------------------------------------

    def _succeeded(self) -> None:
        self._failures = 0

    def _failed(self) -> None:
        self._failures += 1
        if self._breaker == "closed" and self._failures >= self.breaker_threshold:
            self._open(self.breaker_cooldown)

    def _open(self, cooldown: float) -> None:
        self._breaker = "open"
        self._cooldown = cooldown
        self._open_until = self.ctx.node.now() + cooldown
        self._generation += 1
        self.ctx.send_after(cooldown, self.ref, _ProbeDue(self._generation))
        log.warning(
            "storage_breaker_open",
            shard=self.index,
            failures=self._failures,
            cooldown_s=cooldown,
        )
        error = Unavailable(
            f"storage shard {self.index} is unavailable (circuit breaker opened after "
            f"{self._failures} consecutive failures)",
            retry_after=cooldown,
        )
        while self._pending:
            self._pending.popleft().from_.reply(Failure(error))
        self._pending_msgs = 0
        while self._jobs:
            self._jobs.popleft().from_.reply(Failure(error))

    def _on_probe_due(self, due: _ProbeDue) -> None:
        if due.generation != self._generation or self._breaker != "open":
            return
        self._breaker = "half_open"
        self._probing = True
        self._committer.send(_Ping())

    def _on_pinged(self, pinged: _Pinged) -> None:
        self._probing = False
        if self._breaker != "half_open":
            return
        if pinged.error is None:
            self._breaker = "closed"
            self._failures = 0
            self._cooldown = self.breaker_cooldown
            log.info("storage_breaker_closed", shard=self.index)
        else:
            self._open(min(self.breaker_max_cooldown, self._cooldown * 2))

    # -- messages -----------------------------------------------------------------------------

    def handle_info(self, message: Any) -> None:
        kind = type(message)
        if kind is _Committed:
            self._on_committed(message)
        elif kind is _Started:
            self._on_started()
        elif kind is _JobDone:
            if message.unavailable:
                self._failed()
            else:
                self._succeeded()
            if self._jobs:
                message.worker.send(self._jobs.popleft())
            else:
                self._idle.append(message.worker)
        elif kind is _Pinged:
            self._on_pinged(message)
        elif kind is _ProbeDue:
            self._on_probe_due(message)
        elif kind is _DeadlineDue:
            self._on_deadline_due(message)
        elif kind is Exit:
            # A helper died (a bug, or killed) or our parent told us to exit: stop with it.
            self.stop(message.reason)
        else:
            log.warning("storage_unexpected_info", shard=self.index, message=repr(message)[:200])

    def terminate(self, reason: object) -> None:
        self._on_started(failpoint=False)  # a committed batch not answered yet: it stands
        error = Unavailable(f"storage shard {self.index} stopped ({reason!r})", retry_after=0.1)
        for writer in (*(w for b in self._in_flight.values() for w in b), *self._pending):
            writer.from_.reply(Failure(error))
        self._in_flight.clear()
        self._pending.clear()
        while self._jobs:
            self._jobs.popleft().from_.reply(Failure(error))
        # Workers die with us (linked); the committer closes the backend when it sees our exit.

    def format_status(self) -> dict[str, Any]:
        latencies = sorted(self._latencies)
        return {
            "shard": self.index,
            "backend": self.backend.name,
            "breaker": self._breaker,
            "consecutive_failures": self._failures,
            "cooldown_s": self._cooldown,
            "queued_messages": self._pending_msgs,
            "queued_writers": len(self._pending),
            "in_flight_messages": self._in_flight_msgs,
            "in_flight_batches": len(self._in_flight),
            "queued_calls": len(self._jobs),
            "busy_readers": len(self._workers) - len(self._idle),
            "commits": self._commits,
            "committed_messages": self._committed_msgs,
            "failed_commits": self._failed_commits,
            "rejected_calls": self._rejected,
            "last_batch": self._last_batch,
            "max_batch": self._max_batch_seen,
            "mean_batch": round(self._committed_msgs / self._commits, 1) if self._commits else 0,
            "commit_p50_ms": _ms(_quantile(latencies, 0.5)),
            "commit_p99_ms": _ms(_quantile(latencies, 0.99)),
        }

    def statistics(self) -> dict[str, Any]:
        """Same as ``format_status()`` (for tests and benchmarks reading the actor's state)."""
        return self.format_status()


def _quantile(sorted_samples: Sequence[float], q: float) -> float | None:
    if not sorted_samples:
        return None
    return sorted_samples[min(len(sorted_samples) - 1, int(q * len(sorted_samples)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
