"""The load generator behind ``parley loadgen``: drives a running node from worker processes.

A node and one client process share the same two cores and the same GIL-free budget, so the
client side is spread over several worker *processes* (``multiprocessing``, spawn), each running
trio and Parley's own client library (:func:`gateway.open_client`). Each process also stays well
under the per-process limit on open files, so together they can hold more connections than one
process could.

The parent coordinates the workers in phases over pipes: connect (every worker opens its users'
connections, at most ``CONCURRENCY`` handshakes in flight each), then prepare (create the
conversations the traffic uses), then run (traffic for a fixed duration, from a common start on
the system-wide monotonic clock, taken once every worker is prepared), then stop. Latencies are
measured with ``time.monotonic_ns``, which is one clock for all processes of the machine: a
message's body carries its send time, so its recipient, in whichever process, computes the
delivery latency.

Modes:

- ``connect``: hold N authenticated idle connections; handshakes per second.
- ``chat``: U users in pairs, each pair a direct conversation; R messages per second in total
  (R = 0: closed loop, every user sends its next message when the last is acked), for S seconds;
  ack latency (send → ack) and delivery latency (send → the partner's ``msg``).
- ``group``: one group of M online members; one extra device of the first member sends R
  messages per second; delivery latency to every member.
- ``raw``: N bare trio-websocket connections, no protocol (a baseline for benchmarks).

``connect`` and ``raw`` take ``light``: instead of Parley's client library (or trio-websocket),
each connection is the light client of :mod:`gateway._loadgen_light` (prebuilt upgrade requests on
raw sockets; it reads through ``synced``, or the echo of one ``hello``, then only answers pings),
so that the handshake rate measures the server rather than the clients, whose library costs
about as much CPU per handshake as the node.

Everything is bounded: counts by :data:`MAX_CONNECTIONS`, time by :data:`MAX_DURATION`, and the
target must be a loopback address.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import math
import multiprocessing
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import trio

from config import ServerSettings

Mode = Literal["connect", "chat", "group", "raw"]
_T = TypeVar("_T")

#: Most connections one run may open (all workers together).
MAX_CONNECTIONS: Final = 50_000
#: Longest traffic phase, in seconds.
MAX_DURATION: Final = 600.0
#: Connections one worker process holds at most (the per-process open-file limit is 20,000 here).
PER_WORKER: Final = 5_000
#: Handshakes in flight per worker.
CONCURRENCY: Final = 64
#: Seconds a phase may take beyond its own length before the run is abandoned.
PHASE_TIMEOUT: Final = 300.0
#: Seconds to wait, after sending stops, for the last deliveries.
DRAIN_TIMEOUT: Final = 10.0
#: Prefix of every message body the load generator sends: ``lg <monotonic ns> <padding>``.
_BODY_TAG: Final = "lg"


class LoadError(Exception):
    """A load run could not be set up (a bad target or bounds), or a worker failed."""


@dataclass(frozen=True)
class LoadPlan:
    """What to run. ``users`` connections (``connect``/``raw``/``chat``) or group members.

    ``rate`` is messages per second for all workers together (``chat``; 0 = closed loop) or for
    the one group sender (``group``); ``duration`` is the traffic phase in seconds; ``body``
    is the body size in bytes (at least the timestamp). ``light`` (``connect`` and ``raw``
    only) uses the light client instead of a full WebSocket client library.
    """

    url: str
    secret: bytes
    mode: Mode
    users: int
    rate: float = 0.0
    duration: float = 10.0
    workers: int = 0
    body: int = 64
    concurrency: int = CONCURRENCY
    light: bool = False
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))


@dataclass
class LoadReport:
    """What a run measured (times in seconds, latencies in milliseconds)."""

    mode: Mode
    workers: int
    connections: int
    connect_errors: int
    connect_s: float
    handshakes_per_s: float
    sent: int = 0
    acked: int = 0
    send_errors: int = 0
    delivered: int = 0
    expected: int = 0
    run_s: float = 0.0
    offered_rate: float = 0.0
    acked_per_s: float = 0.0
    delivered_per_s: float = 0.0
    ack_ms: dict[str, float] = field(default_factory=dict)
    deliver_ms: dict[str, float] = field(default_factory=dict)
    loadgen_cpu_s: float = 0.0
    loadgen_cpu_share: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def check_target(url: str) -> None:
    """Refuse anything but a ``ws://`` URL on a loopback address (LoadError)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise LoadError(f"{url!r}: the load generator needs a ws:// URL")
    host = parts.hostname
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise LoadError(f"{url!r}: the load generator only drives a node on this machine")


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of ``samples`` (nearest rank), rounded to 0.01; empty when none."""
    if not samples:
        return {}
    ordered = sorted(samples)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[max(1, math.ceil(n * p / 100)) - 1], 2)

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": round(ordered[-1], 2)}


# ------------------------------------------------------------------------------------------------
# The parent: plan, workers, phases


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _worker_count(plan: LoadPlan) -> int:
    if plan.workers > 0:
        return plan.workers
    return max(2, math.ceil(plan.users / PER_WORKER))


def _check_plan(plan: LoadPlan) -> None:
    check_target(plan.url)
    if not 1 <= plan.users <= MAX_CONNECTIONS:
        raise LoadError(f"users must be between 1 and {MAX_CONNECTIONS:,}")
    if not 0 < plan.duration <= MAX_DURATION:
        raise LoadError(f"duration must be between 0 and {MAX_DURATION:.0f} s")
    if plan.rate < 0:
        raise LoadError("rate must not be negative")
    if plan.mode == "chat" and plan.users < 2:
        raise LoadError("chat needs at least 2 users")
    if plan.mode == "group" and plan.rate <= 0:
        raise LoadError("group needs a positive rate")
    if plan.light and plan.mode not in ("connect", "raw"):
        raise LoadError("the light client only opens and holds connections (connect, raw)")
    count = _worker_count(plan)
    if math.ceil(plan.users / count) > PER_WORKER:
        raise LoadError(f"at most {PER_WORKER:,} connections per worker: use more workers")


@dataclass(frozen=True)
class _WorkerPlan:
    index: int
    plan: LoadPlan
    first: int  # index of this worker's first user
    count: int
    members: tuple[str, ...]  # group: every member (worker 0 creates the group)


def user_id(run_id: str, index: int) -> str:
    """The id of the load generator's ``index``-th user in run ``run_id``."""
    return f"lg{run_id}-{index}"


class _Workers:
    """The worker processes of one run and their pipes."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        count = _worker_count(plan)
        sizes = _split(plan.users, count)
        if plan.mode == "chat":  # keep each pair inside one worker (an odd user out sits idle)
            sizes = [2 * pairs for pairs in _split(plan.users // 2, count)]
        members = (
            tuple(user_id(plan.run_id, i) for i in range(plan.users))
            if plan.mode == "group"
            else ()
        )
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        first = 0
        for index, size in enumerate(sizes):
            parent, child = context.Pipe()
            spec = _WorkerPlan(index, plan, first, size, members)
            proc = context.Process(target=_worker_entry, args=(spec, child), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
            first += size

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def phase(self, command: str, timeout: float, **args: Any) -> list[dict[str, Any]]:
        """Send ``command`` to every worker and gather their answers (LoadError on failure)."""
        for pipe in self.pipes:
            pipe.send((command, args))
        answers = []
        deadline = time.monotonic() + timeout
        for index, pipe in enumerate(self.pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise LoadError(f"worker {index} did not finish {command!r} in time")
            try:
                answer = pipe.recv()
            except EOFError:
                raise LoadError(f"worker {index} died during {command!r}") from None
            if "error" in answer:
                raise LoadError(f"worker {index}: {answer['error']}")
            answers.append(answer)
        return answers

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", {}))
        deadline = time.monotonic() + 30.0
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        for pipe in self.pipes:
            pipe.close()


def run_load(plan: LoadPlan, *, on_held: Callable[[LoadReport], None] | None = None) -> LoadReport:
    """Run ``plan`` and return what it measured. Blocks; the workers are gone on return.

    ``on_held`` is called once every connection is open (before any traffic), while they are
    held: a benchmark reads the node's memory there.

    Raises:
        LoadError: a bad plan, or a worker failed or timed out.
    """
    _check_plan(plan)
    workers = _Workers(plan)
    try:
        workers.phase("ready", PHASE_TIMEOUT)
        start = time.monotonic_ns() + 200_000_000
        answers = workers.phase("connect", PHASE_TIMEOUT, start=start)
        connected = sum(a["connected"] for a in answers)
        errors = sum(a["errors"] for a in answers)
        end = max(a["end"] for a in answers)
        connect_s = max(1e-9, (end - start) / 1e9)
        report = LoadReport(
            mode=plan.mode,
            workers=len(answers),
            connections=connected,
            connect_errors=errors,
            connect_s=round(connect_s, 3),
            handshakes_per_s=round(connected / connect_s, 1),
            loadgen_cpu_s=sum(a["cpu_s"] for a in answers),
            errors=[e for a in answers for e in a["messages"]][:10],
        )
        if on_held is not None:
            on_held(report)
        if plan.mode in ("chat", "group"):
            # Set-up outside the timed run: creating 500 conversations takes the node seconds,
            # which would otherwise count as traffic time and arrive as a burst of late sends.
            workers.phase("prepare", PHASE_TIMEOUT)
            start = time.monotonic_ns() + 500_000_000
            answers = workers.phase(
                "run", plan.duration + DRAIN_TIMEOUT + PHASE_TIMEOUT, start=start
            )
            _summarise_run(plan, report, answers, start)
    finally:
        workers.close()
    return report


def _summarise_run(
    plan: LoadPlan, report: LoadReport, answers: list[dict[str, Any]], start: int
) -> None:
    acks = [x for a in answers for x in a["ack_ms"]]
    delivers = [x for a in answers for x in a["deliver_ms"]]
    last = max([a["last_delivery"] for a in answers] + [start + 1])
    report.sent = sum(a["sent"] for a in answers)
    report.acked = sum(a["acked"] for a in answers)
    report.send_errors = sum(a["send_errors"] for a in answers)
    report.delivered = sum(a["delivered"] for a in answers)
    report.expected = report.acked * (plan.users if plan.mode == "group" else 1)
    report.run_s = round(plan.duration, 3)
    report.offered_rate = plan.rate
    report.acked_per_s = round(report.acked / plan.duration, 1)
    span = max(plan.duration, (last - start) / 1e9)
    report.delivered_per_s = round(report.delivered / span, 1)
    report.ack_ms = percentiles(acks)
    report.deliver_ms = percentiles(delivers)
    cpu = sum(a["cpu_s"] for a in answers)
    report.loadgen_cpu_s = round(cpu, 3)
    report.loadgen_cpu_share = round(cpu / span / (os.cpu_count() or 1), 3)
    report.errors = (report.errors + [e for a in answers for e in a["messages"]])[:10]


# ------------------------------------------------------------------------------------------------
# The workers


def _worker_entry(spec: _WorkerPlan, pipe: Connection) -> None:
    # The worker's own full collections would show up as the node's latency: collect as
    # rarely as the node does (ServerSettings.gc_thresholds).
    gc.set_threshold(*ServerSettings().gc_thresholds)
    gc.collect()
    gc.freeze()
    try:
        trio.run(_Worker(spec, pipe).main)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # report the failure to the parent instead of a traceback
        with contextlib.suppress(OSError):
            pipe.send({"error": repr(exc)[:500]})
        sys.exit(1)


def _now() -> int:
    return time.monotonic_ns()


async def _sleep_until_ns(target: int) -> None:
    await trio.sleep(max(0.0, (target - _now()) / 1e9))


class _Worker:
    def __init__(self, spec: _WorkerPlan, pipe: Connection) -> None:
        self.spec = spec
        self.plan = spec.plan
        self.pipe = pipe
        self.users = [user_id(self.plan.run_id, spec.first + i) for i in range(spec.count)]
        self.clients: dict[str, Any] = {}
        self.connected = 0
        self.errors = 0
        self.messages: list[str] = []
        self.all_open = trio.Event()
        self.opened = 0
        self.release = trio.Event()
        self.scopes: set[trio.CancelScope] = set()
        self.closed = trio.Event()
        self.holding = 0
        self.all_closed = trio.Event()
        self.ack_ms: list[float] = []
        self.deliver_ms: list[float] = []
        self.delivered = 0
        self.last_delivery = 0
        self.measuring = False
        self.sent = 0
        self.acked = 0
        self.send_errors = 0
        self.senders: list[tuple[Any, str]] = []  # chat: (client, conversation) per user
        self.group_conv: str | None = None  # group: created by worker 0
        self.requests: dict[str, bytes] = {}  # light: each user's prebuilt upgrade request

    async def receive(self) -> tuple[str, dict[str, Any]]:
        command: tuple[str, dict[str, Any]] = await trio.to_thread.run_sync(
            self.pipe.recv, abandon_on_cancel=True
        )
        return command

    def fail(self, message: str) -> None:
        self.errors += 1
        if len(self.messages) < 5:
            self.messages.append(message[:300])

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                command, args = await self.receive()
                if command == "ready":
                    if self.plan.light:
                        self._prebuild()
                    self.pipe.send({"ok": True})
                elif command == "connect":
                    self.pipe.send(await self.connect(nursery, args["start"]))
                elif command == "prepare":
                    await self.prepare()
                    self.pipe.send({"ok": True})
                elif command == "run":
                    self.pipe.send(await self.run(args["start"]))
                elif command == "stop":
                    self.release.set()
                    for scope in list(self.scopes):
                        scope.cancel()
                    if self.holding:
                        with trio.move_on_after(30.0):
                            await self.all_closed.wait()
                    nursery.cancel_scope.cancel()
                    return

    # -- connect --

    async def connect(self, nursery: trio.Nursery, start: int) -> dict[str, Any]:
        await _sleep_until_ns(start)
        cpu = time.process_time()
        gate = trio.Semaphore(self.plan.concurrency)
        for user in self.users:
            nursery.start_soon(self.hold, user, gate)
        if self.users:
            await self.all_open.wait()
        end = _now()
        return {
            "connected": self.connected,
            "errors": self.errors,
            "end": end,
            "cpu_s": time.process_time() - cpu,
            "messages": self.messages,
        }

    def _one_done(self) -> None:
        self.opened += 1
        if self.opened == len(self.users):
            self.all_open.set()

    async def hold(self, user: str, gate: trio.Semaphore) -> None:
        self.holding += 1
        try:
            if self.plan.light:
                await self._hold_light(user, gate)
            elif self.plan.mode == "raw":
                await self._hold_raw(gate)
            else:
                await self._hold_client(user, gate)
        finally:
            self.holding -= 1
            if not self.holding:
                self.all_closed.set()

    def _prebuild(self) -> None:
        """Light client: mint the tokens and format the upgrade requests before the timed
        phase (the full client mints each token inside it)."""
        from ._auth import mint_token
        from ._loadgen_light import PARLEY_SUBPROTOCOL, upgrade_request

        parts = urlsplit(self.plan.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        raw = self.plan.mode == "raw"
        for user in self.users:
            token = None if raw else mint_token(self.plan.secret, user, None, ttl_s=3600)
            subprotocol = None if raw else PARLEY_SUBPROTOCOL
            self.requests[user] = upgrade_request(
                host, port, path, token=token, subprotocol=subprotocol
            )

    async def _hold_light(self, user: str, gate: trio.Semaphore) -> None:
        from ._loadgen_light import LightError, echo_done, hold_light, parley_done

        parts = urlsplit(self.plan.url)
        raw = self.plan.mode == "raw"
        released = False

        def opened() -> None:
            nonlocal released
            gate.release()
            released = True
            self.connected += 1
            self._one_done()

        await gate.acquire()
        scope = trio.CancelScope()
        self.scopes.add(scope)
        try:
            with scope:
                stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
                await hold_light(
                    stream,
                    self.requests[user],
                    greeting=b"hello" if raw else None,
                    done=echo_done if raw else parley_done,
                    opened=opened,
                )
        except (OSError, trio.BrokenResourceError, LightError) as exc:
            if not released:
                self.fail(repr(exc))
                self._one_done()
        finally:
            self.scopes.discard(scope)
            if not released:
                gate.release()

    async def _hold_raw(self, gate: trio.Semaphore) -> None:
        import trio_websocket

        await gate.acquire()
        released = False
        try:
            async with trio_websocket.open_websocket_url(self.plan.url) as ws:
                gate.release()
                released = True
                self.connected += 1
                self._one_done()
                await ws.send_message("hello")
                await ws.get_message()
                await self.release.wait()
        except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
            self.fail(repr(exc))
            if not released:
                self._one_done()
        finally:
            if not released:
                gate.release()

    async def _hold_client(self, user: str, gate: trio.Semaphore) -> None:
        from ._auth import mint_token
        from ._client import open_client
        from ._client_errors import ConnectError, ConnectionClosedError, HandshakeRejected

        token = mint_token(self.plan.secret, user, None, ttl_s=3600)
        await gate.acquire()
        released = False
        try:
            async with open_client(self.plan.url, token, event_buffer=4096) as client:
                gate.release()
                released = True
                self.clients[user] = client
                self.connected += 1
                self._one_done()
                scope = trio.CancelScope()
                self.scopes.add(scope)
                try:
                    with scope:
                        async for event in client.events:
                            self._on_event(event)
                finally:
                    self.scopes.discard(scope)
                    self.clients.pop(user, None)
        except (ConnectError, HandshakeRejected, ConnectionClosedError, OSError) as exc:
            self.fail(repr(exc))
            if not released:
                self._one_done()
        finally:
            if not released:
                gate.release()

    def _on_event(self, event: Any) -> None:
        from ._frames import Msg

        if type(event) is not Msg or not self.measuring:
            return
        body = event.body
        if not isinstance(body, str) or not body.startswith(_BODY_TAG):
            return
        now = _now()
        try:
            sent = int(body.split(" ", 2)[1])
        except (IndexError, ValueError):
            return
        self.deliver_ms.append((now - sent) / 1e6)
        self.delivered += 1
        self.last_delivery = now

    # -- traffic --

    def body(self) -> str:
        stamp = f"{_BODY_TAG} {_now()} "
        return stamp + "x" * max(0, self.plan.body - len(stamp))

    async def send_one(self, client: Any, conv: str) -> None:
        from ._client_errors import ConnectionClosedError, RequestTimeout, ServerError

        self.sent += 1
        sent = _now()
        try:
            await client.send_message(conv, self.body())
        except (ServerError, RequestTimeout, ConnectionClosedError) as exc:
            self.send_errors += 1
            if len(self.messages) < 5:
                self.messages.append(repr(exc)[:300])
            return
        self.acked += 1
        self.ack_ms.append((_now() - sent) / 1e6)

    async def run(self, start: int) -> dict[str, Any]:
        self.measuring = True
        cpu = time.process_time()
        end = start + int(self.plan.duration * 1e9)
        if self.plan.mode == "chat":
            await self._chat(start, end)
        elif self.spec.index == 0:
            await self._group(start, end)
        else:
            await _sleep_until_ns(end)
        # The sender's worker knows how many were acked; every worker waits a little for the
        # stragglers (a delivery is counted by its recipient's worker).
        deadline = _now() + int(DRAIN_TIMEOUT * 1e9)
        expected = self.acked if self.plan.mode == "chat" else None
        while _now() < deadline:
            if expected is not None and self.delivered >= expected:
                break
            if expected is None and _now() > end + 2_000_000_000:
                break
            await trio.sleep(0.05)
        self.measuring = False
        return {
            "sent": self.sent,
            "acked": self.acked,
            "send_errors": self.send_errors,
            "delivered": self.delivered,
            "last_delivery": self.last_delivery,
            "ack_ms": self.ack_ms,
            "deliver_ms": self.deliver_ms,
            "cpu_s": time.process_time() - cpu,
            "messages": self.messages,
        }

    async def prepare(self) -> None:
        """Create the conversations the run uses (chat: one direct conversation per pair of
        this worker's users; group: the group, by worker 0) and send one unmeasured message in
        each, so that the run measures conversations whose actors are already running: the
        first message of a conversation starts its actor, which loads it from storage."""
        if self.plan.mode == "chat":
            pairs: list[tuple[str, str]] = []
            for i in range(0, len(self.users) - 1, 2):
                a, b = self.users[i], self.users[i + 1]
                if a in self.clients and b in self.clients:
                    pairs.append((a, b))
            convs: dict[str, str] = {}
            async with trio.open_nursery() as nursery:
                for a, b in pairs:

                    async def create(a: str = a, b: str = b) -> None:
                        client = self.clients[a]
                        info = await _retrying(lambda: client.create_direct(b))
                        convs[a] = convs[b] = info.conv
                        await _retrying(lambda: client.send_message(info.conv, "warm-up"))

                    nursery.start_soon(create)
            self.senders = [(self.clients[u], convs[u]) for pair in pairs for u in pair]
        elif self.plan.mode == "group" and self.spec.index == 0:
            from ._client import open_client

            async with open_client(self.plan.url, self._sender_token()) as sender:
                info = await _retrying(
                    lambda: sender.create_group("loadgen", self.spec.members[1:])
                )
                await _retrying(lambda: sender.send_message(info.conv, "warm-up"))
            self.group_conv = info.conv

    def _sender_token(self) -> str:
        from ._auth import mint_token

        return mint_token(self.plan.secret, self.spec.members[0], "lg-sender", ttl_s=3600)

    async def _chat(self, start: int, end: int) -> None:
        senders = self.senders
        if not senders:
            return
        await _sleep_until_ns(start)
        share = self.plan.rate * len(self.users) / max(1, self.plan.users)
        async with trio.open_nursery() as nursery:
            if share <= 0:  # closed loop: each user, one message in flight
                for client, conv in senders:
                    nursery.start_soon(self._closed_loop, client, conv, end)
            else:
                await self._open_loop(nursery, senders, share, start, end)

    async def _closed_loop(self, client: Any, conv: str, end: int) -> None:
        while _now() < end:
            await self.send_one(client, conv)

    async def _open_loop(
        self,
        nursery: trio.Nursery,
        senders: list[tuple[Any, str]],
        rate: float,
        start: int,
        end: int,
    ) -> None:
        """Start sends at ``rate`` per second whatever the answers (an open loop), round robin
        over ``senders``, catching up in small batches when the loop falls behind."""
        issued = 0
        turn = 0
        while True:
            now = _now()
            if now >= end:
                return
            due = int((now - start) / 1e9 * rate) + 1
            while issued < due:
                client, conv = senders[turn % len(senders)]
                turn += 1
                issued += 1
                nursery.start_soon(self.send_one, client, conv)
            await _sleep_until_ns(start + int(issued / rate * 1e9))

    async def _group(self, start: int, end: int) -> None:
        from ._client import open_client

        conv = self.group_conv
        assert conv is not None  # created in prepare
        async with open_client(self.plan.url, self._sender_token()) as sender:
            await _sleep_until_ns(start)
            async with trio.open_nursery() as nursery:
                await self._open_loop(nursery, [(sender, conv)], self.plan.rate, start, end)


async def _retrying(request: Callable[[], Awaitable[_T]], attempts: int = 30) -> _T:
    """``request()``, retried after ``retry_after`` while the node answers ``unavailable`` or
    ``rate_limited`` or does not answer in time (a node still busy with the previous phase's
    disconnects)."""
    from ._client_errors import RequestTimeout, ServerError

    for _ in range(attempts - 1):
        try:
            return await request()
        except RequestTimeout:
            continue
        except ServerError as exc:
            if exc.code not in ("unavailable", "rate_limited"):
                raise
            await trio.sleep(exc.retry_after or 1.0)
    return await request()


# ------------------------------------------------------------------------------------------------
# Output


def format_report(report: LoadReport) -> str:
    """The report as an aligned two-column table."""
    rows: list[tuple[str, str]] = [
        ("mode", report.mode),
        ("workers (processes)", str(report.workers)),
        ("connections", f"{report.connections:,}"),
        ("connect errors", f"{report.connect_errors:,}"),
        ("connect time (s)", f"{report.connect_s:.2f}"),
        ("handshakes/s", f"{report.handshakes_per_s:,.0f}"),
    ]
    if report.mode in ("chat", "group"):
        rows += [
            (
                "offered rate (msgs/s)",
                f"{report.offered_rate:,.0f}" if report.offered_rate else "closed loop",
            ),
            ("sent / acked / errors", f"{report.sent:,} / {report.acked:,} / {report.send_errors}"),
            ("delivered / expected", f"{report.delivered:,} / {report.expected:,}"),
            ("acked/s", f"{report.acked_per_s:,.0f}"),
            ("delivered/s", f"{report.delivered_per_s:,.0f}"),
            ("ack ms p50/p99/max", _triple(report.ack_ms)),
            ("deliver ms p50/p99/max", _triple(report.deliver_ms)),
            ("load generator CPU share", f"{report.loadgen_cpu_share:.0%}"),
        ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"error: {e}" for e in report.errors]
    return "\n".join(lines)


def _triple(p: dict[str, float]) -> str:
    if not p:
        return "-"
    return f"{p['p50']:.1f} / {p['p99']:.1f} / {p['max']:.1f}"
