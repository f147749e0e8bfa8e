"""The records the storage API takes and returns: small frozen dataclasses, no behaviour."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AppendResult",
    "Conversation",
    "ConversationKind",
    "Message",
    "Role",
    "UserConversation",
    "direct_key",
]

ConversationKind = Literal["direct", "group"]
Role = Literal["admin", "member"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation.

    ``seq`` is assigned by the conversation's single writer (1, 2, 3, ... without gaps); ``id`` is
    a ULID string chosen by that writer; ``cmid`` is the sender's client message id, unique per
    ``(conv, sender)``; ``body`` is text or bytes and comes back as the same type; ``ts`` is
    milliseconds since the Unix epoch.
    """

    conv: str
    seq: int
    id: str
    sender: str
    cmid: str
    kind: str
    body: str | bytes
    ts: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of appending one message.

    ``message`` is what is stored: the given message, or, when ``duplicate`` is true, the message
    stored earlier under the same ``(conv, sender, cmid)`` (its id, seq and ts, not the new ones).
    """

    message: Message
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation's metadata. ``created_ts`` is ms since the epoch; ``last_seq`` 0 when empty.

    ``members`` holds every member's user id (admins included); ``admins`` the subset whose role is
    admin. A direct conversation has exactly two members and no title.
    """

    conv: str
    kind: ConversationKind
    title: str | None
    created_ts: int
    last_seq: int = 0
    members: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class UserConversation:
    """One conversation in a user's list, with the user's watermarks.

    ``read_seq`` is the highest seq the user has read (0 when none); ``delivered`` maps each of the
    user's device ids to the highest seq delivered to it. Both only move forward.
    """

    conv: str
    read_seq: int = 0
    delivered: Mapping[str, int] = field(default_factory=dict)


def direct_key(user_a: str, user_b: str) -> str:
    """The key naming the direct conversation of a pair of users, the same for either order.

    Use it as the direct conversation's id too: then the pair's conversation routes to one shard,
    where the backend keeps it unique. Raises ``ValueError`` if the two users are the same.
    """
    if user_a == user_b:
        raise ValueError("a direct conversation needs two different users")
    low, high = sorted((user_a, user_b))
    return f"direct:{len(low)}:{low}:{high}"


#: A message's idempotency key: (conv, sender, cmid).
MessageKey = tuple[str, str, str]


def first_of_each_key(batch: Sequence[Message]) -> tuple[dict[MessageKey, int], list[Message]]:
    """Each key's first index in ``batch``, and the messages at those indexes, in order: what a
    backend stores of a batch that may repeat a key."""
    first: dict[MessageKey, int] = {}
    for i, m in enumerate(batch):
        first.setdefault((m.conv, m.sender, m.cmid), i)
    return first, [batch[i] for i in first.values()]


def append_results(
    batch: Sequence[Message], first: Mapping[MessageKey, int], stored: Mapping[MessageKey, Message]
) -> list[AppendResult]:
    """Per message of ``batch``: the message stored before under its key (a duplicate), the
    batch's earlier one with its key (a duplicate too), or itself (new)."""
    out: list[AppendResult] = []
    for i, m in enumerate(batch):
        key = (m.conv, m.sender, m.cmid)
        if key in stored:
            out.append(AppendResult(stored[key], duplicate=True))
        elif first[key] != i:
            out.append(AppendResult(batch[first[key]], duplicate=True))
        else:
            out.append(AppendResult(m, duplicate=False))
    return out
