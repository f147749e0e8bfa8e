"""ShardedStorage routes by the ring: conversations by conv id, user rows by user id."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import (
    Conversation,
    Message,
    ShardedStorage,
    SqlBackend,
    Unavailable,
    direct_key,
    sqlite_shard_urls,
)

pytestmark = pytest.mark.anyio


async def test_rows_land_on_the_ring_s_shard(tmp_path: Path) -> None:
    urls = sqlite_shard_urls(tmp_path / "data", 3)
    assert [Path(u.split("///")[1].split("?")[0]).name for u in urls] == [
        "shard-0.db", "shard-1.db", "shard-2.db"
    ]  # fmt: skip
    async with ShardedStorage.from_urls(urls) as storage:
        convs = [f"conv-{i}" for i in range(30)]
        for conv in convs:
            await storage.for_conv(conv).append_messages(
                [Message(conv, 1, f"{conv}-1", "u", "m1", "text", "hi", 1)]
            )
            await storage.for_user("u").add_user_conversations("u", [conv])
        for conv in convs:
            home = storage.ring.shard_for(conv)
            for i, backend in enumerate(storage.backends):
                assert await backend.last_seq(conv) == (1 if i == home else 0)
        assert {storage.ring.shard_for(c) for c in convs} == {0, 1, 2}
        user_home = storage.for_user("u")
        assert len(await user_home.user_conversations("u")) == 30
        others = [b for b in storage.backends if b is not user_home]
        assert all([await b.user_conversations("u") == [] for b in others])
        a, b = "ann", "bob"
        key = direct_key(a, b)
        assert key == direct_key(b, a)
        await storage.for_direct(a, b).create_conversation(
            Conversation(key, "direct", None, 1, members=frozenset({a, b}))
        )
        assert (await storage.for_direct(b, a).find_direct(a, b)) is not None
        assert storage.for_direct(a, b) is storage.for_conv(key)


async def test_a_failing_shard_fails_open_and_closes_the_rest(tmp_path: Path) -> None:
    (tmp_path / "blocked.db").mkdir()
    urls = [*sqlite_shard_urls(tmp_path, 2), f"sqlite+aiosqlite:///{tmp_path / 'blocked.db'}"]
    storage = ShardedStorage.from_urls(urls)
    with pytest.raises(Unavailable, match=r"blocked\.db"):
        await storage.open()
    assert all(isinstance(b, SqlBackend) and b._engine is None for b in storage.backends)
