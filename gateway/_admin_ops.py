"""What the admin endpoint's ops read and do on a running node (tree, info, stats, top, and the
destructive kill/restart/suspend/resume).

Reads take a consistent snapshot by walking the runtime's and the supervisors' bookkeeping
directly (every actor shares the one event loop; nothing is sent to them). Results are plain
JSON-ready dicts; refs are pids. Errors raise :class:`AdminRequestError` with the reply's code.
"""

from __future__ import annotations

import heapq
import importlib
import math
import os
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.lowlevel

from actors import KILL, Context, Node, NoProcError, Ref
from supervisors import (
    ChildNotFoundError,
    DynamicSupervisor,
    NotAllowedError,
    SupervisorError,
    is_supervisor,
    restart_child,
    terminate_child,
    tree,
)

from ._admin_protocol import AdminRequestError
from ._metrics import NodeCollector, _records
from ._services import CONNECTIONS, CONVERSATIONS, SESSIONS, Services

#: Seconds a restart waits for the supervisor (a child's whole shutdown may pass).
RESTART_TIMEOUT: Final = 30.0
#: Actors looked at between two checkpoints of a long pass (top, stats).
CHUNK: Final = 5_000
#: Longest repr of a message, reason or summary value sent, in characters.
MAX_REPR: Final = 500


def short(value: object, limit: int = MAX_REPR) -> str:
    """``repr(value)`` cut to ``limit`` characters (with an ellipsis)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def jsonable(value: object, depth: int = 0) -> Any:
    """``value`` as JSON: scalars as they are, refs as pids, containers recursively (bounded),
    anything else as a short repr."""
    if value is None or isinstance(value, bool | int | float):
        return value if not isinstance(value, float) or math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return short(value)
    if isinstance(value, Ref):
        return value.pid
    if depth < 4 and isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in list(value.items())[:100]}
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in list(value)[:100]]
    return short(value)


def resolve(node: Node, ref: int | str) -> Context:
    """The live actor a wire ref names (a pid or a registered name).

    Raises:
        AdminRequestError: ``not_found``.
    """
    found = node.lookup(ref) if isinstance(ref, int) else node.whereis(ref)
    if found is None:
        raise AdminRequestError("not_found", f"no live actor {ref!r}")
    try:
        return node.context(found)
    except NoProcError:
        raise AdminRequestError("not_found", f"no live actor {ref!r}") from None


def behaviour_name(ctx: Context) -> str:
    """The actor's class or function name (cheap: no ``info()``)."""
    behaviour = ctx.behaviour
    if behaviour is None:
        return "inbox"
    if isinstance(behaviour, type):
        return behaviour.__qualname__
    name = getattr(behaviour, "__qualname__", None)
    return name if isinstance(name, str) else type(behaviour).__qualname__


def processed(ctx: Context) -> int:
    """Messages the actor has handled. ``ActorInfo.processed`` without building the whole
    ``info()`` snapshot (which calls ``format_status``): the counter it reads."""
    count: int = ctx.processed
    return count


# -- tree ---------------------------------------------------------------------------------------


def tree_of(node: Node, root: Ref, depth: int | None, top: int) -> dict[str, Any]:
    """``supervisors.tree`` from the root as a dict, each entry with its registered ``name``.

    Shape: ``TreeNode.to_dict()`` plus ``name`` (str or null) on every entry; the root's
    ``id`` is ``root`` and a dynamic supervisor's children have their pid as ``id``.
    """
    result = tree(node, root, depth=depth, top=top).to_dict()
    result["id"] = "root"  # the root's spec id (node_spec); the tree only knows its pid
    stack = [result]
    while stack:
        entry = stack.pop()
        pid = entry["pid"]
        found = node.lookup(pid) if pid is not None else None
        entry["name"] = found.name if found is not None else None
        dynamic = entry["strategy"] == "simple_one_for_one"
        for child in entry["children"]:
            if dynamic:  # a dynamic child's id is its ref: say its pid
                child["id"] = child["pid"]
            stack.append(child)
    return result


# -- supervisors' records -----------------------------------------------------------------------


def supervisor_records(node: Node, root: Ref) -> Iterator[tuple[Ref, Any, Any]]:
    """(supervisor, child id, child record) of every supervisor under ``root``, depth first.
    O(children)."""
    stack = [root]
    while stack:
        sup = stack.pop()
        try:
            behaviour = node.context(sup).behaviour
        except NoProcError:
            continue
        for child_id, record in _records(behaviour) or ():
            yield sup, child_id, record
            kind = record.spec.type
            if record.ref is not None and kind is not None and kind.value == "supervisor":
                stack.append(record.ref)


def child_record(node: Node, ctx: Context) -> tuple[Any, Any] | None:
    """(child id, record) of ``ctx`` in its parent supervisor, or None when it has none."""
    parent = ctx.parent
    if parent is None:
        return None
    try:
        behaviour = node.context(parent).behaviour
    except NoProcError:
        return None
    for child_id, record in _records(behaviour) or ():
        if record.ref == ctx.ref:
            return child_id, record
    return None


# -- info ---------------------------------------------------------------------------------------


def info_of(node: Node, ctx: Context) -> dict[str, Any]:
    """Everything about one actor (``Context.info()``) plus its supervisor's record of it.

    Shape: ``pid, name, behaviour, status, mailbox {length, capacity, high_water_mark,
    overflow}, processed, links [pid], monitors [pid], monitored_by [pid], parent (pid|null),
    trap_exit, uptime_s, summary (object|null), supervisor (pid|null), child_id, restarts,
    last_reason (repr|null), last_exit_at (loop time, s|null)``.
    """
    info = ctx.info()
    record = child_record(node, ctx)
    child_id, rec = record if record is not None else (None, None)
    return {
        "pid": info.ref.pid,
        "name": info.name,
        "behaviour": info.behaviour,
        "status": info.status.value,
        "mailbox": {
            "length": info.mailbox.length,
            "capacity": info.mailbox.capacity,
            "high_water_mark": info.mailbox.high_water_mark,
            "overflow": info.mailbox.overflow.value,
        },
        "processed": info.processed,
        "links": sorted(r.pid for r in info.links),
        "monitors": sorted(r.pid for r in info.monitors),
        "monitored_by": sorted(r.pid for r in info.monitored_by),
        "parent": info.parent.pid if info.parent is not None else None,
        "trap_exit": info.trap_exit,
        "uptime_s": round(node.now() - info.started_at, 3),
        "summary": jsonable(dict(info.summary)) if info.summary is not None else None,
        "supervisor": info.parent.pid if rec is not None and info.parent is not None else None,
        "child_id": jsonable(child_id) if rec is not None else None,
        "restarts": rec.restarts if rec is not None else 0,
        "last_reason": short(repr(rec.last_reason))
        if rec is not None and rec.last_reason
        else None,
        "last_exit_at": rec.last_exit_at if rec is not None else None,
    }


# -- destructive ops ----------------------------------------------------------------------------


def _not_self(ctx: Context, admin: Ref) -> None:
    if ctx.ref == admin:
        raise AdminRequestError("refused", "the admin endpoint does not act on itself")


def kill(node: Node, ctx: Context, reason: str, admin: Ref) -> dict[str, Any]:
    """Send an exit signal: ``kill`` (untrappable; the actor exits ``killed``) or another
    reason (a trapping actor gets it as a message). Returns ``{pid, reason}``."""
    _not_self(ctx, admin)
    node.exit(ctx.ref, KILL if reason == KILL else reason)
    return {"pid": ctx.ref.pid, "reason": reason}


def suspend(ctx: Context, admin: Ref, *, on: bool) -> dict[str, Any]:
    """Suspend or resume an actor; ``{pid, status}`` afterwards."""
    _not_self(ctx, admin)
    if on:
        ctx.suspend()
    else:
        ctx.resume()
    return {"pid": ctx.ref.pid, "status": ctx.status().value}


async def restart(node: Node, sup_ctx: Context, child: int | str, admin: Ref) -> dict[str, Any]:
    """Restart a supervisor's child. Static supervisor: ``terminate_child`` then
    ``restart_child`` by id. Dynamic supervisor: ``child`` is the child's pid; it is killed
    and its supervisor restarts it (as its restart type says). Waits at most
    ``RESTART_TIMEOUT`` seconds. Returns ``{supervisor, child, old_pid, pid}`` (``pid`` null
    when the child did not come back, e.g. a temporary one). Checkpoints.

    Raises:
        AdminRequestError: ``not_found`` (no such child), ``refused`` (not a supervisor, the
            admin endpoint itself, or the supervisor refused).
    """
    behaviour = sup_ctx.behaviour
    records = _records(behaviour)
    if records is None or not is_supervisor(type(behaviour)):
        raise AdminRequestError("refused", f"{sup_ctx.ref.pid} is not a supervisor")
    sup = sup_ctx.ref
    if isinstance(behaviour, DynamicSupervisor):
        if isinstance(child, str):  # a dynamic child is named by its pid, or its registered name
            named = node.whereis(child)
            child = named.pid if named is not None else 0
        target = next((rec for cid, rec in records if cid is not None and cid.pid == child), None)
        if target is None or target.ref is None:
            raise AdminRequestError("not_found", f"{sup.pid} has no running child {child!r}")
        old = target.ref
        _not_self(node.context(old), admin)
        node.exit(old, KILL)
        with anyio.move_on_after(RESTART_TIMEOUT):
            await node.wait_exit(old)
            waited = 0.0
            # An immediate restart shows within a few checkpoints; a backoff one when due.
            while not (target.ref is not None and target.ref != old):
                if target.pending is None and waited > 2.0:
                    break
                await anyio.sleep(0.01)
                waited += 0.01
        new = target.ref if target.ref is not None and target.ref != old else None
        return {"supervisor": sup.pid, "child": child, "old_pid": old.pid, "pid": _pid(new)}
    found = next((rec for cid, rec in records if cid == child), None)
    if found is None:
        raise AdminRequestError("not_found", f"{sup.pid} has no child {child!r}")
    old_ref = found.ref
    if old_ref is not None:
        _not_self(node.context(old_ref), admin)
    try:
        with anyio.fail_after(RESTART_TIMEOUT):
            if old_ref is not None:
                await terminate_child(sup, child)
            new_ref = await restart_child(sup, child)
    except ChildNotFoundError as exc:
        raise AdminRequestError("not_found", str(exc)) from None
    except (NotAllowedError, SupervisorError, TimeoutError) as exc:
        raise AdminRequestError("refused", f"{type(exc).__name__}: {exc}") from None
    return {"supervisor": sup.pid, "child": child, "old_pid": _pid(old_ref), "pid": new_ref.pid}


def _pid(ref: Ref | None) -> int | None:
    return ref.pid if ref is not None else None


# -- stats --------------------------------------------------------------------------------------


def percentiles(values: list[float], qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, Any]:
    """Nearest-rank percentiles of ``values`` as ``{"p50": v, ...}`` (null when empty)."""
    ordered = sorted(values)
    out: dict[str, Any] = {}
    for q in qs:
        key = f"p{round(q * 100):d}"
        out[key] = (
            ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
            if (ordered)
            else None
        )
    return out


def histogram_percentiles(histogram: Any) -> dict[str, Any]:
    """Percentiles of a Prometheus histogram since the node started, as the upper bound of the
    bucket each falls in (seconds; ``inf`` above the last bucket), and its ``count``."""
    buckets: list[tuple[float, float]] = []
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, Any] = {"count": int(total)}
    for q in (0.5, 0.9, 0.99):
        key = f"p{round(q * 100):d}"
        bound = None
        if total:
            rank = q * total
            bound = next((le for le, cum in buckets if cum >= rank), math.inf)
        out[key] = bound if bound is None or math.isfinite(bound) else "+Inf"
    return out


def rss_bytes() -> int | None:
    """The node process's resident set size in bytes (psutil, else /proc), or None."""
    try:
        psutil: Any = importlib.import_module("psutil")  # a dev dependency; optional here
    except ImportError:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None
    return int(psutil.Process().memory_info().rss)


@dataclass(slots=True)
class _Tick:
    at: float
    messages_in: float
    messages_out: float
    restarts: int


class Monitor:
    """A periodic timer of the admin actor: every ``every`` seconds it records its own lateness
    (the event loop's lag) and the node's message counters; every ``restarts_every`` ticks it
    folds the supervisors' restart counts in (one O(children) walk). ``stats`` reads rates from
    these samples, over at most the last ``window`` seconds."""

    def __init__(
        self, node: Node, root: Ref, services: Services, *, every: float = 1.0, window: int = 60
    ) -> None:
        self.node = node
        self.root = root
        self.services = services
        self.every = every
        self.ticks: deque[_Tick] = deque(maxlen=window + 1)
        self.lags: deque[float] = deque(maxlen=window)
        self._restarts = 0
        self._seen: dict[int, int] = {}  # id(child record) → restarts counted so far
        self._records: dict[int, Any] = {}  # keeps those records alive, so ids stay unique

    def counters(self) -> tuple[float, float]:
        metrics = self.services.metrics
        return _counter(metrics.messages_in), _counter(metrics.messages_out)

    def fold_restarts(self) -> int:
        """Restarts counted over every supervisor's records, including children since gone."""
        seen: dict[int, int] = {}
        records: dict[int, Any] = {}
        for _, _, record in supervisor_records(self.node, self.root):
            key = id(record)
            before = self._seen.get(key, 0)
            if record.restarts > before:
                self._restarts += record.restarts - before
            seen[key] = max(before, record.restarts)
            records[key] = record
        self._seen, self._records = seen, records
        return self._restarts

    async def run(self, restarts_every: int = 10) -> None:
        """Tick forever (cancel to stop). Checkpoints."""
        n = 0
        while True:
            if n % restarts_every == 0:
                self.fold_restarts()
            n += 1
            messages_in, messages_out = self.counters()
            self.ticks.append(_Tick(self.node.now(), messages_in, messages_out, self._restarts))
            expected = self.node.now() + self.every
            await anyio.sleep(self.every)
            self.lags.append(max(0.0, self.node.now() - expected))

    def rates(self) -> dict[str, Any]:
        """Messages in/out per second over the last 10 s, restarts per minute over the last
        minute, and the loop's lag (last and max over the window, seconds)."""
        now = self.node.now()
        messages_in, messages_out = self.counters()
        restarts = self.fold_restarts()
        ticks = list(self.ticks)
        recent = [t for t in ticks if now - t.at <= 10.0 + self.every] or ticks
        minute = [t for t in ticks if now - t.at <= 60.0 + self.every] or ticks
        rate_in = rate_out = restarts_per_min = 0.0
        if recent and now - recent[0].at > 0:
            span = now - recent[0].at
            rate_in = (messages_in - recent[0].messages_in) / span
            rate_out = (messages_out - recent[0].messages_out) / span
        if minute and now - minute[0].at > 0:
            restarts_per_min = (restarts - minute[0].restarts) * 60.0 / max(now - minute[0].at, 1)
        return {
            "messages_in_per_s": round(rate_in, 2),
            "messages_out_per_s": round(rate_out, 2),
            "messages_in_total": int(messages_in),
            "messages_out_total": int(messages_out),
            "restarts_per_min": round(restarts_per_min, 2),
            "restarts_total": restarts,
            "loop_lag_s": {
                "last": round(self.lags[-1], 6) if self.lags else None,
                "max": round(max(self.lags), 6) if self.lags else None,
            },
        }


def _counter(counter: Any) -> float:
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0


async def stats_of(node: Node, root: Ref, services: Services, monitor: Monitor) -> dict[str, Any]:
    """Node-wide figures. One O(actors) pass with a checkpoint every ``CHUNK`` actors.

    Shape: ``actors {total, by_status {status: n}, by_behaviour {name: n}}, connections,
    sessions, conversations, messages_in_per_s, messages_out_per_s, messages_in_total,
    messages_out_total, ack_latency_s {count, p50, p90, p99}, storage_commit_latency_s
    {count, p50, p90, p99}, restarts_per_min, restarts_total, dead_letters {total, by_reason},
    rss_bytes, loop_lag_s {last, max}``.
    """
    by_status: dict[str, int] = {}
    by_behaviour: dict[str, int] = {}
    total = 0
    for i, ref in enumerate(node.actors()):
        if i and i % CHUNK == 0:
            await anyio.lowlevel.checkpoint()
        try:
            ctx = node.context(ref)
        except NoProcError:
            continue
        total += 1
        status = ctx.status().value
        by_status[status] = by_status.get(status, 0) + 1
        name = behaviour_name(ctx)
        by_behaviour[name] = by_behaviour.get(name, 0) + 1
    counts = {}
    for key, sup in (
        ("connections", CONNECTIONS),
        ("sessions", SESSIONS),
        ("conversations", CONVERSATIONS),
    ):
        sup_ref = node.whereis(sup)
        behaviour = node.context(sup_ref).behaviour if sup_ref is not None else None
        counts[key] = behaviour.child_count() if isinstance(behaviour, DynamicSupervisor) else 0
    commits: list[float] = []
    for _, shard, _ in NodeCollector(node, root, services.metrics, {}).shards():
        if shard is not None:
            commits.extend(getattr(node.context(shard).behaviour, "_latencies", ()))
    dead = node.statistics().dead_letters
    commit_latency = percentiles(commits)
    commit_latency["count"] = len(commits)
    return {
        "actors": {
            "total": total,
            "by_status": dict(sorted(by_status.items())),
            "by_behaviour": dict(sorted(by_behaviour.items(), key=lambda kv: -kv[1])[:50]),
        },
        **counts,
        **monitor.rates(),
        "ack_latency_s": histogram_percentiles(services.metrics.ack_latency),
        "storage_commit_latency_s": commit_latency,
        "dead_letters": {"total": sum(dead.values()), "by_reason": dict(dead)},
        "rss_bytes": rss_bytes(),
    }


# -- top ----------------------------------------------------------------------------------------


def memory_estimate(ctx: Context) -> int:
    """An estimate of an actor's memory in bytes: ``sys.getsizeof`` of its behaviour object,
    of its ``__dict__`` and of each value in it (shallow: containers count their own table,
    not what they hold), plus 100 bytes per queued message."""
    behaviour = ctx.behaviour
    size = sys.getsizeof(behaviour)
    attrs = getattr(behaviour, "__dict__", None)
    if isinstance(attrs, dict):
        size += sys.getsizeof(attrs) + sum(sys.getsizeof(v) for v in attrs.values())
    return size + 100 * ctx.mailbox_length


class TopSampler:
    """``top``'s state: each actor's processed count at the last few samples, so that message
    rates are taken over a sliding window of ``window`` seconds.

    One :meth:`sample` is one O(actors) pass (with a checkpoint every ``CHUNK`` actors) plus,
    when sorting by restarts, one walk of the supervisors' records. Memory: one dict of
    pid → processed per sample kept (at most ``ceil(window / interval) + 1``).
    """

    def __init__(self, node: Node, root: Ref, *, sort: str, interval: float, window: float):
        self.node = node
        self.root = root
        self.sort = sort
        self.keep = min(61, math.ceil(window / interval) + 1)
        self.history: deque[tuple[float, dict[int, int]]] = deque(maxlen=self.keep)

    async def sample(self, n: int) -> dict[str, Any]:
        """One frame: ``{at, actors, window_s, sort, rows: [{pid, name, behaviour, status,
        mailbox, processed, rate, memory, restarts, last_reason}]}`` (``rate`` in messages/s
        over the window, ``memory`` in bytes, an estimate: see :func:`memory_estimate`)."""
        node = self.node
        now = node.now()
        counts: dict[int, int] = {}
        mailboxes: dict[int, int] = {}
        contexts: dict[int, Context] = {}
        for i, ref in enumerate(node.actors()):
            if i and i % CHUNK == 0:
                await anyio.lowlevel.checkpoint()
            try:
                ctx = node.context(ref)
            except NoProcError:
                continue
            pid = ref.pid
            counts[pid] = processed(ctx)
            mailboxes[pid] = ctx.mailbox_length
            contexts[pid] = ctx
        self.history.append((now, counts))
        then, before = self.history[0]
        span = now - then

        def rate(pid: int) -> float:
            if span <= 0:
                return 0.0
            return (counts[pid] - before.get(pid, 0)) / span

        restarts: dict[int, Any] = {}
        if self.sort == "restarts":
            restarts = {
                rec.ref.pid: rec
                for _, _, rec in supervisor_records(node, self.root)
                if rec.ref is not None
            }
            key: Any = lambda pid: restarts[pid].restarts if pid in restarts else 0  # noqa: E731
        elif self.sort == "rate":
            key = rate
        elif self.sort == "memory":
            key = lambda pid: memory_estimate(contexts[pid])  # noqa: E731
        else:
            key = mailboxes.__getitem__
        chosen = heapq.nlargest(n, counts, key=key)
        rows = []
        for pid in chosen:
            ctx = contexts[pid]
            rec = restarts.get(pid)
            if rec is None and self.sort != "restarts":
                found = child_record(node, ctx) if _small_parent(node, ctx) else None
                rec = found[1] if found is not None else None
            rows.append(
                {
                    "pid": pid,
                    "name": ctx.name,
                    "behaviour": behaviour_name(ctx),
                    "status": ctx.status().value,
                    "mailbox": mailboxes[pid],
                    "processed": counts[pid],
                    "rate": round(rate(pid), 2),
                    "memory": memory_estimate(ctx),
                    "restarts": rec.restarts if rec is not None else 0,
                    "last_reason": short(repr(rec.last_reason))
                    if rec is not None and rec.last_reason
                    else None,
                }
            )
        return {
            "at": round(now, 3),
            "actors": len(counts),
            "window_s": round(span, 3),
            "sort": self.sort,
            "rows": rows,
        }


def _small_parent(node: Node, ctx: Context, limit: int = 1_000) -> bool:
    """Whether the actor's supervisor has few enough children to search its records."""
    parent = ctx.parent
    if parent is None:
        return False
    try:
        behaviour = node.context(parent).behaviour
    except NoProcError:
        return False
    count = getattr(behaviour, "child_count", None)
    return count is None or count() <= limit
