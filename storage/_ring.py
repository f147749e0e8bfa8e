"""A consistent-hash ring with virtual nodes: keys (conversation or user ids) to shard indexes."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

__all__ = ["DEFAULT_VNODES", "HashRing"]

DEFAULT_VNODES = 150


def _point(text: str) -> int:
    # A stable hash (the same in every process and Python version, unlike hash()): 64 bits of
    # blake2b, which is plenty to spread 150 points per shard without collisions in practice.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Maps keys to shard indexes; growing by one shard moves ~1/(N+1) of the keys.

    ``shards`` is a count N (shards ``0..N-1``) or the shard indexes themselves, so a ring without
    one shard can be built (then only that shard's keys move). Each shard ``s`` owns ``vnodes``
    points ``hash(f"{s}#{i}")`` on a 64-bit circle; a key belongs
    to the shard of the first point at or after ``hash(key)``. The mapping depends only on the
    shard set and ``vnodes``, so every node computes the same one. Raises ``ValueError`` for no
    shards, duplicate or negative indexes, or ``vnodes`` below 1.
    """

    __slots__ = ("_owners", "_points", "_single", "shards", "vnodes")

    def __init__(self, shards: int | Iterable[int], *, vnodes: int = DEFAULT_VNODES) -> None:
        ids = tuple(range(shards)) if isinstance(shards, int) else tuple(shards)
        if not ids:
            raise ValueError(f"a ring needs at least one shard, got {shards!r}")
        if len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"shard indexes must be distinct and >= 0, got {ids!r}")
        if vnodes < 1:
            raise ValueError(f"vnodes must be at least 1, got {vnodes}")
        self.shards: tuple[int, ...] = ids
        self.vnodes = vnodes
        pairs = sorted((_point(f"{s}#{i}"), s) for s in ids for i in range(vnodes))
        self._points = [p for p, _ in pairs]
        self._owners = [s for _, s in pairs]
        self._single = ids[0] if len(ids) == 1 else None  # one shard owns every key: no hashing

    def shard_for(self, key: str) -> int:
        """The index of the shard owning ``key`` (a conversation or user id)."""
        if self._single is not None:
            return self._single
        i = bisect.bisect_left(self._points, _point(key))
        if i == len(self._points):
            i = 0
        return self._owners[i]

    def __repr__(self) -> str:
        return f"HashRing(shards={self.shards}, vnodes={self.vnodes})"
