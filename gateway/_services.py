"""What every actor of the node shares: settings, limits, the storage handle, and the names by
which actors find each other (find-or-start through the node's registry)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from actors import CallError, NameTakenError, Node, NoProcError, Ref, is_clean_exit
from config import Settings
from storage import Failpoints, Storage, Unavailable, sqlite_shard_urls
from supervisors import Ignore, StartChildError, start_child

from ._metrics import Metrics
from ._validate import Limits

if TYPE_CHECKING:
    from ._chaos import Monkey

#: Registered names of the node's fixed actors.
PRESENCE: Final = "presence"
CONVERSATIONS: Final = "conversations"
SESSIONS: Final = "sessions"
CONNECTIONS: Final = "connections"
LISTENER: Final = "gateway.listener"
CHAOS: Final = "chaos"

#: Seconds a client is told to wait before retrying when storage is down.
RETRY_AFTER_S: Final = 1.0


def conv_name(conv: str) -> str:
    """The registered name of a conversation's actor."""
    return f"conv:{conv}"


#: The prefix of every session actor's registered name.
SESSION_PREFIX: Final = "session:"


def session_name(user: str) -> str:
    """The registered name of a user's session actor."""
    return SESSION_PREFIX + user


def now_ms() -> int:
    """The server clock for ``ts`` fields: integer milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Services:
    """The node's shared, single-loop state, handed to every actor of the tree.

    ``store_slot`` is the storage facade, bound to the node by the root supervisor;
    ``draining`` is set when a graceful shutdown begins; ``metrics`` is the node's own
    Prometheus registry and instruments; ``failpoints`` the node's storage failpoints (passed to
    its shard actors, armed through the chaos admin ops); ``chaos`` the chaos monkey while its
    actor runs (None otherwise); ``port`` the listener's port once it has bound one.
    """

    settings: Settings
    secret: bytes
    limits: Limits = field(init=False)
    metrics: Metrics = field(init=False)
    store_slot: Storage | None = None
    draining: bool = False
    failpoints: Failpoints = field(default_factory=Failpoints)
    chaos: Monkey | None = None
    #: The port the listener bound first: with ``server.port`` 0, a restarted listener binds
    #: it again, so clients find the node where it was.
    port: int | None = None

    def __post_init__(self) -> None:
        lim = self.settings.limits
        self.limits = Limits(
            max_frame=lim.max_frame,
            max_body=lim.max_body,
            max_group=lim.max_group,
            bad_frames=lim.bad_frames,
        )
        self.metrics = Metrics()

    @property
    def store(self) -> Storage:
        """The storage facade (the ``Backend`` methods, served by the shard actors)."""
        store = self.store_slot
        if store is None:
            raise Unavailable("storage is not running")
        return store

    def shard_urls(self) -> list[str]:
        """One URL per storage shard. Several SQLite shards get a file each in the data
        directory (one file shared by many writers would serialise them)."""
        storage = self.settings.storage
        urls = storage.shard_urls()
        if storage.urls is None and storage.shards > 1 and storage.url.startswith("sqlite"):
            return sqlite_shard_urls(self.settings.server.data_dir, storage.shards)
        return list(urls)


async def find_or_start(node: Node, supervisor: str, name: str, *args: Any) -> Ref:
    """The live actor registered as ``name``, started under the dynamic supervisor registered as
    ``supervisor`` (with ``args``) when there is none. The child registers ``name`` itself in its
    ``init``, so two concurrent starters end with the same actor. Checkpoints.

    Raises:
        NoProcError: the supervisor is not running.
        StartChildError: the child's init failed for another reason than a taken name (or its
            :class:`~supervisors.Ignore` of one).
    """
    for _ in range(8):
        ref = node.whereis(name)
        if ref is not None and ref.alive:
            return ref
        sup = node.whereis(supervisor)
        if sup is None:
            raise NoProcError(f"{supervisor} is not running")
        try:
            return await start_child(sup, *args)
        except StartChildError as exc:
            if not isinstance(exc.reason, NameTakenError | Ignore):
                raise
    raise NoProcError(f"{name} could not be found or started")


def gone(exc: BaseException) -> bool:
    """Whether a failed call means the target stopped cleanly (passivated) and may be started
    again: retry through :func:`find_or_start`."""
    if isinstance(exc, NoProcError):
        return True
    return (
        isinstance(exc, CallError)
        and not isinstance(exc, TimeoutError)
        and (is_clean_exit(exc.reason))
    )
