"""The presence actor: who is online, when each user was last seen, and which connections
want to hear about whom. It never waits on storage: sessions record last-seen times there, and
subscribers read it for users who have not been online since the node started."""

from __future__ import annotations

from typing import Any

from actors import Actor, Down, From, MonitorRef, Ref

from ._frames import Presence
from ._messages import Offline, Online, Push, Subscribe
from ._services import PRESENCE, Services


class PresenceActor(Actor):
    """State: online users, last-seen times (ms) of users who went offline, and subscriptions
    (user → subscribed connections; each connection monitored to drop its subscriptions)."""

    _online: set[str]
    _last_seen: dict[str, int]
    _subscribers: dict[str, set[Ref]]
    _watching: dict[Ref, tuple[MonitorRef, set[str]]]

    def init(self, services: Services) -> None:
        self.ctx.register(PRESENCE)
        self._online = set()
        self._last_seen = {}
        self._subscribers = {}
        self._watching = {}

    def handle_cast(self, message: Any) -> None:
        if type(message) is Online:
            self._online.add(message.user)
            self._notify(Presence(user=message.user, status="online"))
        elif type(message) is Offline:
            self._online.discard(message.user)
            self._last_seen[message.user] = message.ts
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
        if type(message) is Down:
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

    def format_status(self) -> dict[str, object]:
        return {
            "online": len(self._online),
            "subscribed_users": len(self._subscribers),
            "subscribers": len(self._watching),
        }
