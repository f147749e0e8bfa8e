"""Groups end to end: create, admins add and remove, leave, notices, receipts, typing, presence."""

from __future__ import annotations

from typing import Any

from ._node import Client, Connector, unique
from .test_messaging import direct, send


def group(client: Client, title: str, members: list[str]) -> dict[str, Any]:
    reply = client.request(
        {"type": "conv.create", "kind": "group", "title": title, "members": members}
    )
    assert reply["type"] == "conv", reply
    return reply


def test_a_group_of_three_with_admin_add_remove_and_leave(connect: Connector) -> None:
    ann, ben, cat, dan = (unique(n) for n in ("ann", "ben", "cat", "dan"))
    a, b, c, d = connect(ann), connect(ben), connect(cat), connect(dan)
    created = group(a, "trip", [ben, cat])
    conv = created["conv"]
    assert (created["kind"], created["title"]) == ("group", "trip")
    assert sorted(created["members"]) == sorted([ann, ben, cat])
    assert created["admins"] == [ann]
    assert b.expect("conv")["conv"] == conv  # members hear of the new group

    ack = send(b, conv, "hello-all")
    assert ack["seq"] == 1
    assert a.expect("msg")["from"] == ben
    assert c.expect("msg")["from"] == ben

    refused = b.request({"type": "conv.add", "conv": conv, "users": [dan]})
    assert refused["code"] == "forbidden"
    added = a.request({"type": "conv.add", "conv": conv, "users": [dan]})
    assert dan in added["members"]
    assert dan in d.expect("conv")["members"]
    assert d.request({"type": "history", "conv": conv})["messages"][0]["cmid"] == "hello-all"

    refused = c.request({"type": "conv.remove", "conv": conv, "users": [ben]})
    assert refused["code"] == "forbidden"
    removed = a.request({"type": "conv.remove", "conv": conv, "users": [ben]})
    assert ben not in removed["members"]
    assert b.expect("conv.left") == {"type": "conv.left", "conv": conv}
    assert (
        b.request({"type": "send", "conv": conv, "cmid": "x", "body": "?"})["code"] == "forbidden"
    )

    left = c.request({"type": "conv.remove", "conv": conv, "users": [cat]})
    assert sorted(left["members"]) == sorted([ann, dan])
    assert c.expect("conv.left")["conv"] == conv
    assert sorted(
        d.expect(lambda f: f["type"] == "conv" and cat not in f["members"])["members"]
    ) == sorted([ann, dan])

    send(a, conv, "after")
    assert d.expect("msg")["cmid"] == "after"
    assert [f for f in b.quiet() + c.quiet() if f["type"] == "msg" and f["cmid"] == "after"] == []


def test_convs_lists_the_callers_conversations_with_watermarks(connect: Connector) -> None:
    ann, ben = unique("ann"), unique("ben")
    a = connect(ann)
    one = direct(a, ben)["conv"]
    two = group(a, "plans", [ben])["conv"]
    for i in range(3):
        send(a, one, f"m{i}")
    listed = a.request({"type": "convs"})
    by_id = {entry["conv"]: entry for entry in listed["convs"]}
    assert set(by_id) == {one, two}
    assert by_id[one]["last_seq"] == 3
    assert (by_id[one]["delivered_seq"], by_id[one]["read_seq"]) == (0, 0)
    assert by_id[two]["title"] == "plans"
    assert by_id[two]["admins"] == [ann]


def test_receipts_move_watermarks_forward_only_and_notify_the_others(connect: Connector) -> None:
    ann, ben = unique("ann"), unique("ben")
    a, b = connect(ann), connect(ben)
    conv = direct(a, ben)["conv"]
    for i in range(4):
        send(a, conv, f"m{i}")
    b.send({"type": "receipt", "conv": conv, "seq": 3, "status": "delivered"})
    assert a.expect("receipt") == {
        "type": "receipt",
        "conv": conv,
        "user": ben,
        "seq": 3,
        "status": "delivered",
    }
    b.send({"type": "receipt", "conv": conv, "seq": 2, "status": "read"})
    assert a.expect("receipt")["status"] == "read"
    b.send({"type": "receipt", "conv": conv, "seq": 1, "status": "read"})  # backwards: ignored
    entry = next(e for e in b.request({"type": "convs"})["convs"] if e["conv"] == conv)
    assert (entry["delivered_seq"], entry["read_seq"]) == (3, 2)
    # The device's delivered watermark decides what a reconnect syncs.
    b.ws.close()
    again = connect(ben, synced=False)
    assert again.recv()["seq"] == 4
    assert again.recv() == {"type": "synced", "convs": {conv: 4}}


def test_receipt_for_someone_elses_conversation_is_forbidden(connect: Connector) -> None:
    ann, ben, eve = unique("ann"), unique("ben"), unique("eve")
    a, e = connect(ann), connect(eve)
    conv = direct(a, ben)["conv"]
    send(a, conv, "m")
    e.send({"type": "receipt", "conv": conv, "seq": 1, "status": "read"})
    assert e.expect("error")["code"] == "forbidden"


def test_typing_is_relayed_to_the_others_only(connect: Connector) -> None:
    ann, ben = unique("ann"), unique("ben")
    a, b = connect(ann), connect(ben)
    conv = direct(a, ben)["conv"]
    a.send({"type": "typing", "conv": conv, "state": "start"})
    assert b.expect("typing") == {"type": "typing", "conv": conv, "user": ann, "state": "start"}
    a.send({"type": "typing", "conv": conv, "state": "stop"})
    assert b.expect("typing")["state"] == "stop"
    assert [f for f in a.quiet() if f["type"] == "typing"] == []


def test_presence_of_contacts_only_with_last_seen(connect: Connector) -> None:
    ann, ben, eve = unique("ann"), unique("ben"), unique("eve")
    a = connect(ann)
    direct(a, ben)
    refused = a.request({"type": "presence.sub", "users": [eve]})
    assert refused["code"] == "forbidden"
    a.send({"type": "presence.sub", "users": [ben]})
    assert a.expect("presence") == {"type": "presence", "user": ben, "status": "offline"}
    b = connect(ben)
    assert a.expect("presence") == {"type": "presence", "user": ben, "status": "online"}
    b.ws.close()
    gone = a.expect("presence")
    assert gone["status"] == "offline"
    assert isinstance(gone["last_seen"], int)
