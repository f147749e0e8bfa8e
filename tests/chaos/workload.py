"""The clients of a chaos run: users with one or two devices, each device a "process" of the
history (``c<N>``) that runs one operation at a time through Parley's client library and records
it as invoke → ok / fail / info, while a reader task records every ``msg`` the library hands to
the application as a ``deliver`` event.

What the devices do (choices from a per-device ``random.Random`` seeded by the run's seed):

- send to one of their conversations, each message with a new ``cmid``; a send whose outcome is
  unknown (timeout, connection closed, ``unavailable``, ``internal``) is retried later with the
  same ``cmid``, and every unacknowledged ``cmid`` is resent after a reconnect;
- cumulative ``delivered`` / ``read`` receipts at the device's cursor;
- whole-history reads, ``sync`` with the device's cursors, voluntary reconnects;
- group admins add and remove members, other members leave (groups keep at least three).

A slow consumer (a user that stops reading until the node closes it with 4008) and its flooder
are devices too; the nemesis drives them (see :class:`SlowConsumer`).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from gateway import (
    Closed,
    ConnectError,
    ConnectionClosedError,
    ConvInfo,
    ConvLeft,
    Msg,
    RequestTimeout,
    ServerError,
    Synced,
    open_client,
)
from gateway._client import Client

from ._history import HistoryWriter
from .node import PausableProxy

#: Error codes of a send that definitely stored nothing.
DEFINITE: Final = frozenset({"forbidden", "not_found", "too_large", "bad_request", "rate_limited"})
#: Seconds a request waits for its reply before its outcome is "unknown".
REQUEST_TIMEOUT: Final = 5.0
#: Seconds to connect and get ``welcome``. Below the library's 10 s default: a connection the
#: node drops before answering the upgrade (a listener killed mid-handshake) is only noticed
#: when this runs out (trio-websocket waits for the handshake after EOF; see docs/chaos.md).
CONNECT_TIMEOUT: Final = 5.0
#: Seconds a device keeps trying to reconnect before recording the reconnect as unknown.
RECONNECT_FOR: Final = 60.0
#: Times an unacknowledged cmid is retried before the device gives up on it.
MAX_RETRIES: Final = 30
#: Fewest members a group keeps (admins do not remove, members do not leave, below it).
MIN_GROUP: Final = 3
#: Size of the slow consumer's flood messages, in characters (max_body is 16384 bytes).
FLOOD_BODY: Final = 16_000


@dataclass
class ConvState:
    """What the clients believe about one conversation (updated from ``conv`` frames)."""

    conv: str
    kind: str
    members: set[str]
    admins: set[str]


@dataclass
class World:
    """State shared by the devices of a run: conversations, users, the history writer."""

    history: HistoryWriter
    url: Callable[[], str]
    token: Callable[[str, str], str]
    convs: dict[str, ConvState] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)
    #: Set while faults are allowed to happen ("chaos"), cleared in the quiet phase.
    chaos: bool = True

    def update(self, info: ConvInfo) -> None:
        state = self.convs.get(info.conv)
        if state is None:
            self.convs[info.conv] = ConvState(
                info.conv, info.kind, set(info.members), set(info.admins)
            )
        else:
            state.members = set(info.members)
            state.admins = set(info.admins)

    def convs_of(self, user: str) -> list[str]:
        return sorted(c for c, s in self.convs.items() if user in s.members)


def conv_value(info: ConvInfo) -> dict[str, Any]:
    return {"conv": info.conv, "members": sorted(info.members), "admins": sorted(info.admins)}


class Device:
    """One device of one user: a history process running one operation at a time.

    Use :meth:`open` (a context manager that connects and starts the reader), then :meth:`run`
    for the workload loop, or the individual operations.
    """

    def __init__(
        self,
        world: World,
        index: int,
        user: str,
        device: str,
        seed: int,
        *,
        url: Callable[[], str] | None = None,
    ) -> None:
        self.world = world
        self.url = url or world.url
        self.process = f"c{index}"
        self.user = user
        self.device = device
        self.rng = random.Random(f"{seed}-{self.process}")
        self.client: Client | None = None
        self.connected = False
        self.sent = 0
        #: cmid → (conv, body, attempts) of sends whose outcome is unknown.
        self.unacked: dict[str, tuple[str, str, int]] = {}
        self.wake = trio.Event()
        self._syncing = True
        #: Connected without a break since this history time (None while disconnected).
        self.up_since: float | None = None
        self.closes: list[int] = []

    # ------------------------------------------------------------------------------------------
    # Connection

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Device]:
        """Connect (retrying for :data:`RECONNECT_FOR` seconds until the node takes it), start
        the reader; close on exit."""
        h = self.world.history
        value = {"user": self.user, "device": self.device}
        op = h.invoke(self.process, "reconnect", value)
        deadline = trio.current_time() + RECONNECT_FOR
        async with contextlib.AsyncExitStack() as stack:
            while True:
                try:
                    client = await stack.enter_async_context(
                        open_client(
                            self.url(),
                            self.world.token(self.user, self.device),
                            request_timeout=REQUEST_TIMEOUT,
                            connect_timeout=CONNECT_TIMEOUT,
                        )
                    )
                    break
                except ConnectError as exc:
                    if trio.current_time() > deadline:
                        h.complete(self.process, "info", "reconnect", op, {"error": str(exc)})
                        raise
                    await trio.sleep(0.5)
            h.complete(self.process, "ok", "reconnect", op, value)
            self._connected()
            self.client = client
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, client)
                    yield self
                    nursery.cancel_scope.cancel()
            finally:
                self.client = None
                if self.connected:
                    self._disconnected(1000)

    def _connected(self) -> None:
        self.connected = True
        self.up_since = self.world.history.time
        self.world.history.event(
            self.process, "connected", {"user": self.user, "device": self.device}
        )

    def _disconnected(self, code: int | None) -> None:
        self.connected = False
        self.up_since = None
        if code is not None:
            self.closes.append(code)
        value: dict[str, Any] = {"user": self.user, "device": self.device, "code": code}
        self.world.history.event(self.process, "disconnected", value)

    async def _reader(self, client: Client) -> None:
        async for event in client.events:
            if isinstance(event, Msg):
                self._deliver(event, "sync" if self._syncing else "live")
            elif isinstance(event, Synced):
                if event.ref is None:
                    self._syncing = False
            elif isinstance(event, Closed):
                self._syncing = True  # what follows is the next connection's connect-time sync
                self.wake.set()
            elif isinstance(event, ConvInfo):
                self.world.update(event)
            elif isinstance(event, ConvLeft):
                state = self.world.convs.get(event.conv)
                if state is not None:
                    state.members.discard(self.user)
                    state.admins.discard(self.user)

    def _deliver(self, msg: Msg, via: str) -> None:
        self.world.history.event(
            self.process,
            "deliver",
            {
                "user": self.user,
                "device": self.device,
                "conv": msg.conv,
                "seq": msg.seq,
                "id": msg.id,
                "sender": msg.from_user,
                "cmid": msg.cmid,
                "via": via,
            },
        )

    def is_down(self) -> bool:
        client = self.client
        return client is None or client.closed is not None

    async def reconnect(self) -> bool:
        """Reconnect (closing the current connection if open); resend unacknowledged cmids.
        False when the node could not be reached within :data:`RECONNECT_FOR` seconds."""
        client = self.client
        assert client is not None
        closed = client.closed
        if self.connected:
            self._disconnected(closed.code if closed is not None else 1000)
        h = self.world.history
        value = {"user": self.user, "device": self.device}
        op = h.invoke(self.process, "reconnect", value)
        connected = False
        with trio.move_on_after(RECONNECT_FOR):
            while not connected:
                try:
                    await client.reconnect(attempts=1)
                except ConnectError:
                    await trio.sleep(0.3)
                    continue
                except ConnectionClosedError:  # the client itself is closed (end of the run)
                    h.complete(self.process, "info", "reconnect", op, {"error": "closed"})
                    return False
                connected = True
        if not connected:
            h.complete(self.process, "info", "reconnect", op, {"error": "timeout"})
            return False
        # Completed before the resends, which have their own timeouts: the reconnect is done
        # even if a resend then takes long (the op must complete exactly once).
        h.complete(self.process, "ok", "reconnect", op, value)
        self._connected()
        for cmid, (conv, body, _) in list(self.unacked.items()):
            await self.send(conv, body, cmid)
        return True

    async def ensure_connected(self) -> bool:
        if self.is_down():
            return await self.reconnect()
        return True

    # ------------------------------------------------------------------------------------------
    # Operations

    async def send(self, conv: str, body: str, cmid: str | None = None) -> str:
        """One send (a retry when ``cmid`` is given); its outcome: ok, fail or info."""
        assert self.client is not None
        if cmid is None:
            self.sent += 1
            cmid = f"{self.user}.{self.device}.{self.sent}"
        h = self.world.history
        value = {
            "user": self.user,
            "device": self.device,
            "conv": conv,
            "cmid": cmid,
            "body": body,
        }
        op = h.invoke(self.process, "send", value)
        try:
            ack = await self.client.send_message(conv, body, cmid)
        except ServerError as exc:
            if exc.code in DEFINITE:
                h.complete(self.process, "fail", "send", op, {"code": exc.code})
                self.unacked.pop(cmid, None)
                return "fail"
            h.complete(self.process, "info", "send", op, {"error": exc.code})
        except RequestTimeout:
            h.complete(self.process, "info", "send", op, {"error": "timeout"})
        except ConnectionClosedError as exc:
            h.complete(self.process, "info", "send", op, {"error": f"closed {exc.code}"})
        else:
            h.complete(
                self.process,
                "ok",
                "send",
                op,
                {"conv": ack.conv, "cmid": ack.cmid, "id": ack.id, "seq": ack.seq, "ts": ack.ts},
            )
            self.unacked.pop(cmid, None)
            return "ok"
        attempts = self.unacked.get(cmid, (conv, body, 0))[2] + 1
        if attempts < MAX_RETRIES:
            self.unacked[cmid] = (conv, body, attempts)
        else:
            self.unacked.pop(cmid, None)
        return "info"

    async def receipt(self, conv: str, status: str) -> None:
        assert self.client is not None
        seq = self.client.cursors.get(conv, 0)
        if seq <= 0:
            return
        h = self.world.history
        value = {"user": self.user, "device": self.device, "conv": conv, "seq": seq}
        op = h.invoke(self.process, "receipt", {**value, "status": status})
        try:
            await self.client.receipt(conv, seq, status)
        except ConnectionClosedError as exc:
            h.complete(self.process, "info", "receipt", op, {"error": f"closed {exc.code}"})
        else:
            h.complete(self.process, "ok", "receipt", op, {**value, "status": status})

    async def read_history(self, conv: str) -> list[list[Any]] | None:
        """Read ``conv`` whole, paging back to seq 1; the messages, or None on failure."""
        assert self.client is not None
        h = self.world.history
        op = h.invoke(self.process, "history", {"user": self.user, "conv": conv})
        pages: list[list[list[Any]]] = []
        before: int | None = None
        try:
            for _ in range(10_000):
                page = await self.client.history(conv, before=before, limit=200)
                rows: list[list[Any]] = [[m.seq, m.id, m.from_user, m.cmid] for m in page.messages]
                pages.append(rows)
                if not page.more or not rows:
                    break
                before = page.messages[0].seq
        except ServerError as exc:
            self._server_error(op, "history", exc)
            return None
        except (RequestTimeout, ConnectionClosedError) as exc:
            error = "timeout" if isinstance(exc, RequestTimeout) else f"closed {exc.code}"
            h.complete(self.process, "info", "history", op, {"error": error})
            return None
        messages = [row for rows in reversed(pages) for row in rows]
        h.complete(
            self.process,
            "ok",
            "history",
            op,
            {"user": self.user, "conv": conv, "messages": messages},
        )
        return messages

    def _server_error(self, op: int, f: str, exc: ServerError) -> None:
        """Complete ``op`` after an ``error`` reply: fail when definite, else info."""
        h = self.world.history
        if exc.code in DEFINITE:
            h.complete(self.process, "fail", f, op, {"code": exc.code})
        else:
            h.complete(self.process, "info", f, op, {"error": exc.code})

    async def sync(self) -> None:
        """``sync`` with this device's cursors; the messages it brings are deliveries."""
        assert self.client is not None
        known = self.client.cursors
        cursors = {conv: known.get(conv, 0) for conv in self.world.convs_of(self.user)}
        h = self.world.history
        op = h.invoke(
            self.process, "sync", {"user": self.user, "device": self.device, "convs": cursors}
        )
        try:
            result = await self.client.sync(cursors)
        except ServerError as exc:
            self._server_error(op, "sync", exc)
            return
        except (RequestTimeout, ConnectionClosedError) as exc:
            error = "timeout" if isinstance(exc, RequestTimeout) else f"closed {exc.code}"
            h.complete(self.process, "info", "sync", op, {"error": error})
            return
        for msg in result.messages:
            self._deliver(msg, "sync")
        h.complete(
            self.process,
            "ok",
            "sync",
            op,
            {"user": self.user, "device": self.device, "convs": dict(result.convs)},
        )

    async def conv_op(self, f: str, conv: str, call: Any, **args: Any) -> ConvInfo | None:
        """A membership change (``add_members``/``remove_members``/``leave``/``create_*``);
        ``args`` go into the invoke record."""
        h = self.world.history
        op = h.invoke(self.process, f, {"user": self.user, "conv": conv, **args})
        try:
            info = await call
        except ServerError as exc:
            self._server_error(op, f, exc)
            return None
        except (RequestTimeout, ConnectionClosedError) as exc:
            error = "timeout" if isinstance(exc, RequestTimeout) else f"closed {exc.code}"
            h.complete(self.process, "info", f, op, {"error": error})
            return None
        if isinstance(info, ConvInfo):
            self.world.update(info)
            h.complete(self.process, "ok", f, op, conv_value(info))
            return info
        # leave answered by conv.left: the user is out
        state = self.world.convs.get(conv)
        if state is not None:
            state.members.discard(self.user)
            state.admins.discard(self.user)
            value = {"conv": conv, "members": sorted(state.members), "admins": sorted(state.admins)}
        else:
            value = {"conv": conv, "members": [], "admins": []}
        h.complete(self.process, "ok", f, op, value)
        return None

    async def leave(self, conv: str) -> ConvInfo | None:
        assert self.client is not None
        client = self.client

        async def go() -> None:
            await client.leave(conv)

        return await self.conv_op("leave", conv, go())

    # ------------------------------------------------------------------------------------------
    # The loop

    async def run(self, stop: trio.Event, *, membership: bool = True) -> None:
        """Random operations until ``stop`` is set (the current one finishes first)."""
        while not stop.is_set():
            if not await self.ensure_connected():
                continue
            # e.g. a receipt on a connection that just closed: reconnect next time round
            with contextlib.suppress(ConnectionClosedError):
                await self.step(membership=membership)
            with trio.move_on_after(self.rng.uniform(0.1, 0.4)):
                await self.wake.wait()
            self.wake = trio.Event()

    async def run_passive(self, stop: trio.Event) -> None:
        """Stay connected (while reading) and acknowledge deliveries once a second, until
        ``stop``: the slow consumer and its flooder between floods."""
        while not stop.is_set():
            if not await self.ensure_connected():
                continue
            with contextlib.suppress(ConnectionClosedError):
                for conv in self.world.convs_of(self.user):
                    await self.receipt(conv, "delivered")
            with trio.move_on_after(1.0):
                await self.wake.wait()
            self.wake = trio.Event()

    async def step(self, *, membership: bool) -> None:
        rng = self.rng
        convs = self.world.convs_of(self.user)
        roll = rng.random()
        if self.unacked and roll < 0.3:
            cmid, (conv, body, _) = sorted(self.unacked.items())[0]
            await self.send(conv, body, cmid)
            return
        if not convs:
            await trio.sleep(0.2)
            return
        conv = rng.choice(convs)
        if roll < 0.62:
            await self.send(conv, f"{self.user}/{self.device} says {rng.randrange(10**6)}")
        elif roll < 0.77:
            await self.receipt(conv, rng.choice(("delivered", "read")))
        elif roll < 0.82:
            await self.read_history(conv)
        elif roll < 0.85:
            await self.sync()
        elif roll < 0.87 and self.world.chaos:
            await self.reconnect()
        elif membership and roll < 0.95 and self.world.chaos:
            await self.change_membership(rng)
        else:
            await self.send(conv, f"{self.user}/{self.device} adds {rng.randrange(10**6)}")

    async def change_membership(self, rng: random.Random) -> None:
        assert self.client is not None
        client = self.client
        groups = [
            s for s in self.world.convs.values() if s.kind == "group" and self.user in s.members
        ]
        if not groups:
            return
        state = rng.choice(sorted(groups, key=lambda s: s.conv))
        if self.user in state.admins:
            outside = [u for u in self.world.users if u not in state.members]
            removable = sorted(state.members - state.admins)
            if outside and (rng.random() < 0.6 or len(state.members) <= MIN_GROUP):
                user = rng.choice(sorted(outside))
                await self.conv_op(
                    "add_members", state.conv, client.add_members(state.conv, [user]), users=[user]
                )
            elif removable and len(state.members) > MIN_GROUP:
                user = rng.choice(removable)
                await self.conv_op(
                    "remove_members",
                    state.conv,
                    client.remove_members(state.conv, [user]),
                    users=[user],
                )
        elif len(state.members) > MIN_GROUP and rng.random() < 0.5:
            await self.leave(state.conv)


# ------------------------------------------------------------------------------------------------
# The plan: users, devices, conversations


@dataclass(frozen=True)
class Plan:
    """Who takes part: users, their devices, the direct pairs and the groups (admin, members)."""

    users: tuple[str, ...]
    devices: tuple[tuple[str, str], ...]
    directs: tuple[tuple[str, str], ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...]


def make_plan(seed: int, clients: int) -> Plan:
    """The run's users (``clients`` of them, at least 4), a third of them with two devices,
    each in two or three direct conversations and most in one of the groups."""
    rng = random.Random(f"{seed}-plan")
    count = max(4, clients)
    users = tuple(f"u{i}" for i in range(count))
    devices: list[tuple[str, str]] = []
    for i, user in enumerate(users):
        devices.append((user, "d0"))
        if i % 3 == 0:
            devices.append((user, "d1"))
    pairs: set[tuple[str, str]] = set()
    for user in users:
        for other in rng.sample([u for u in users if u != user], 2):
            pairs.add((min(user, other), max(user, other)))
    groups = []
    for g in range(max(1, count // 4)):
        admin = users[(g * 4) % count]
        others = [u for u in users if u != admin]
        members = tuple(sorted(rng.sample(others, min(len(others), rng.randint(3, 5)))))
        groups.append((admin, members))
    return Plan(users, tuple(devices), tuple(sorted(pairs)), tuple(groups))


async def create_conversations(plan: Plan, devices: Iterable[Device]) -> None:
    """The plan's direct conversations and groups, created by the first device of a member."""
    first: dict[str, Device] = {}
    for device in devices:
        first.setdefault(device.user, device)
    for a, b in plan.directs:
        dev = first[a]
        assert dev.client is not None
        await dev.conv_op("create_direct", "", dev.client.create_direct(b), with_user=b)
    for index, (admin, members) in enumerate(plan.groups):
        dev = first[admin]
        assert dev.client is not None
        await dev.conv_op(
            "create_group",
            "",
            dev.client.create_group(f"group {index}", members),
            members=list(members),
        )


class SlowConsumer:
    """A user (``sloth``) whose device stops reading, and a user (``flood``) who floods their
    direct conversation with large messages until the node closes the sloth's connection with
    4008 (seen in the node's log), then the sloth reads again and reconnects.

    The sloth connects through ``proxy`` (a :class:`~tests.chaos.node.PausableProxy`): pausing
    it is what "stops reading" means, with small buffers in between.
    """

    def __init__(self, sloth: Device, flooder: Device, proxy: PausableProxy) -> None:
        self.sloth = sloth
        self.flooder = flooder
        self.proxy = proxy
        self.conv = ""

    async def setup(self) -> None:
        assert self.flooder.client is not None
        info = await self.flooder.conv_op(
            "create_direct",
            "",
            self.flooder.client.create_direct(self.sloth.user),
            with_user=self.sloth.user,
        )
        if info is not None:
            self.conv = info.conv

    async def run(
        self, closed_4008: Callable[[], bool], *, limit: int = 800, seconds: float = 20.0
    ) -> dict[str, Any]:
        """Stop reading, flood, wait for 4008, read again; the fault's detail."""
        sloth, flooder = self.sloth, self.flooder
        detail: dict[str, Any] = {"user": sloth.user, "conv": self.conv}
        if not self.conv:
            detail["skipped"] = "no conversation"
            return detail
        with trio.move_on_after(10):  # the sloth must be connected for the node to cut it off
            while sloth.is_down():  # noqa: ASYNC110 (the client library has no event)
                await trio.sleep(0.1)
        closes = len(sloth.closes)
        self.proxy.pause()
        sent = 0
        seen = False
        with trio.move_on_after(seconds):
            while sent < limit:
                if not await flooder.ensure_connected():
                    break
                body = f"flood {sent} " + "x" * FLOOD_BODY
                await flooder.send(self.conv, body)
                sent += 1
                if sent % 10 == 0 and closed_4008():
                    seen = True
                    break
        self.proxy.resume()
        detail.update({"flooded": sent, "closed_4008": seen or closed_4008()})
        with trio.move_on_after(10):
            while not sloth.is_down():  # noqa: ASYNC110 (the client library has no event)
                await trio.sleep(0.1)
        detail["close_codes"] = sloth.closes[closes:]
        return detail
