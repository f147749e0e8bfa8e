"""The chat node's supervision tree (see DESIGN.md):

    root (one_for_one)
    ├── storage (one_for_one, backoff) ─ the storage keeper
    ├── presence
    ├── conversations (dynamic) ─ one actor per active conversation (transient, passivated)
    ├── sessions (dynamic) ─ one actor per connected user (temporary)
    └── gateway (rest_for_one) ─ listener, then connections (dynamic, one per WebSocket)

The admin endpoint (the inspector's socket) will be the root's last child.
"""

from __future__ import annotations

from typing import Any, Final

from actors import Overflow
from supervisors import (
    BRUTAL_KILL,
    Backoff,
    ChildSpec,
    DynamicSupervisor,
    Restart,
    Strategy,
    Supervisor,
    SupervisorFlags,
)

from ._connection import CLOSE_TIMEOUT, connection_actor
from ._conversation import ConversationActor
from ._keeper import StorageKeeper
from ._listener import listener_actor
from ._presence import PresenceActor
from ._services import CONNECTIONS, CONVERSATIONS, SESSIONS, Services
from ._session import SessionActor

#: Seconds the whole tree has to stop before it is killed.
ROOT_SHUTDOWN: Final = 30.0


class NamedDynamicSupervisor(DynamicSupervisor):
    """A dynamic supervisor registered under a name, so that find-or-start can reach it.

    Start it with ``(name, flags, spec)``.
    """

    def configure(self, *args: Any) -> tuple[SupervisorFlags, ChildSpec]:
        name, flags, spec = args
        self._registered_as = name
        return flags, spec

    def init(self, *args: Any) -> None:
        super().init(*args)
        self.ctx.register(self._registered_as)


def _dynamic(name: str, flags: SupervisorFlags, spec: ChildSpec) -> ChildSpec:
    return ChildSpec(id=name, start=NamedDynamicSupervisor, args=(name, flags, spec))


def node_spec(services: Services) -> ChildSpec:
    """The root child spec of a node sharing ``services``."""
    # Per-entity children come and go by the thousand: their crashes should not take the
    # whole group down at OTP's default intensity (1 in 5 s).
    busy = SupervisorFlags(intensity=100, period=5.0)
    queue = services.settings.limits.outgoing_queue
    storage = ChildSpec(
        id="storage",
        start=Supervisor,
        args=(
            SupervisorFlags(intensity=5, period=30.0),
            [
                ChildSpec(
                    id="keeper",
                    start=StorageKeeper,
                    args=(services,),
                    backoff=Backoff(min=0.2, max=10.0),
                    shutdown=10.0,
                )
            ],
        ),
    )
    conversations = _dynamic(
        CONVERSATIONS,
        busy,
        ChildSpec(
            id="conversation",
            start=ConversationActor,
            args=(services,),
            restart=Restart.TRANSIENT,
            options={"hibernate_after": 5.0},
        ),
    )
    sessions = _dynamic(
        SESSIONS,
        busy,
        ChildSpec(
            id="session",
            start=SessionActor,
            args=(services,),
            restart=Restart.TEMPORARY,
            shutdown=BRUTAL_KILL,
            options={"hibernate_after": 5.0},
        ),
    )
    connections = _dynamic(
        CONNECTIONS,
        busy,
        ChildSpec(
            id="connection",
            start=connection_actor,
            args=(services,),
            restart=Restart.TEMPORARY,
            shutdown=CLOSE_TIMEOUT + 1.0,
            options={"mailbox_size": 2 * queue + 64, "overflow": Overflow.EXIT},
        ),
    )
    gateway = ChildSpec(
        id="gateway",
        start=Supervisor,
        args=(
            SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=3, period=10.0),
            [
                ChildSpec(id="listener", start=listener_actor, args=(services,), shutdown=5.0),
                connections,
            ],
        ),
    )
    presence = ChildSpec(id="presence", start=PresenceActor, args=(services,))
    return ChildSpec(
        id="root",
        start=Supervisor,
        args=(
            SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=3, period=10.0),
            [storage, presence, conversations, sessions, gateway],
        ),
        shutdown=ROOT_SHUTDOWN,
    )
