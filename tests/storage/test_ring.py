"""The consistent-hash ring: stable, balanced, and growing or shrinking moves few keys."""

from __future__ import annotations

from collections import Counter

import pytest

from storage import HashRing

KEYS = [f"conv-{i}" for i in range(100_000)]


def owners(ring: HashRing) -> list[int]:
    return [ring.shard_for(k) for k in KEYS]


def test_mapping_is_stable_across_instances() -> None:
    # Fixed expectations: the hash is not Python's per-process hash(), so these never change.
    ring = HashRing(4)
    assert [ring.shard_for(f"k{i}") for i in range(8)] == [2, 0, 1, 1, 2, 0, 1, 3]
    assert ring.shard_for("") in range(4)
    assert HashRing(1).shard_for("anything") == 0


@pytest.mark.parametrize("n", [1, 3, 4, 8])
def test_adding_a_shard_moves_about_one_in_n_plus_one(n: int) -> None:
    before, after = owners(HashRing(n)), owners(HashRing(n + 1))
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    share = len(moved) / len(KEYS)
    expected = 1 / (n + 1)
    assert abs(share - expected) < 0.25 * expected, (share, expected)
    # Every moved key moved to the new shard: nothing shuffles between old shards.
    assert {b for _, b in moved} == {n}


def test_removing_a_shard_moves_only_its_keys() -> None:
    before = owners(HashRing(5))
    after = owners(HashRing([0, 1, 3, 4]))
    for a, b in zip(before, after, strict=True):
        if a != 2:
            assert a == b
        else:
            assert b != 2


def test_load_is_balanced_with_default_vnodes() -> None:
    counts = Counter(owners(HashRing(8)))
    mean = len(KEYS) / 8
    assert max(counts.values()) < 1.2 * mean
    assert min(counts.values()) > 0.8 * mean


def test_bad_rings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        HashRing(0)
    with pytest.raises(ValueError, match="distinct"):
        HashRing([1, 1])
    with pytest.raises(ValueError, match="vnodes"):
        HashRing(2, vnodes=0)
