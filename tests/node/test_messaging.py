"""Direct conversations end to end: create, send/ack, fan-out, resend, history, sync."""

from __future__ import annotations

from typing import Any

from ._node import Client, Connector, unique


def direct(client: Client, other: str) -> dict[str, Any]:
    reply = client.request({"type": "conv.create", "kind": "direct", "with": other})
    assert reply["type"] == "conv", reply
    return reply


def send(client: Client, conv: str, cmid: str, body: Any = "hi") -> dict[str, Any]:
    return client.request({"type": "send", "conv": conv, "cmid": cmid, "body": body})


def test_direct_conversation_is_idempotent(connect: Connector) -> None:
    alice, bob = unique("alice"), unique("bob")
    a = connect(alice)
    first = direct(a, bob)
    assert first["kind"] == "direct"
    assert first["title"] is None
    assert sorted(first["members"]) == sorted([alice, bob])
    assert first["last_seq"] == 0
    assert direct(a, bob)["conv"] == first["conv"]
    b = connect(bob)
    assert direct(b, alice)["conv"] == first["conv"]


def test_send_acks_then_every_other_device_gets_the_msg(connect: Connector) -> None:
    alice, bob = unique("alice"), unique("bob")
    phone, laptop = connect(alice, "phone"), connect(alice, "laptop")
    b = connect(bob, proto="parley.v1.json")
    conv = direct(phone, bob)["conv"]
    ack = send(phone, conv, "c1", "hello")
    assert ack["type"] == "ack"
    assert ack["conv"] == conv
    assert ack["cmid"] == "c1"
    assert ack["seq"] == 1
    assert isinstance(ack["id"], str)
    assert len(ack["id"]) == 26
    assert isinstance(ack["ts"], int)
    for device in (b, laptop):
        msg = device.expect("msg")
        assert msg == {
            "type": "msg",
            "conv": conv,
            "id": ack["id"],
            "seq": 1,
            "from": alice,
            "cmid": "c1",
            "body": "hello",
            "kind": "text",
            "ts": ack["ts"],
        }
    assert [f for f in phone.quiet() if f["type"] == "msg"] == []  # the sender gets the ack only


def test_resend_with_the_same_cmid_gets_the_same_ack(connect: Connector) -> None:
    alice, bob = unique("alice"), unique("bob")
    a, b = connect(alice), connect(bob)
    conv = direct(a, bob)["conv"]
    first = send(a, conv, "same")
    again = send(a, conv, "same", "a different body is ignored")
    assert {k: again[k] for k in ("id", "seq", "ts")} == {k: first[k] for k in ("id", "seq", "ts")}
    assert send(a, conv, "next")["seq"] == 2
    assert [m["seq"] for m in b.quiet() if m["type"] == "msg"] == [1, 2]


def test_seqs_are_gapless_and_bodies_may_be_bytes(connect: Connector) -> None:
    alice, bob = unique("alice"), unique("bob")
    a = connect(alice)
    conv = direct(a, bob)["conv"]
    seqs = [send(a, conv, f"m{i}", b"\x00cipher" if i % 2 else "text")["seq"] for i in range(10)]
    assert seqs == list(range(1, 11))
    history = a.request({"type": "history", "conv": conv})
    assert [m["body"] for m in history["messages"][:2]] == ["text", b"\x00cipher"]


def test_history_pages_backwards(connect: Connector) -> None:
    alice, bob = unique("alice"), unique("bob")
    a = connect(alice)
    conv = direct(a, bob)["conv"]
    for i in range(7):
        send(a, conv, f"m{i}", f"body {i}")
    latest = a.request({"type": "history", "conv": conv, "limit": 3})
    assert latest["type"] == "history"
    assert latest["conv"] == conv
    assert [m["seq"] for m in latest["messages"]] == [5, 6, 7]
    assert latest["more"] is True
    assert latest["messages"][0]["type"] == "msg"
    assert latest["messages"][0]["body"] == "body 4"
    older = a.request({"type": "history", "conv": conv, "before": 5, "limit": 3})
    assert [m["seq"] for m in older["messages"]] == [2, 3, 4]
    assert older["more"] is True
    oldest = a.request({"type": "history", "conv": conv, "before": 2, "limit": 3})
    assert [m["seq"] for m in oldest["messages"]] == [1]
    assert oldest["more"] is False
    empty = a.request({"type": "history", "conv": conv, "before": 1})
    assert empty["messages"] == []
    assert empty["more"] is False


def test_offline_user_gets_everything_at_connect_then_synced(connect: Connector) -> None:
    alice, bob = unique("alice"), unique("bob")
    a = connect(alice)
    conv = direct(a, bob)["conv"]
    acks = [send(a, conv, f"m{i}") for i in range(3)]
    b = connect(bob, synced=False)
    msgs = [b.recv() for _ in range(3)]
    assert [m["type"] for m in msgs] == ["msg"] * 3
    assert [m["id"] for m in msgs] == [ack["id"] for ack in acks]
    assert b.recv() == {"type": "synced", "convs": {conv: 3}}
    # Live messages after the sync arrive once.
    send(a, conv, "m3")
    assert b.expect("msg")["seq"] == 4
    assert [f for f in b.quiet() if f["type"] == "msg"] == []


def test_sync_request_sends_what_follows_the_cursors(connect: Connector) -> None:
    alice, bob = unique("alice"), unique("bob")
    a = connect(alice)
    conv = direct(a, bob)["conv"]
    for i in range(4):
        send(a, conv, f"m{i}")
    a.send({"type": "sync", "ref": "s1", "convs": {conv: 2}})
    assert [a.recv()["seq"] for _ in range(2)] == [3, 4]
    assert a.recv() == {"type": "synced", "ref": "s1", "convs": {conv: 4}}


def test_someone_elses_conversation_is_forbidden(connect: Connector) -> None:
    alice, bob, eve = unique("alice"), unique("bob"), unique("eve")
    a, e = connect(alice), connect(eve)
    conv = direct(a, bob)["conv"]
    for frame in (
        {"type": "send", "conv": conv, "cmid": "x", "body": "hi"},
        {"type": "history", "conv": conv},
        {"type": "sync", "convs": {conv: 0}},
    ):
        reply = e.request(frame)
        assert (reply["type"], reply["code"]) == ("error", "forbidden"), reply
    missing = e.request({"type": "send", "conv": "g:nothing", "cmid": "x", "body": "hi"})
    assert missing["code"] == "not_found"
