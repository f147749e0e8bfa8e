"""The storage handle the gateway's actors use: the ``Backend`` method names, routed to the
right shard (conversation-scoped calls by conversation id, user-scoped calls by user id).

It stands in for ``storage.Storage`` (the facade over the supervised per-shard storage actors)
until that lands; callers only use the method names, so swapping it is one line in
:mod:`gateway._keeper`.
"""

from __future__ import annotations

from collections.abc import Sequence

from storage import (
    AppendResult,
    Conversation,
    Message,
    Role,
    ShardedStorage,
    UserConversation,
)


class Store:
    """Routes each call to its shard's backend. Every method is async and checkpoints; errors
    are the backends' (``Unavailable``, ``SeqConflict``, ``StorageError``)."""

    __slots__ = ("_sharded",)

    def __init__(self, sharded: ShardedStorage) -> None:
        self._sharded = sharded

    # -- conversation-scoped --

    async def append_messages(self, batch: Sequence[Message]) -> list[AppendResult]:
        if not batch:
            return []
        convs = {m.conv for m in batch}
        if len(convs) != 1:
            raise ValueError("one conversation per batch")
        return await self._sharded.for_conv(batch[0].conv).append_messages(batch)

    async def messages_after(self, conv: str, after_seq: int, limit: int) -> list[Message]:
        return await self._sharded.for_conv(conv).messages_after(conv, after_seq, limit)

    async def messages_before(
        self, conv: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        return await self._sharded.for_conv(conv).messages_before(conv, before_seq, limit)

    async def last_seq(self, conv: str) -> int:
        return await self._sharded.for_conv(conv).last_seq(conv)

    async def create_conversation(self, conv: Conversation) -> Conversation:
        return await self._sharded.for_conv(conv.conv).create_conversation(conv)

    async def get_conversation(self, conv: str) -> Conversation | None:
        return await self._sharded.for_conv(conv).get_conversation(conv)

    async def add_members(
        self, conv: str, users: Sequence[str], role: Role = "member", *, joined_ts: int = 0
    ) -> None:
        await self._sharded.for_conv(conv).add_members(conv, users, role, joined_ts=joined_ts)

    async def remove_members(self, conv: str, users: Sequence[str]) -> None:
        await self._sharded.for_conv(conv).remove_members(conv, users)

    async def set_role(self, conv: str, users: Sequence[str], role: Role) -> None:
        await self._sharded.for_conv(conv).set_role(conv, users, role)

    # -- user-scoped --

    async def add_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        await self._sharded.for_user(user).add_user_conversations(user, convs)

    async def remove_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        await self._sharded.for_user(user).remove_user_conversations(user, convs)

    async def user_conversations(self, user: str) -> list[UserConversation]:
        return await self._sharded.for_user(user).user_conversations(user)

    async def advance_delivered(self, user: str, device: str, conv: str, seq: int) -> int:
        return await self._sharded.for_user(user).advance_delivered(user, device, conv, seq)

    async def advance_read(self, user: str, conv: str, seq: int) -> int | None:
        return await self._sharded.for_user(user).advance_read(user, conv, seq)

    async def touch_user(self, user: str, last_seen_ts: int) -> None:
        await self._sharded.for_user(user).touch_user(user, last_seen_ts)

    async def last_seen(self, user: str) -> int | None:
        return await self._sharded.for_user(user).last_seen(user)
