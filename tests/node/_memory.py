"""An in-memory storage backend, so that a node can run in-process in virtual time (a real
database answers from threads or sockets the virtual clock cannot wait for). One instance is one
shard's database; it outlives the shard actor, like a real database outlives its connection."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence

import trio

from storage import (
    AppendResult,
    Backend,
    Conversation,
    Message,
    Role,
    SeqConflict,
    Unavailable,
    UserConversation,
    direct_key,
)


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.messages: dict[str, dict[int, Message]] = {}
        self.convs: dict[str, Conversation] = {}
        self.roles: dict[str, dict[str, Role]] = {}
        self.lists: dict[str, dict[str, UserConversation]] = {}
        self.seen: dict[str, int] = {}
        #: Called with each committed batch before its results are returned: a test's hook
        #: to crash an actor between a commit and its reply.
        self.after_append: Callable[[list[Message]], Awaitable[None] | None] | None = None
        self.appends = 0  # append_messages calls
        self.touches = 0  # touch_user and touch_users calls
        self.list_reads = 0  # users_conversations calls
        self.conflicts = 0  # SeqConflicts raised
        self.lookups = 0  # find_messages calls
        #: add_user_conversations calls still to fail with Unavailable (after the members
        #: were written: a membership change that fails midway).
        self.fail_list_adds = 0

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()

    async def append_messages(self, batch: Sequence[Message]) -> list[AppendResult]:
        await trio.lowlevel.checkpoint()
        self.appends += 1
        for m in batch:  # a conflict commits nothing of the batch
            stored = self.messages.get(m.conv, {})
            if m.seq in stored and not any(
                (s.sender, s.cmid) == (m.sender, m.cmid) for s in stored.values()
            ):
                self.conflicts += 1
                raise SeqConflict(m.conv, m.seq, stored[m.seq].id)
        results = []
        for m in batch:
            stored = self.messages.setdefault(m.conv, {})
            earlier = next(
                (s for s in stored.values() if (s.sender, s.cmid) == (m.sender, m.cmid)), None
            )
            if earlier is not None:
                results.append(AppendResult(earlier, True))
                continue
            stored[m.seq] = m
            results.append(AppendResult(m, False))
        if self.after_append is not None:
            pending = self.after_append(list(batch))
            if pending is not None:
                await pending
        return results

    async def messages_after(self, conv: str, after_seq: int, limit: int) -> list[Message]:
        await trio.lowlevel.checkpoint()
        stored = self.messages.get(conv, {})
        return [stored[s] for s in sorted(stored) if s > after_seq][:limit]

    async def messages_before(
        self, conv: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        await trio.lowlevel.checkpoint()
        stored = self.messages.get(conv, {})
        seqs = [s for s in sorted(stored) if before_seq is None or s < before_seq]
        return [stored[s] for s in seqs[-limit:]], len(seqs) > limit

    async def last_seq(self, conv: str) -> int:
        await trio.lowlevel.checkpoint()
        return max(self.messages.get(conv, {}), default=0)

    async def find_messages(
        self, conv: str, keys: Sequence[tuple[str, str]]
    ) -> list[Message] | None:
        await trio.lowlevel.checkpoint()
        self.lookups += 1
        wanted = set(keys)
        return [m for m in self.messages.get(conv, {}).values() if (m.sender, m.cmid) in wanted]

    async def create_conversation(self, conv: Conversation) -> Conversation:
        existing = await self.get_conversation(conv.conv)
        if existing is None and conv.kind == "direct":
            existing = await self.find_direct(*sorted(conv.members))
        if existing is not None:
            return existing
        self.convs[conv.conv] = dataclasses.replace(conv, last_seq=0)
        self.roles[conv.conv] = {
            u: ("admin" if u in conv.admins else "member") for u in conv.members
        }
        return await self.get_conversation(conv.conv)  # type: ignore[return-value]

    async def get_conversation(self, conv: str) -> Conversation | None:
        await trio.lowlevel.checkpoint()
        meta = self.convs.get(conv)
        if meta is None:
            return None
        roles = self.roles[conv]
        return dataclasses.replace(
            meta,
            last_seq=max(self.messages.get(conv, {}), default=0),
            members=frozenset(roles),
            admins=frozenset(u for u, r in roles.items() if r == "admin"),
        )

    async def find_direct(self, user_a: str, user_b: str) -> Conversation | None:
        key = direct_key(user_a, user_b)
        for conv, meta in self.convs.items():
            if meta.kind == "direct" and direct_key(*sorted(self.roles[conv])) == key:
                return await self.get_conversation(conv)
        return None

    async def add_members(
        self, conv: str, users: Sequence[str], role: Role = "member", *, joined_ts: int = 0
    ) -> None:
        await trio.lowlevel.checkpoint()
        for user in users:
            self.roles[conv].setdefault(user, role)

    async def remove_members(self, conv: str, users: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for user in users:
            self.roles[conv].pop(user, None)

    async def set_role(self, conv: str, users: Sequence[str], role: Role) -> None:
        await trio.lowlevel.checkpoint()
        for user in users:
            if user in self.roles[conv]:
                self.roles[conv][user] = role

    async def add_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail_list_adds:
            self.fail_list_adds -= 1
            raise Unavailable("list write failed (test)", retry_after=0.1)
        mine = self.lists.setdefault(user, {})
        for conv in convs:
            mine.setdefault(conv, UserConversation(conv))

    async def remove_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for conv in convs:
            self.lists.get(user, {}).pop(conv, None)

    async def user_conversations(self, user: str) -> list[UserConversation]:
        await trio.lowlevel.checkpoint()
        return [entry for _, entry in sorted(self.lists.get(user, {}).items())]

    async def users_conversations(self, users: Sequence[str]) -> dict[str, list[UserConversation]]:
        await trio.lowlevel.checkpoint()
        self.list_reads += 1
        return {u: [e for _, e in sorted(self.lists.get(u, {}).items())] for u in users}

    async def advance_delivered(self, user: str, device: str, conv: str, seq: int) -> int:
        await trio.lowlevel.checkpoint()
        entry = self.lists.setdefault(user, {}).setdefault(conv, UserConversation(conv))
        moved = max(entry.delivered.get(device, 0), seq)
        self.lists[user][conv] = dataclasses.replace(
            entry, delivered={**entry.delivered, device: moved}
        )
        return moved

    async def advance_read(self, user: str, conv: str, seq: int) -> int | None:
        await trio.lowlevel.checkpoint()
        entry = self.lists.get(user, {}).get(conv)
        if entry is None:
            return None
        moved = max(entry.read_seq, seq)
        self.lists[user][conv] = dataclasses.replace(entry, read_seq=moved)
        return moved

    async def touch_user(self, user: str, last_seen_ts: int) -> None:
        await trio.lowlevel.checkpoint()
        self.touches += 1
        self.seen[user] = max(self.seen.get(user, 0), last_seen_ts)

    async def touch_users(self, seen: Mapping[str, int]) -> None:
        await trio.lowlevel.checkpoint()
        self.touches += 1
        for user, ts in seen.items():
            self.seen[user] = max(self.seen.get(user, 0), ts)

    async def last_seen(self, user: str) -> int | None:
        await trio.lowlevel.checkpoint()
        return self.seen.get(user)
