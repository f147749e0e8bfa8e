"""The backend contract, run against SQLite, PostgreSQL and Cassandra alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from storage import (
    BUCKET_SIZE,
    Backend,
    Conversation,
    Message,
    SeqConflict,
    UserConversation,
)

pytestmark = pytest.mark.anyio

Namer = Callable[[str], str]


def msg(conv: str, seq: int, *, sender: str = "alice", cmid: str | None = None,
        body: str | bytes = "hello", ts: int = 1_700_000_000_000) -> Message:  # fmt: skip
    return Message(
        conv=conv,
        seq=seq,
        id=f"{conv}-id-{seq}-{cmid or seq}",
        sender=sender,
        cmid=cmid if cmid is not None else f"cm-{seq}",
        kind="text",
        body=body,
        ts=ts + seq,
    )


async def fill(backend: Backend, conv: str, count: int, *, chunk: int = 250) -> list[Message]:
    stored = [msg(conv, s) for s in range(1, count + 1)]
    for i in range(0, count, chunk):
        await backend.append_messages(stored[i : i + chunk])
    return stored


async def test_append_then_read_back(backend: Backend, n: Namer) -> None:
    conv = n("c")
    batch = [msg(conv, 1), msg(conv, 2, body=b"\x00\xffbytes"), msg(conv, 3, body="héllo ✓")]
    results = await backend.append_messages(batch)
    assert [r.message for r in results] == batch
    assert not any(r.duplicate for r in results)
    assert await backend.messages_after(conv, 0, 10) == batch
    assert await backend.last_seq(conv) == 3
    got = await backend.messages_after(conv, 1, 10)
    assert isinstance(got[0].body, bytes)
    assert isinstance(got[1].body, str)
    assert await backend.append_messages([]) == []


async def test_same_cmid_twice_is_stored_once(backend: Backend, n: Namer) -> None:
    conv = n("c")
    first = msg(conv, 1, cmid="x")
    await backend.append_messages([first])
    # A resend: the writer gave it a new seq, id and ts; the stored one wins.
    resend = Message(conv, 2, "other-id", "alice", "x", "text", "changed", 99)
    [result] = await backend.append_messages([resend])
    assert result.duplicate
    assert result.message == first
    assert await backend.messages_after(conv, 0, 10) == [first]
    assert await backend.last_seq(conv) == 1
    # The same cmid from another sender is a different message.
    [other] = await backend.append_messages([msg(conv, 2, sender="bob", cmid="x")])
    assert not other.duplicate


async def test_duplicate_within_one_batch(backend: Backend, n: Namer) -> None:
    conv = n("c")
    a = msg(conv, 1, cmid="x")
    again = Message(conv, 2, "id-2", "alice", "x", "text", "again", 5)
    b = msg(conv, 2, cmid="y")
    results = await backend.append_messages([a, again, b])
    assert [(r.message, r.duplicate) for r in results] == [(a, False), (a, True), (b, False)]
    assert await backend.messages_after(conv, 0, 10) == [a, b]


async def test_mixed_batch_of_duplicates_and_new(backend: Backend, n: Namer) -> None:
    conv = n("c")
    stored = await fill(backend, conv, 3)
    results = await backend.append_messages([msg(conv, 2), msg(conv, 4), msg(conv, 3)])
    assert [r.duplicate for r in results] == [True, False, True]
    assert [r.message for r in results] == [stored[1], msg(conv, 4), stored[2]]
    assert [m.seq for m in await backend.messages_after(conv, 0, 10)] == [1, 2, 3, 4]


async def test_seq_conflict_commits_nothing(backend: Backend, n: Namer) -> None:
    conv = n("c")
    await backend.append_messages([msg(conv, 1)])
    fine = msg(conv, 2, cmid="fine")
    clash = msg(conv, 1, cmid="clash")
    with pytest.raises(SeqConflict) as info:
        await backend.append_messages([fine, clash])
    assert (info.value.conv, info.value.seq) == (conv, 1)
    assert [m.seq for m in await backend.messages_after(conv, 0, 10)] == [1]
    assert await backend.last_seq(conv) == 1
    # Nothing of the failed batch stuck: both cmids append as new messages later.
    results = await backend.append_messages([fine, msg(conv, 3, cmid="clash")])
    assert [r.duplicate for r in results] == [False, False]
    assert [m.seq for m in await backend.messages_after(conv, 0, 10)] == [1, 2, 3]


async def test_two_new_messages_on_one_seq_conflict(backend: Backend, n: Namer) -> None:
    conv = n("c")
    with pytest.raises(SeqConflict):
        await backend.append_messages([msg(conv, 1, cmid="a"), msg(conv, 1, cmid="b")])
    assert await backend.messages_after(conv, 0, 10) == []


async def test_find_messages_by_key(backend: Backend, n: Namer) -> None:
    conv = n("c")
    stored = await fill(backend, conv, 3)
    keys = [("alice", "cm-2"), ("alice", "nope"), ("bob", "cm-1"), ("alice", "cm-3")]
    found = await backend.find_messages(conv, keys)
    assert found is not None  # every backend of the contract looks messages up by key
    assert sorted(found, key=lambda m: m.seq) == [stored[1], stored[2]]
    assert await backend.find_messages(conv, []) == []
    assert await backend.find_messages(n("other"), [("alice", "cm-1")]) == []


async def test_paging_edges(backend: Backend, n: Namer) -> None:
    empty = n("empty")
    assert await backend.messages_before(empty, None, 5) == ([], False)
    assert await backend.messages_after(empty, 0, 5) == []
    assert await backend.last_seq(empty) == 0

    conv = n("c")
    stored = await fill(backend, conv, 10)

    def seqs(page: tuple[list[Message], bool]) -> tuple[list[int], bool]:
        return [m.seq for m in page[0]], page[1]

    assert seqs(await backend.messages_before(conv, 1, 5)) == ([], False)
    assert seqs(await backend.messages_before(conv, 2, 5)) == ([1], False)
    assert seqs(await backend.messages_before(conv, None, 3)) == ([8, 9, 10], True)
    assert seqs(await backend.messages_before(conv, 8, 7)) == ([1, 2, 3, 4, 5, 6, 7], False)
    assert seqs(await backend.messages_before(conv, 8, 6)) == ([2, 3, 4, 5, 6, 7], True)
    assert seqs(await backend.messages_before(conv, None, 10)) == (list(range(1, 11)), False)
    assert seqs(await backend.messages_before(conv, None, 100)) == (list(range(1, 11)), False)
    assert seqs(await backend.messages_before(conv, 50, 2)) == ([9, 10], True)
    assert await backend.messages_after(conv, 0, 100) == stored
    assert await backend.messages_after(conv, 10, 5) == []
    assert [m.seq for m in await backend.messages_after(conv, 3, 2)] == [4, 5]
    assert await backend.messages_after(conv, 0, 0) == []
    with pytest.raises(ValueError, match="limit"):
        await backend.messages_before(conv, None, 0)


async def test_paging_across_buckets(backend: Backend, n: Namer) -> None:
    conv = n("c")
    count = BUCKET_SIZE + 205
    await fill(backend, conv, count, chunk=400)
    assert await backend.last_seq(conv) == count
    after = await backend.messages_after(conv, BUCKET_SIZE - 10, 20)
    assert [m.seq for m in after] == list(range(BUCKET_SIZE - 9, BUCKET_SIZE + 11))
    page, more = await backend.messages_before(conv, BUCKET_SIZE + 3, 10)
    assert [m.seq for m in page] == list(range(BUCKET_SIZE - 7, BUCKET_SIZE + 3))
    assert more
    everything = await backend.messages_after(conv, 0, count + 10)
    assert [m.seq for m in everything] == list(range(1, count + 1))
    page, more = await backend.messages_before(conv, None, count)
    assert len(page) == count
    assert not more


async def test_concurrent_appends_by_one_writer_stay_gapless(backend: Backend, n: Namer) -> None:
    """One writer assigns seqs in order but keeps many appends in flight at once."""
    conv = n("c")
    per_call, calls = 5, 40
    results: list[int] = []

    async def append(first: int) -> None:
        batch = [msg(conv, s) for s in range(first, first + per_call)]
        for r in await backend.append_messages(batch):
            assert not r.duplicate
            results.append(r.message.seq)

    async with trio.open_nursery() as nursery:
        for i in range(calls):
            nursery.start_soon(append, 1 + i * per_call)
    total = per_call * calls
    assert sorted(results) == list(range(1, total + 1))
    stored = await backend.messages_after(conv, 0, total + 10)
    assert [m.seq for m in stored] == list(range(1, total + 1))
    assert await backend.last_seq(conv) == total


async def test_concurrent_appends_to_many_conversations(backend: Backend, n: Namer) -> None:
    convs = [n(f"c{i}") for i in range(20)]

    async def writer(conv: str) -> None:
        for seq in range(1, 6):
            await backend.append_messages([msg(conv, seq)])

    async with trio.open_nursery() as nursery:
        for conv in convs:
            nursery.start_soon(writer, conv)
    for conv in convs:
        assert [m.seq for m in await backend.messages_after(conv, 0, 10)] == [1, 2, 3, 4, 5]


async def test_conversation_create_is_idempotent(backend: Backend, n: Namer) -> None:
    conv = Conversation(
        conv=n("g"),
        kind="group",
        title="Climbing",
        created_ts=1_700_000_000_000,
        members=frozenset({"alice", "bob", "carol"}),
        admins=frozenset({"alice"}),
    )
    assert await backend.get_conversation(conv.conv) is None
    created = await backend.create_conversation(conv)
    assert created == conv
    other = Conversation(conv.conv, "group", "Other title", 5, members=frozenset({"zed"}))
    assert await backend.create_conversation(other) == conv
    await backend.append_messages([msg(conv.conv, 1), msg(conv.conv, 2)])
    stored = await backend.get_conversation(conv.conv)
    assert stored is not None
    assert stored.last_seq == 2
    assert stored.title == "Climbing"
    untitled = Conversation(n("u"), "group", None, 7, members=frozenset({"a"}))
    assert await backend.create_conversation(untitled) == untitled


async def test_membership_changes(backend: Backend, n: Namer) -> None:
    conv = n("g")
    await backend.create_conversation(
        Conversation(conv, "group", "t", 1, members=frozenset({"a", "b"}), admins=frozenset({"a"}))
    )
    await backend.add_members(conv, ["c", "d", "a"], joined_ts=5)
    got = await backend.get_conversation(conv)
    assert got is not None
    assert got.members == {"a", "b", "c", "d"}
    assert got.admins == {"a"}  # an existing member keeps its role
    await backend.set_role(conv, ["c", "nobody"], "admin")
    await backend.remove_members(conv, ["b", "nobody"])
    got = await backend.get_conversation(conv)
    assert got is not None
    assert got.members == {"a", "c", "d"}
    assert got.admins == {"a", "c"}
    await backend.set_role(conv, ["a"], "member")
    await backend.add_members(conv, ["e"], "admin")
    got = await backend.get_conversation(conv)
    assert got is not None
    assert got.admins == {"c", "e"}


async def test_direct_pair_is_unique(backend: Backend, n: Namer) -> None:
    a, b, c = n("a"), n("b"), n("c")
    assert await backend.find_direct(a, b) is None
    first = await backend.create_conversation(
        Conversation(n("d1"), "direct", None, 1, members=frozenset({a, b}))
    )
    again = await backend.create_conversation(
        Conversation(n("d2"), "direct", None, 2, members=frozenset({b, a}))
    )
    assert again == first
    assert await backend.find_direct(b, a) == first
    assert await backend.find_direct(a, c) is None
    assert await backend.get_conversation(n("d2")) is None
    with pytest.raises(ValueError, match="two members"):
        await backend.create_conversation(
            Conversation(n("d3"), "direct", None, 1, members=frozenset({a, b, c}))
        )


async def test_watermarks_only_move_forward(backend: Backend, n: Namer) -> None:
    user, c1, c2 = n("u"), n("c1"), n("c2")
    assert await backend.user_conversations(user) == []
    assert await backend.advance_read(user, c1, 5) is None  # not in the list: nothing written
    await backend.add_user_conversations(user, [c2, c1])
    assert await backend.user_conversations(user) == [
        UserConversation(c1, 0, {}),
        UserConversation(c2, 0, {}),
    ]
    assert await backend.advance_read(user, c1, 5) == 5
    assert await backend.advance_read(user, c1, 3) == 5
    assert await backend.advance_read(user, c1, 9) == 9
    assert await backend.advance_delivered(user, "phone", c1, 12) == 12
    assert await backend.advance_delivered(user, "phone", c1, 4) == 12
    assert await backend.advance_delivered(user, "laptop", c1, 7) == 7
    assert await backend.advance_delivered(user, "phone", c2, 1) == 1
    await backend.add_user_conversations(user, [c1])  # again: watermarks stay
    assert await backend.user_conversations(user) == [
        UserConversation(c1, 9, {"phone": 12, "laptop": 7}),
        UserConversation(c2, 0, {"phone": 1}),
    ]
    await backend.remove_user_conversations(user, [c1])
    assert await backend.user_conversations(user) == [UserConversation(c2, 0, {"phone": 1})]
    await backend.add_user_conversations(user, [c1])  # a new membership starts from zero
    assert await backend.user_conversations(user) == [
        UserConversation(c1, 0, {}),
        UserConversation(c2, 0, {"phone": 1}),
    ]


async def test_users_conversations_reads_many_lists_at_once(backend: Backend, n: Namer) -> None:
    a, b, nobody = n("a"), n("b"), n("nobody")
    c1, c2 = n("c1"), n("c2")
    await backend.add_user_conversations(a, [c2, c1])
    await backend.add_user_conversations(b, [c2])
    await backend.advance_delivered(a, "phone", c1, 3)
    await backend.advance_read(b, c2, 2)
    lists = await backend.users_conversations([a, b, nobody, a])
    assert lists == {
        a: await backend.user_conversations(a),
        b: [UserConversation(c2, 2, {})],
        nobody: [],
    }
    assert lists[a] == [UserConversation(c1, 0, {"phone": 3}), UserConversation(c2, 0, {})]
    assert await backend.users_conversations([]) == {}
    many = [n(f"m{i}") for i in range(350)]  # beyond one statement's chunk
    await backend.add_user_conversations(many[-1], [c1])
    lists = await backend.users_conversations(many)
    assert len(lists) == 350
    assert lists[many[-1]] == [UserConversation(c1, 0, {})]


async def test_last_seen_only_moves_forward(backend: Backend, n: Namer) -> None:
    user = n("u")
    assert await backend.last_seen(user) is None
    await backend.touch_user(user, 1_700_000_000_500)
    await backend.touch_user(user, 1_700_000_000_100)
    assert await backend.last_seen(user) == 1_700_000_000_500
    await backend.touch_user(user, 1_700_000_000_900)
    assert await backend.last_seen(user) == 1_700_000_000_900


async def test_touch_users_records_many_and_keeps_the_later_time(
    backend: Backend, n: Namer
) -> None:
    a, b, c = n("a"), n("b"), n("c")
    await backend.touch_user(a, 1_700_000_000_500)
    await backend.touch_users({})
    await backend.touch_users({a: 1_700_000_000_100, b: 1_700_000_000_200, c: 7})
    assert await backend.last_seen(a) == 1_700_000_000_500  # older: ignored
    assert await backend.last_seen(b) == 1_700_000_000_200
    assert await backend.last_seen(c) == 7
    await backend.touch_users({a: 1_700_000_000_900, c: 8})
    assert await backend.last_seen(a) == 1_700_000_000_900
    assert await backend.last_seen(c) == 8
    many = {n(f"m{i}"): 1_000 + i for i in range(400)}  # beyond one statement's chunk
    await backend.touch_users(many)
    for user in (n("m0"), n("m199"), n("m399")):
        assert await backend.last_seen(user) == many[user]


async def test_ping(backend: Backend) -> None:
    await backend.ping()
