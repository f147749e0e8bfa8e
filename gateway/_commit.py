"""A conversation's group commit, storage side: the helper actor that runs one conversation's
writes one at a time for its :class:`~gateway._conversation.ConversationActor`.

The conversation actor queues the sends that arrive while a commit is in flight and hands them
to this helper as one :class:`Commit` of drafts (distinct (sender, cmid) keys, in arrival
order); the helper gives the new ones the next seqs and stores them in one ``append_messages``,
and answers :class:`Committed`. A batch of more than one draft is looked up by key first
(``Storage.find_messages``): a resend of a message stored earlier (by an earlier incarnation of
the actor, or by an append whose answer was lost) must not be given a seq, or that seq would
stay unused once the backend found the duplicate, a gap. A backend that cannot look up commits
the first draft alone and says so (``unsupported``); the actor then commits one at a time.

Why there is no gap even with an earlier incarnation's append still in flight in the shard:
that append holds seqs from the actor's loaded last seq + 1 upwards; a new draft given one of
them meets a ``SeqConflict`` and nothing of the batch is stored, and the drafts that are its
resends are answered as duplicates whose seqs it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors import Context, Ref
from storage import Message, Storage

from ._auth import new_message_id


@dataclass(frozen=True, slots=True)
class Draft:
    """A send to commit: who sent what, under which client message id."""

    sender: str
    cmid: str
    kind: str
    body: str | bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """Store ``drafts``: the new ones get seqs ``base + 1``, ``base + 2``... and ``ts`` (ms)."""

    drafts: tuple[Draft, ...]
    base: int
    ts: int


@dataclass(frozen=True, slots=True)
class Committed:
    """A commit's outcome. ``stored``: per draft committed, in draft order, the stored message
    and whether it was stored before (a resend); the first draft only when ``unsupported`` (the
    backend cannot look messages up by key). ``error``: the exception instead (nothing was
    stored for a ``SeqConflict``; the outcome is unknown for ``Unavailable``)."""

    stored: tuple[tuple[Message, bool], ...]
    error: Exception | None = None
    unsupported: bool = False


@dataclass(frozen=True, slots=True)
class Reload:
    """Read the conversation's last seq again."""


@dataclass(frozen=True, slots=True)
class Reloaded:
    last_seq: int
    error: Exception | None = None


async def commit(store: Storage, conv: str, job: Commit) -> Committed:
    """Run one :class:`Commit` (see the module docstring). Raises what storage raises."""
    drafts = job.drafts
    earlier: dict[tuple[str, str], Message] = {}
    unsupported = False
    if len(drafts) > 1:
        found = await store.find_messages(conv, [(d.sender, d.cmid) for d in drafts])
        if found is None:
            drafts, unsupported = drafts[:1], True
        else:
            earlier = {(m.sender, m.cmid): m for m in found}
    fresh: list[Message] = []
    seq = job.base
    for d in drafts:
        if (d.sender, d.cmid) not in earlier:
            seq += 1
            fresh.append(
                Message(conv, seq, new_message_id(), d.sender, d.cmid, d.kind, d.body, job.ts)
            )
    results = iter(await store.append_messages(fresh) if fresh else ())
    stored: list[tuple[Message, bool]] = []
    for d in drafts:
        before = earlier.get((d.sender, d.cmid))
        if before is not None:
            stored.append((before, True))
        else:
            result = next(results)
            stored.append((result.message, result.duplicate))
    return Committed(tuple(stored), unsupported=unsupported)


async def committer(ctx: Context, store: Storage, conv: str, owner: Ref) -> None:
    """Run ``owner``'s :class:`Commit` and :class:`Reload` jobs one at a time, answering each
    with :class:`Committed` or :class:`Reloaded`. Linked to the owner and not trapping exits,
    it dies with it (a write in flight then has an unknown outcome, as when the owner itself is
    killed mid-write); the owner stops it when it stops normally."""
    while True:
        job = await ctx.receive()
        if type(job) is Commit:
            try:
                done = await commit(store, conv, job)
            except Exception as exc:
                done = Committed((), exc)
            owner.send(done)
        elif type(job) is Reload:
            try:
                owner.send(Reloaded(await store.last_seq(conv)))
            except Exception as exc:
                owner.send(Reloaded(0, exc))
