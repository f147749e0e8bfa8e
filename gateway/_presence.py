"""The presence actor: who is online, when each user was last seen, and which connections
want to hear about whom.

It also stores last-seen times, in batches: the ``Offline`` times of ``LAST_SEEN_FLUSH`` seconds
are handed together to a linked writer actor, which stores them in one ``touch_users`` call
(one transaction per shard), so that thousands of users leaving at once are a few writes, not
one transaction each. Presence itself never waits on storage (the writer does); subscribers
read storage for users who have not been online since the node started. On shutdown presence
stores what it holds before it stops (storage stops after it).

Its state is soft: a restarted presence casts ``Announce`` to every session, and the sessions
(and their connections) tell it again who is online, who left when, and who watches whom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import structlog
import trio

from actors import Actor, Context, Down, Exit, From, MonitorRef, Ref, Timer
from storage import Storage, StorageError

from ._frames import Presence
from ._messages import Announce, Offline, Online, Push, Subscribe
from ._services import PRESENCE, SESSION_PREFIX, Services

log = structlog.get_logger("gateway")

#: Seconds last-seen times are gathered before they are written together.
LAST_SEEN_FLUSH: Final = 0.5
#: Users whose last-seen time presence keeps in memory (the most recent ones): beyond it a
#: subscriber's answer comes from storage, which holds every time. Bounds presence's memory on
#: a node that sees millions of users come and go.
LAST_SEEN_CACHE: Final = 100_000
#: Seconds ``terminate`` may spend storing the last batch.
LAST_SEEN_FINAL_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class _Flush:
    """Time to hand the gathered last-seen times to the writer."""


@dataclass(frozen=True, slots=True)
class _LastSeen:
    """To the writer: store these times (user → ms)."""

    seen: dict[str, int]


def _merge(into: dict[str, int], seen: dict[str, int]) -> None:
    for user, ts in seen.items():
        if ts > into.get(user, -1):
            into[user] = ts


async def _last_seen_writer(ctx: Context, store: Storage) -> None:
    """Store the batches presence hands over, one ``touch_users`` at a time; batches that
    queued up meanwhile go together into the next call."""
    while True:
        message = await ctx.receive()
        seen = dict(message.seen)
        while ctx.mailbox_length:
            _merge(seen, (await ctx.receive()).seen)
        await _store(store, seen)


async def _store(store: Storage, seen: dict[str, int]) -> None:
    try:
        await store.touch_users(seen)
    except StorageError as exc:
        log.warning("last_seen_not_stored", users=len(seen), error=repr(exc))


class PresenceActor(Actor):
    """State: online users, last-seen times (ms) of users who went offline, and subscriptions
    (user → subscribed connections; each connection monitored to drop its subscriptions)."""

    _services: Services
    _online: set[str]
    _last_seen: dict[str, int]
    _subscribers: dict[str, set[Ref]]
    _watching: dict[Ref, tuple[MonitorRef, set[str]]]
    _unstored: dict[str, int]  # last-seen times not yet handed to the writer
    _flush: Timer | None
    _writer: Ref

    def init(self, services: Services) -> None:
        self.ctx.register(PRESENCE)
        self.ctx.trap_exit = True  # to store the last batch on shutdown
        self._services = services
        self._online = set()
        self._last_seen = {}
        self._subscribers = {}
        self._watching = {}
        self._unstored = {}
        self._flush = None
        self._writer = self.ctx.spawn_link(_last_seen_writer, services.store)
        # A restarted presence knows nobody: the sessions tell it again who is online (and
        # their connections what they watch). On a fresh node there are none yet.
        node = self.ctx.node
        announce = Announce()
        for name in node.registered():
            if name.startswith(SESSION_PREFIX):
                ref = node.whereis(name)
                if ref is not None:
                    ref.cast(announce)

    def handle_cast(self, message: Any) -> None:
        if type(message) is Online:
            self._online.add(message.user)
            self._notify(Presence(user=message.user, status="online"))
        elif type(message) is Offline:
            self._online.discard(message.user)
            last_seen = self._last_seen
            last_seen.pop(message.user, None)  # re-inserted as the most recent
            last_seen[message.user] = message.ts
            if len(last_seen) > LAST_SEEN_CACHE:
                del last_seen[next(iter(last_seen))]  # the least recently seen
            self._unstored[message.user] = message.ts
            if self._flush is None:
                self._flush = self.ctx.send_after(LAST_SEEN_FLUSH, self.ref, _Flush())
            self._notify(Presence(user=message.user, status="offline", last_seen=message.ts))
        else:
            raise TypeError(f"unexpected cast {message!r}")

    def _notify(self, event: Presence) -> None:
        subscribers = self._subscribers.get(event.user)
        if subscribers:
            push = Push(event)
            for conn in subscribers:
                conn.send(push)

    def handle_call(self, request: Any, from_: From) -> Any:
        if type(request) is Subscribe:
            conn = request.conn
            watched = self._watching.get(conn)
            if watched is None:
                watched = (self.ctx.monitor(conn), set())
                self._watching[conn] = watched
            for user in request.users:
                watched[1].add(user)
                self._subscribers.setdefault(user, set()).add(conn)
            return {u: (u in self._online, self._last_seen.get(u)) for u in request.users}
        raise TypeError(f"unexpected call {request!r}")

    def handle_info(self, message: Any) -> None:
        kind = type(message)
        if kind is _Flush:
            self._flush = None
            if self._unstored:
                self._writer.send(_LastSeen(self._unstored))
                self._unstored = {}
        elif kind is Exit:
            # The writer died (a bug, or killed) or our parent told us to stop: stop with it.
            self.stop(message.reason)
        elif kind is Down:
            watched = self._watching.pop(message.ref, None)
            if watched is not None:
                for user in watched[1]:
                    subscribers = self._subscribers.get(user)
                    if subscribers is not None:
                        subscribers.discard(message.ref)
                        if not subscribers:
                            del self._subscribers[user]
        else:
            super().handle_info(message)

    async def terminate(self, reason: object) -> None:
        if self._flush is not None:
            self._flush.cancel()
        if self._unstored:
            with trio.move_on_after(LAST_SEEN_FINAL_TIMEOUT):
                await _store(self._services.store, self._unstored)

    def format_status(self) -> dict[str, object]:
        return {
            "online": len(self._online),
            "last_seen_unstored": len(self._unstored),
            "last_seen_cached": len(self._last_seen),
            "subscribed_users": len(self._subscribers),
            "subscribers": len(self._watching),
        }
