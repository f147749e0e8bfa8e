"""N shard backends behind one ring: build them from URLs, open and close them together, and
route conversation-scoped calls by conversation id, user-scoped calls by user id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio

from ._backend import Backend
from ._cassandra import CassandraBackend
from ._records import direct_key
from ._ring import DEFAULT_VNODES, HashRing
from ._sql import SqlBackend
from ._url import CassandraUrl, parse_url

__all__ = ["ShardedStorage", "backend_from_url", "sqlite_shard_urls"]


def backend_from_url(url: str) -> Backend:
    """An unopened backend for ``url``. Raises ``ConfigError`` for a bad URL (see ``parse_url``)."""
    parsed = parse_url(url)
    if isinstance(parsed, CassandraUrl):
        return CassandraBackend(parsed)
    return SqlBackend(parsed)


def sqlite_shard_urls(
    data_dir: str | Path, shards: int, *, synchronous: str = "NORMAL"
) -> list[str]:
    """The default layout: one SQLite file per shard, ``DATA/shard-{i}.db``."""
    root = Path(data_dir).absolute()
    return [
        f"sqlite+aiosqlite:///{root / f'shard-{i}.db'}?synchronous={synchronous}"
        for i in range(shards)
    ]


class ShardedStorage:
    """Backends for shards ``0..N-1`` (each may be a different database) and their ring.

    ``for_conv(conv)`` is the backend holding a conversation's messages, metadata and members;
    ``for_user(user)`` the one holding a user's conversation list, watermarks and last seen;
    ``for_direct(a, b)`` the one holding the pair's direct conversation (routed by
    ``direct_key(a, b)``, which should also be that conversation's id). Changing the shard count
    changes the ring: see docs/storage.md for moving data when adding a shard.
    """

    def __init__(self, backends: Sequence[Backend], *, vnodes: int = DEFAULT_VNODES) -> None:
        if not backends:
            raise ValueError("ShardedStorage needs at least one backend")
        self.backends: tuple[Backend, ...] = tuple(backends)
        self.ring = HashRing(len(self.backends), vnodes=vnodes)

    @classmethod
    def from_urls(cls, urls: Sequence[str], *, vnodes: int = DEFAULT_VNODES) -> ShardedStorage:
        """Unopened storage with one backend per URL (shard ``i`` is ``urls[i]``)."""
        return cls([backend_from_url(u) for u in urls], vnodes=vnodes)

    def for_conv(self, conv: str) -> Backend:
        return self.backends[self.ring.shard_for(conv)]

    def for_user(self, user: str) -> Backend:
        return self.backends[self.ring.shard_for(user)]

    def for_direct(self, user_a: str, user_b: str) -> Backend:
        return self.backends[self.ring.shard_for(direct_key(user_a, user_b))]

    async def open(self) -> None:
        """Open every shard, concurrently; if one fails, close those opened and re-raise."""
        try:
            async with anyio.create_task_group() as tg:
                for backend in self.backends:
                    tg.start_soon(backend.open)
        except BaseException as exc:
            await self.aclose()
            # One failing shard: raise its own error, not a group of one.
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                raise exc.exceptions[0] from None
            raise

    async def aclose(self) -> None:
        """Close every shard (always, even when cancelled)."""
        with anyio.CancelScope(shield=True):
            for backend in self.backends:
                await backend.aclose()

    async def __aenter__(self) -> ShardedStorage:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
