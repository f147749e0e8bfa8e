"""The node's Prometheus metrics: one registry per node (no process-global state, so several nodes
can share a process), the few instruments the hot paths update, and a collector that samples the
rest from the runtime at scrape time.

Updated on the hot paths (cheap: a lock and an add): handshakes by outcome, messages in and out,
ack and delivery latency. Sampled when scraped (O(actors), never on a hot path): connections,
sessions, conversations, actors by status, dead letters, mailbox high-water marks, supervisor
restarts, storage commit latency and shard state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors import Node, NoProcError, Ref

#: Latency buckets in seconds: 1 ms to 10 s.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: Handshake outcomes, each a label value of ``parley_handshakes_total``.
HANDSHAKE_OUTCOMES: Final = (
    "accepted",  # upgraded; a connection actor runs
    "unauthorized",  # 401: missing, malformed, badly signed or expired token
    "too_many",  # 429: over max_connections_per_user
    "bad_subprotocol",  # 400: only unknown subprotocols offered
    "not_found",  # 404: another path than ws_path
    "draining",  # 503: the node is shutting down
    "failed",  # upgraded, but no connection actor could be started
)


class Metrics:
    """A node's registry and the instruments its actors update.

    Names (``parley_`` prefix; counters get ``_total`` in the exposition):
    ``handshakes{outcome}``, ``messages_in``, ``messages_out``, ``ack_latency_seconds``,
    ``delivery_latency_seconds``, ``storage_commit_latency_seconds``; the sampled ones are
    listed in :class:`NodeCollector`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.handshakes = Counter(
            "parley_handshakes",
            "WebSocket handshakes by outcome.",
            ["outcome"],
            registry=r,
        )
        for outcome in HANDSHAKE_OUTCOMES:
            self.handshakes.labels(outcome)
        self.messages_in = Counter(
            "parley_messages_in",
            "Messages sent by clients and committed (resends of a stored cmid are not counted).",
            registry=r,
        )
        self.messages_out = Counter(
            "parley_messages_out",
            "msg frames queued for devices, live and by sync.",
            registry=r,
        )
        self.ack_latency = Histogram(
            "parley_ack_latency_seconds",
            "From a send frame taken by its connection to its ack (or error) being queued.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "parley_delivery_latency_seconds",
            "From a message's server timestamp (taken before its commit) to its live msg frame "
            "being queued for a device (server wall clock, millisecond resolution).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.storage_commit_latency = Histogram(
            "parley_storage_commit_latency_seconds",
            "Group commits of the storage shards (one observation per batch), sampled from "
            "the shards' recent commit timings.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


def _records(behaviour: object) -> list[tuple[Any, Any]] | None:
    """A supervisor's (id, child record) list; None for a worker."""
    records = getattr(behaviour, "children_records", None)
    if records is None or not hasattr(behaviour, "flags"):
        return None
    result: list[tuple[Any, Any]] = records()
    return result


class NodeCollector(Collector):
    """Samples a node's runtime when scraped (and on :meth:`sample`, so that counts of children
    that come and go between scrapes are not lost).

    Reports ``parley_connections``, ``parley_sessions``, ``parley_conversations`` (live actors
    under those supervisors), ``parley_actors{status}``, ``parley_dead_letters_total{reason}``,
    ``parley_mailbox_high_water_mark`` and ``parley_mailbox_length_max`` (the most over all
    actors), ``parley_supervisor_restarts_total{supervisor}`` (the supervisor's path of child
    ids, e.g. ``root/conversations``), ``parley_storage_commits_total{shard}``,
    ``parley_storage_failed_commits_total{shard}``, ``parley_storage_queued_messages{shard}`` and
    ``parley_storage_breaker_open{shard}``; and feeds ``parley_storage_commit_latency_seconds``.
    """

    def __init__(self, node: Node, root: Ref, metrics: Metrics, supervisors: dict[str, str]):
        """``supervisors`` maps a gauge name (``connections``) to a registered dynamic
        supervisor whose live children it counts."""
        self.node = node
        self.root = root
        self.metrics = metrics
        self.supervisors = supervisors
        self._restarts: dict[str, int] = {}  # supervisor path → restarts counted so far
        self._seen: dict[object, int] = {}  # child record → its restarts counted so far
        self._commits: dict[Ref, int] = {}  # shard actor → commits folded into the histogram

    # -- sampling --

    def sample(self) -> None:
        """Fold restarts and new commit timings in. O(actors in supervisors). Never blocks."""
        self._fold_restarts()
        self._fold_commits()

    def _fold_restarts(self) -> None:
        seen: dict[object, int] = {}
        for path, record in self._walk(self.root, "root"):
            before = self._seen.get(record, 0)
            now = record.restarts
            if now > before:
                self._restarts[path] = self._restarts.get(path, 0) + now - before
            else:
                self._restarts.setdefault(path, 0)
            seen[record] = max(now, before)
        self._seen = seen  # records of children gone since are dropped

    def _walk(self, ref: Ref, path: str) -> Iterator[tuple[str, Any]]:
        try:
            ctx = self.node.context(ref)
        except NoProcError:
            return
        records = _records(ctx.behaviour)
        if records is None:
            return
        for child_id, record in records:
            yield path, record
            kind = record.spec.type
            if record.ref is not None and kind is not None and kind.value == "supervisor":
                yield from self._walk(record.ref, f"{path}/{child_id}")

    def shards(self) -> Iterator[tuple[str, Ref | None, dict[str, Any] | None]]:
        """(name, live ref or None, statistics or None) of every storage shard."""
        for _, record in self._storage_records():
            ref = record.ref
            stats = None
            if ref is not None:
                try:
                    behaviour = self.node.context(ref).behaviour
                except NoProcError:
                    ref = None
                else:
                    statistics = getattr(behaviour, "statistics", None)
                    stats = statistics() if statistics is not None else None
            yield str(record.spec.id), ref, stats

    def _storage_records(self) -> list[tuple[Any, Any]]:
        try:
            root = self.node.context(self.root).behaviour
        except NoProcError:
            return []
        for child_id, record in _records(root) or ():
            if child_id == "storage" and record.ref is not None:
                try:
                    return _records(self.node.context(record.ref).behaviour) or []
                except NoProcError:
                    return []
        return []

    def _fold_commits(self) -> None:
        histogram = self.metrics.storage_commit_latency
        live: dict[Ref, int] = {}
        for _, ref, stats in self.shards():
            if ref is None or stats is None:
                continue
            commits = int(stats.get("commits", 0))
            new = commits - self._commits.get(ref, 0)
            # The shard keeps its recent commit timings (a bounded deque, newest last); commits
            # beyond it since the last sample are counted by storage_commits_total only.
            recent = getattr(self.node.context(ref).behaviour, "_latencies", ())
            if new > 0 and recent:
                for seconds in list(recent)[-min(new, len(recent)) :]:
                    histogram.observe(seconds)
            live[ref] = commits
        self._commits = live

    # -- exposition --

    def collect(self) -> Iterable[Metric]:
        self.sample()
        node = self.node
        for gauge, name in self.supervisors.items():
            try:
                count = len(_records(node.context(name).behaviour) or ())
            except NoProcError:
                count = 0
            yield GaugeMetricFamily(f"parley_{gauge}", f"Live {gauge} actors.", value=count)
        stats = node.statistics()
        actors = GaugeMetricFamily("parley_actors", "Live actors by status.", labels=["status"])
        for status, count in sorted(stats.by_status.items()):
            actors.add_metric([status], count)
        yield actors
        dead = CounterMetricFamily(
            "parley_dead_letters",
            "Messages that could not be delivered, by reason (noproc, mailbox_full, exited).",
            labels=["reason"],
        )
        for reason, count in sorted(stats.dead_letters.items()):
            dead.add_metric([reason], count)
        yield dead
        high = length = 0
        for ref in node.actors():
            try:
                mailbox = node.context(ref).mailbox_statistics()
            except NoProcError:
                continue
            high = max(high, mailbox.high_water_mark)
            length = max(length, mailbox.length)
        yield GaugeMetricFamily(
            "parley_mailbox_high_water_mark",
            "The most messages any live actor has had queued at once.",
            value=high,
        )
        yield GaugeMetricFamily(
            "parley_mailbox_length_max", "The longest mailbox of any live actor now.", value=length
        )
        restarts = CounterMetricFamily(
            "parley_supervisor_restarts",
            "Children restarted, by supervisor (its path of child ids from the root).",
            labels=["supervisor"],
        )
        for path, count in sorted(self._restarts.items()):
            restarts.add_metric([path], count)
        yield restarts
        yield from self._storage_metrics()

    def _storage_metrics(self) -> Iterator[Metric]:
        commits = CounterMetricFamily(
            "parley_storage_commits",
            "Group commits, by shard (since it started).",
            labels=["shard"],
        )
        failed = CounterMetricFamily(
            "parley_storage_failed_commits",
            "Group commits the database did not take, by shard (since it started).",
            labels=["shard"],
        )
        queued = GaugeMetricFamily(
            "parley_storage_queued_messages", "Messages waiting for a commit.", labels=["shard"]
        )
        breaker = GaugeMetricFamily(
            "parley_storage_breaker_open",
            "1 when the shard is not taking calls (breaker open or half-open, or restarting).",
            labels=["shard"],
        )
        for name, _, stats in self.shards():
            if stats is None:
                breaker.add_metric([name], 1)
                continue
            commits.add_metric([name], stats.get("commits", 0))
            failed.add_metric([name], stats.get("failed_commits", 0))
            queued.add_metric([name], stats.get("queued_messages", 0))
            breaker.add_metric([name], 0 if stats.get("breaker") == "closed" else 1)
        yield from (commits, failed, queued, breaker)
