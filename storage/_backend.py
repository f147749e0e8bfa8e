"""The backend API: one shard's database, as the storage actors see it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import anyio

from ._records import AppendResult, Conversation, Message, Role, UserConversation

__all__ = ["Backend"]


class Backend(ABC):
    """One shard's database. Every method is async, checkpoints, and works on trio and asyncio.

    Errors: ``Unavailable`` when the database cannot be reached or the connection drops (the call
    may be retried; every write here is idempotent), ``SchemaMismatch`` from ``open()``,
    ``SeqConflict`` from ``append_messages``, ``StorageError`` for anything else the database
    rejects. A backend serves calls concurrently; the API assumes one writer per conversation (its
    conversation actor) for messages and one per user (its session) for watermarks.

    Conversation-scoped rows (messages, conversations, members) live on the conversation's shard;
    user-scoped rows (a user's conversation list, watermarks, last seen) on the user's shard.
    """

    #: The backend's name, e.g. ``"sqlite"``, ``"postgresql"``, ``"cassandra"``.
    name: str

    # -- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema, and verify its version.

        Raises ``Unavailable`` (naming what was tried) if the database is unreachable,
        ``SchemaMismatch`` if it holds an unknown schema version.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and threads. Always releases, even when cancelled; idempotent."""

    @abstractmethod
    async def ping(self) -> None:
        """One cheap round trip to the database; raises ``Unavailable`` when it fails."""

    # -- messages (conversation's shard) -----------------------------------------------------

    @abstractmethod
    async def append_messages(self, batch: Sequence[Message]) -> list[AppendResult]:
        """Store a batch of messages in one transaction; one result per input, in input order.

        Idempotent by ``(conv, sender, cmid)``: a message already stored under that key (or
        earlier in the same batch) is not stored again; its result is the stored message with
        ``duplicate=True``. A different message already at ``(conv, seq)`` raises ``SeqConflict``
        and nothing of the batch is committed. Moves each conversation's ``last_seq`` to the
        highest stored seq. An empty batch returns ``[]``.
        """

    @abstractmethod
    async def messages_after(self, conv: str, after_seq: int, limit: int) -> list[Message]:
        """Up to ``limit`` messages with ``seq > after_seq``, ascending by seq."""

    @abstractmethod
    async def messages_before(
        self, conv: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """The ``limit`` messages just below ``before_seq`` (None: the newest), ascending.

        The flag says whether older messages exist beyond the returned ones.
        """

    @abstractmethod
    async def last_seq(self, conv: str) -> int:
        """The highest stored seq of ``conv``, 0 when it has no messages."""

    async def find_messages(
        self, conv: str, keys: Sequence[tuple[str, str]]
    ) -> list[Message] | None:
        """The stored messages of ``conv`` whose ``(sender, cmid)`` is among ``keys``, in no
        particular order; None when this backend cannot look messages up by key (the default).

        A writer that batches several new messages of one conversation asks this first: a
        resend in the batch would be answered as a duplicate and leave its seq unused, a gap.
        """
        await anyio.lowlevel.checkpoint()
        return None

    # -- conversations (conversation's shard) ------------------------------------------------

    @abstractmethod
    async def create_conversation(self, conv: Conversation) -> Conversation:
        """Create ``conv`` with its members and admins; return what is stored.

        Idempotent: if ``conv.conv`` exists, or (for a direct conversation) the pair's direct
        conversation exists under another id, that stored conversation is returned unchanged. A
        direct conversation must have exactly two members (else ``ValueError``).
        ``last_seq`` of the argument is ignored.
        """

    @abstractmethod
    async def get_conversation(self, conv: str) -> Conversation | None:
        """The conversation with its members, admins and ``last_seq``; None when unknown."""

    @abstractmethod
    async def find_direct(self, user_a: str, user_b: str) -> Conversation | None:
        """The direct conversation of the pair (either order), None when there is none."""

    @abstractmethod
    async def add_members(
        self, conv: str, users: Sequence[str], role: Role = "member", *, joined_ts: int = 0
    ) -> None:
        """Add users (``joined_ts`` in ms); users already members keep their role and join time."""

    @abstractmethod
    async def remove_members(self, conv: str, users: Sequence[str]) -> None:
        """Remove users from the conversation; unknown users are ignored."""

    @abstractmethod
    async def set_role(self, conv: str, users: Sequence[str], role: Role) -> None:
        """Set the role of users who are members; others are ignored."""

    # -- user-scoped rows (user's shard) -----------------------------------------------------

    @abstractmethod
    async def add_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        """Put conversations in the user's list (watermarks 0); existing entries are kept."""

    @abstractmethod
    async def remove_user_conversations(self, user: str, convs: Sequence[str]) -> None:
        """Drop conversations, and their watermarks, from the user's list."""

    @abstractmethod
    async def user_conversations(self, user: str) -> list[UserConversation]:
        """The user's conversations with read and per-device delivered watermarks, by conv id."""

    @abstractmethod
    async def users_conversations(self, users: Sequence[str]) -> dict[str, list[UserConversation]]:
        """``user_conversations`` of many users in one round trip: user → their list (empty for
        a user with none), for every user asked."""

    @abstractmethod
    async def advance_delivered(self, user: str, device: str, conv: str, seq: int) -> int:
        """Move the device's delivered watermark for ``conv`` up to ``seq``; never backwards.

        Returns the watermark after the call (``max(old, seq)``).
        """

    @abstractmethod
    async def advance_read(self, user: str, conv: str, seq: int) -> int | None:
        """Move the user's read watermark for ``conv`` up to ``seq``; never backwards.

        Returns the watermark after the call, or None if ``conv`` is not in the user's list
        (nothing is written then).
        """

    @abstractmethod
    async def touch_user(self, user: str, last_seen_ts: int) -> None:
        """Record that the user was seen at ``last_seen_ts`` (ms); an older time is ignored."""

    @abstractmethod
    async def touch_users(self, seen: Mapping[str, int]) -> None:
        """Record many users' last-seen times (user → ms) in one round trip (one transaction
        where the database has them); for each user an older time than the stored one is
        ignored. An empty mapping does nothing."""

    @abstractmethod
    async def last_seen(self, user: str) -> int | None:
        """The user's last-seen time in ms, None if never seen."""
