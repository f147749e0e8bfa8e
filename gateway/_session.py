"""The session actor: one per connected user. It knows the user's devices (their connection
actors), fans events out to them, shares the user's send-rate bucket, and tells presence when the
user comes and goes (presence stores the last-seen time, in batches), again when a restarted
presence asks (``Announce``). Idle without devices for ``LINGER`` seconds, it stops ``normal``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import structlog

from actors import Actor, Down, From, MonitorRef, Ref

from ._frames import CloseCode
from ._messages import Announce, CloseConnection, Deliver, Offline, Online, Push, Register
from ._ratelimit import TokenBucket
from ._services import PRESENCE, Services, now_ms, session_name

log = structlog.get_logger("gateway")

#: Seconds a session without devices waits before stopping.
LINGER: Final = 30.0


@dataclass(frozen=True, slots=True)
class _Linger:
    pass


class SessionActor(Actor):
    """State: device → connection ref, the monitors on them, and the rate bucket."""

    _services: Services
    _user: str
    _devices: dict[str, Ref]
    _monitors: dict[MonitorRef, str]
    _bucket: TokenBucket
    _offline_at: int | None  # ms the last device left, while none is connected

    def init(self, services: Services, user: str) -> None:
        self.ctx.register(session_name(user))
        self._services = services
        self._user = user
        self._devices = {}
        self._monitors = {}
        self._offline_at = None
        limits = services.settings.limits
        self._bucket = TokenBucket(limits.send_rate, limits.send_burst, self.ctx.node.now)

    def handle_call(self, request: Any, from_: From) -> Any:
        if type(request) is Register:
            old = self._devices.get(request.device)
            if old is not None and old != request.conn:
                old.send(CloseConnection(CloseCode.REPLACED, "replaced by a new connection"))
            first = not self._devices
            self._devices[request.device] = request.conn
            self._offline_at = None
            self._monitors[self.ctx.monitor(request.conn)] = request.device
            if first:
                self._presence(Online(self._user))
            return self._bucket
        raise TypeError(f"unexpected call {request!r}")

    def handle_cast(self, message: Any) -> None:
        if type(message) is Deliver:
            push = Push(message.event)
            for device, conn in self._devices.items():
                if device != message.exclude_device:
                    conn.send(push)
            return
        if type(message) is Announce:
            # Presence restarted with empty state: tell it again whether the user is online
            # (or when it left: a time cast while presence was down would be lost), and let
            # each connection subscribe again.
            if self._devices:
                self._presence(Online(self._user))
                for conn in self._devices.values():
                    conn.send(message)
            elif self._offline_at is not None:
                self._presence(Offline(self._user, self._offline_at))
            return
        raise TypeError(f"unexpected cast {message!r}")

    def handle_info(self, message: Any) -> None:
        if type(message) is Down:
            device = self._monitors.pop(message.monitor, None)
            if device is None or self._devices.get(device) != message.ref:
                return  # a replaced connection
            del self._devices[device]
            if not self._devices:
                self._offline_at = now_ms()
                self._presence(Offline(self._user, self._offline_at))
                self.ctx.send_after(LINGER, self.ref, _Linger())
        elif type(message) is _Linger:
            if not self._devices and not self.ctx.mailbox_length:
                self.stop()
        else:
            log.warning("unexpected_info", actor=repr(self.ref), message=repr(message)[:200])

    def _presence(self, message: object) -> None:
        presence = self.ctx.node.whereis(PRESENCE)
        if presence is not None:
            presence.cast(message)

    def format_status(self) -> dict[str, object]:
        return {"user": self._user, "devices": sorted(self._devices)}
