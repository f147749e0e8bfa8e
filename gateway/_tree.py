"""The chat node's supervision tree (see DESIGN.md):

root (one_for_one)
├── metrics ─ /metrics and /healthz (first, so it reports a drain to the end)
├── storage (one_for_one, backoff) ─ one storage shard actor per shard
├── presence
├── conversations (dynamic) ─ one actor per active conversation (transient, passivated)
├── sessions (dynamic) ─ one actor per connected user (temporary)
├── gateway (rest_for_one) ─ listener, then connections (dynamic, one per WebSocket)
├── chaos ─ the chaos monkey: idle unless driven through the admin endpoint
└── admin ─ the inspector's endpoint (a Unix socket, optionally loopback TCP; last, so it
    is stopped first and sees the whole tree while it runs)
"""

from __future__ import annotations

from typing import Any, Final

from actors import Overflow
from storage import ShardOptions, Storage, storage_child_spec
from supervisors import (
    BRUTAL_KILL,
    ChildSpec,
    DynamicSupervisor,
    Restart,
    Strategy,
    Supervisor,
    SupervisorFlags,
)

from ._admin import admin_actor
from ._chaos import chaos_actor
from ._connection import CLOSE_TIMEOUT, connection_actor
from ._conversation import ConversationActor
from ._listener import listener_actor
from ._observe import metrics_actor
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


class NodeRoot(Supervisor):
    """The root supervisor: binds the storage facade to its node, then starts the tree.

    Start it with ``(services,)``.
    """

    def configure(self, *args: Any) -> tuple[SupervisorFlags, list[ChildSpec]]:
        (services,) = args
        services.store_slot = Storage(self.ctx.node, shards=services.settings.storage.shards)
        return _children(services)


def node_spec(services: Services) -> ChildSpec:
    """The root child spec of a node sharing ``services``."""
    return ChildSpec(id="root", start=NodeRoot, args=(services,), shutdown=ROOT_SHUTDOWN)


def _children(services: Services) -> tuple[SupervisorFlags, list[ChildSpec]]:
    # Per-entity children come and go by the thousand: their crashes should not take the
    # whole group down at OTP's default intensity (1 in 5 s).
    busy = SupervisorFlags(intensity=100, period=5.0)
    queue = services.settings.limits.outgoing_queue
    storage = storage_child_spec(
        services.shard_urls(), ShardOptions(failpoints=services.failpoints)
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
    flags = SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=3, period=10.0)
    children = [storage, presence, conversations, sessions, gateway]
    if services.settings.metrics.enabled:
        metrics = ChildSpec(id="metrics", start=metrics_actor, args=(services,), shutdown=1.0)
        children.insert(0, metrics)
    children.append(ChildSpec(id="chaos", start=chaos_actor, args=(services,), shutdown=1.0))
    children.append(ChildSpec(id="admin", start=admin_actor, args=(services,), shutdown=1.0))
    return flags, children
