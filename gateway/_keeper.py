"""The storage keeper: opens the shards' backends and hands the node a :class:`Store`.

It stands in for the storage supervisor's per-shard actors until ``storage.Storage`` lands.
"""

from __future__ import annotations

import structlog

from actors import Actor
from storage import ShardedStorage

from ._services import STORAGE, Services
from ._store import Store

log = structlog.get_logger("gateway")


class StorageKeeper(Actor):
    """Owns the open backends for as long as it lives. Its ``init`` fails (``Unavailable``) when
    a database cannot be reached, and its supervisor retries with backoff."""

    _services: Services
    _sharded: ShardedStorage

    async def init(self, services: Services) -> None:
        self._services = services
        urls = services.settings.storage.shard_urls()
        self._sharded = ShardedStorage.from_urls(urls)
        await self._sharded.open()
        self.ctx.trap_exit = True  # so terminate closes the backends on shutdown
        self.ctx.register(STORAGE)
        services.store_slot = Store(self._sharded)
        log.info("storage_open", shards=len(urls), backend=self._sharded.backends[0].name)

    async def terminate(self, reason: object) -> None:
        self._services.store_slot = None
        await self._sharded.aclose()

    def format_status(self) -> dict[str, object]:
        return {"shards": len(self._sharded.backends)}
