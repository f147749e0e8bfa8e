"""The sans-IO client protocol: negotiation, every frame type, every validation rule, limits."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from gateway import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Ack,
    ClientConnection,
    CloseCode,
    ConnectionState,
    ConvAdd,
    ConvCreateDirect,
    ConvCreateGroup,
    ConvRemove,
    ConvsList,
    Error,
    ErrorCode,
    History,
    Limits,
    LocalProtocolError,
    Msg,
    Ping,
    Pong,
    PresenceSub,
    Receipt,
    RemoteProtocolError,
    Send,
    Sync,
    Typing,
    Welcome,
    choose_subprotocol,
)
from gateway._validate import CONV_CREATE_SPECS, FRAME_SPECS

from ._decode import decode_server_frame
from ._examples import GROUP_CREATE, VALID_FRAMES

WELCOME = Welcome(
    user="alice", device="phone", session="s1", heartbeat=30, max_frame=65536, server_time=1
)
PROTOCOLS = [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK]


def opened(subprotocol: str | None = SUBPROTOCOL_JSON, **limits: int) -> ClientConnection:
    conn = ClientConnection(subprotocol, Limits(**limits))
    conn.send(WELCOME)
    return conn


def encode(conn: ClientConnection, wire: Any) -> bytes | str:
    if conn.binary:
        packed: bytes = msgpack.packb(wire, use_bin_type=True)
        return packed
    return json.dumps(wire)


def receive(conn: ClientConnection, wire: Any) -> Any:
    return conn.receive_frame(encode(conn, wire))


def rejected(conn: ClientConnection, data: bytes | str) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_frame(data)
    return info.value


def rejected_wire(conn: ClientConnection, wire: Any) -> RemoteProtocolError:
    return rejected(conn, encode(conn, wire))


# --- negotiation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK], SUBPROTOCOL_MSGPACK),
        ([SUBPROTOCOL_MSGPACK], SUBPROTOCOL_MSGPACK),
        ([SUBPROTOCOL_JSON], SUBPROTOCOL_JSON),
        (["chat", SUBPROTOCOL_JSON], SUBPROTOCOL_JSON),
        ([], None),
    ],
)
def test_choose_subprotocol(offered: list[str], chosen: str | None) -> None:
    assert choose_subprotocol(offered) == chosen


def test_only_unknown_subprotocols_are_refused_with_400() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        choose_subprotocol(["chat", "parley.v2.json"])
    assert info.value.http_status == 400
    assert info.value.close_code is None


def test_no_subprotocol_speaks_json() -> None:
    conn = ClientConnection(None)
    assert conn.subprotocol == SUBPROTOCOL_JSON
    assert not conn.binary
    assert isinstance(conn.send(WELCOME), str)


def test_unknown_subprotocol_is_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        ClientConnection("parley.v9.json")


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_body"):
        Limits(max_body=0)
    with pytest.raises(ValueError, match="history_limit_default"):
        Limits(history_limit_default=300)


# --- every frame type ------------------------------------------------------------------------


EXPECTED = {
    "send": Send(ref=1, conv="c1", cmid="m-1", body="hello", kind="text"),
    "receipt": Receipt(conv="c1", seq=3, status="read"),
    "sync": Sync(ref="s", convs={"c1": 0, "c2": 7}),
    "conv.create": ConvCreateDirect(ref=2, with_user="bob"),
    "conv.add": ConvAdd(ref=3, conv="g1", users=("carol",)),
    "conv.remove": ConvRemove(conv="g1", users=("alice",)),
    "convs": ConvsList(ref=4),
    "history": History(ref=5, conv="c1", before=10, limit=20),
    "typing": Typing(conv="c1", state="start"),
    "presence.sub": PresenceSub(users=("bob", "carol")),
    "ping": Ping(),
}


def test_examples_cover_the_table() -> None:
    assert set(VALID_FRAMES) == set(FRAME_SPECS) == set(EXPECTED)


@pytest.mark.parametrize("subprotocol", PROTOCOLS)
@pytest.mark.parametrize("frame_type", sorted(VALID_FRAMES))
def test_valid_frames(subprotocol: str, frame_type: str) -> None:
    conn = opened(subprotocol)
    event = receive(conn, VALID_FRAMES[frame_type])
    assert event == EXPECTED[frame_type]
    assert frame_type == event.TYPE


@pytest.mark.parametrize("subprotocol", PROTOCOLS)
def test_group_create(subprotocol: str) -> None:
    event = receive(opened(subprotocol), GROUP_CREATE)
    assert event == ConvCreateGroup(ref="g", title="Friends", members=("bob", "carol"))


def test_unknown_fields_are_ignored() -> None:
    frame = {**VALID_FRAMES["ping"], "ref": "r", "extra": [1, {"x": None}], "v": 2}
    assert receive(opened(), frame) == Ping(ref="r")


def test_absent_optional_fields_take_defaults() -> None:
    conn = opened()
    assert receive(conn, {"type": "history", "ref": 1, "conv": "c"}) == History(
        ref=1, conv="c", limit=50, before=None
    )
    send = receive(conn, {"type": "send", "conv": "c", "cmid": "m", "body": ""})
    assert send.kind == "text"
    assert send.ref is None


def test_null_optional_fields_are_absent() -> None:
    conn = opened()
    frame = {"type": "history", "ref": 1, "conv": "c", "before": None, "limit": None}
    assert receive(conn, frame) == History(ref=1, conv="c", limit=50)


def test_history_limit_is_clamped() -> None:
    conn = opened(history_limit_max=200)
    assert receive(conn, {"type": "history", "ref": 1, "conv": "c", "limit": 10_000}).limit == 200


def test_bytes_body_over_msgpack() -> None:
    conn = opened(SUBPROTOCOL_MSGPACK)
    frame = {"type": "send", "conv": "c", "cmid": "m", "body": b"\x00\xff", "kind": "e2e"}
    assert receive(conn, frame) == Send(conv="c", cmid="m", body=b"\x00\xff", kind="e2e")


def test_duplicate_users_are_dropped_in_order() -> None:
    frame = {"type": "conv.add", "conv": "g", "users": ["b", "a", "b"]}
    assert receive(opened(), frame).users == ("b", "a")


# --- required fields, from the table ---------------------------------------------------------


def _required_cases() -> list[tuple[str, dict[str, Any], str]]:
    cases = []
    for name, spec in FRAME_SPECS.items():
        for wire in spec.required:
            cases.append((name, VALID_FRAMES[name], wire))
    for kind, spec in CONV_CREATE_SPECS.items():
        frame = GROUP_CREATE if kind == "group" else VALID_FRAMES["conv.create"]
        for wire in spec.required:
            cases.append((f"conv.create/{kind}", frame, wire))
    return cases


@pytest.mark.parametrize(("name", "frame", "missing"), _required_cases())
def test_missing_required_field(name: str, frame: dict[str, Any], missing: str) -> None:
    broken = {k: v for k, v in frame.items() if k != missing}
    error = rejected_wire(opened(), broken).error
    assert error is not None
    assert error.code is ErrorCode.BAD_REQUEST
    assert f".{missing}: required" in error.reason
    assert error.ref == broken.get("ref")


def test_every_frame_spec_builds_its_event() -> None:
    for name, spec in FRAME_SPECS.items():
        if name != "conv.create":
            assert name == spec.event.TYPE


# --- field rules -----------------------------------------------------------------------------

SEND = VALID_FRAMES["send"]
BAD_FIELDS: list[tuple[dict[str, Any], str, Any]] = [
    # ids
    (SEND, "conv", ""),
    (SEND, "conv", "a b"),
    (SEND, "conv", "x" * 65),
    (SEND, "conv", 5),
    (VALID_FRAMES["conv.create"], "with", "bob!"),
    (VALID_FRAMES["conv.create"], "with", "b" * 65),
    (VALID_FRAMES["conv.add"], "users", ["ok", "not ok"]),
    (VALID_FRAMES["conv.add"], "users", []),
    (VALID_FRAMES["conv.add"], "users", "bob"),
    (VALID_FRAMES["conv.remove"], "users", [1]),
    (VALID_FRAMES["presence.sub"], "users", []),
    (GROUP_CREATE, "members", ["é"]),
    (GROUP_CREATE, "members", {"bob": 1}),
    (GROUP_CREATE, "title", 7),
    (GROUP_CREATE, "title", "t" * 257),
    (VALID_FRAMES["conv.create"], "kind", "channel"),
    # cmid, body, kind
    (SEND, "cmid", ""),
    (SEND, "cmid", "c" * 65),
    (SEND, "cmid", 12),
    (SEND, "body", 12),
    (SEND, "body", ["a"]),
    (SEND, "body", "\ud800"),
    (SEND, "kind", ""),
    (SEND, "kind", "k" * 33),
    (SEND, "kind", "has space"),
    # ref
    (SEND, "ref", "r" * 65),
    (SEND, "ref", 10**64),
    (SEND, "ref", -(10**63)),
    (SEND, "ref", True),
    (SEND, "ref", 1.5),
    (SEND, "ref", ["r"]),
    (VALID_FRAMES["convs"], "ref", {"a": 1}),
    # seq and enums
    (VALID_FRAMES["receipt"], "seq", -1),
    (VALID_FRAMES["receipt"], "seq", True),
    (VALID_FRAMES["receipt"], "seq", 3.0),
    (VALID_FRAMES["receipt"], "seq", "3"),
    (VALID_FRAMES["receipt"], "seq", 2**63),
    (VALID_FRAMES["receipt"], "status", "seen"),
    (VALID_FRAMES["typing"], "state", "START"),
    (VALID_FRAMES["history"], "before", -5),
    (VALID_FRAMES["history"], "before", False),
    (VALID_FRAMES["history"], "limit", 0),
    (VALID_FRAMES["history"], "limit", 1.0),
    # sync cursors
    (VALID_FRAMES["sync"], "convs", [["c1", 1]]),
    (VALID_FRAMES["sync"], "convs", {"c1": -1}),
    (VALID_FRAMES["sync"], "convs", {"c1": True}),
    (VALID_FRAMES["sync"], "convs", {"bad conv": 1}),
]


@pytest.mark.parametrize(("frame", "field", "value"), BAD_FIELDS)
def test_bad_field_is_bad_request(frame: dict[str, Any], field: str, value: Any) -> None:
    exc = rejected_wire(opened(), {**frame, field: value})
    assert exc.error is not None
    assert exc.error.code is ErrorCode.BAD_REQUEST
    assert f".{field}:" in exc.error.reason
    assert exc.close_code is None


def test_ref_is_echoed_only_when_readable() -> None:
    conn = opened()
    assert rejected_wire(conn, {"type": "send", "ref": "r1"}).error == Error(
        code=ErrorCode.BAD_REQUEST, reason="send.conv: required", ref="r1"
    )
    assert rejected_wire(conn, {"type": "nope", "ref": 9}).error.ref == 9  # type: ignore[union-attr]
    assert rejected_wire(conn, {"type": "send", "ref": "r" * 65}).error.ref is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "frame",
    [{"type": "launch"}, {"type": 3}, {"ref": 1}, {"type": None}, {"type": "conv.create"}],
)
def test_unknown_or_missing_type(frame: dict[str, Any]) -> None:
    error = rejected_wire(opened(), frame).error
    assert error is not None
    assert error.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("subprotocol", "data"),
    [
        (SUBPROTOCOL_JSON, "{not json"),
        (SUBPROTOCOL_JSON, "[1, 2]"),
        (SUBPROTOCOL_JSON, '"type"'),
        (SUBPROTOCOL_JSON, '{"type": "ping", "ref": NaN}'),
        (SUBPROTOCOL_JSON, '{"type": "receipt", "seq": Infinity}'),
        (SUBPROTOCOL_JSON, "[" * 100_000),
        (SUBPROTOCOL_JSON, b'{"type": "ping"}'),
        (SUBPROTOCOL_MSGPACK, '{"type": "ping"}'),
        (SUBPROTOCOL_MSGPACK, b"\xc1"),
        (SUBPROTOCOL_MSGPACK, b"\x92\x01\x02"),
        (SUBPROTOCOL_MSGPACK, msgpack.packb({"type": "ping"}) + b"\x00"),
        (SUBPROTOCOL_MSGPACK, b"\x81\xa4type\xa2\xff\xfe"),
        (SUBPROTOCOL_MSGPACK, b"\x91" * 5000),
    ],
)
def test_undecodable_frames_are_bad_requests(subprotocol: str, data: bytes | str) -> None:
    conn = opened(subprotocol, max_frame=1_000_000)
    exc = rejected(conn, data)
    assert exc.error is not None
    assert exc.error.code is ErrorCode.BAD_REQUEST
    assert exc.error.ref is None
    assert exc.close_code is None
    assert conn.state is ConnectionState.OPEN


# --- size limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("subprotocol", PROTOCOLS)
def test_body_limit_counts_utf8_bytes(subprotocol: str) -> None:
    conn = opened(subprotocol, max_body=10)
    assert receive(conn, {**SEND, "body": "é" * 5}).body == "é" * 5
    exc = rejected_wire(conn, {**SEND, "body": "é" * 6})
    assert exc.error == Error(code=ErrorCode.TOO_LARGE, reason="send.body: is over 10 bytes", ref=1)
    assert exc.close_code is None
    exc = rejected_wire(conn, {**SEND, "body": "x" * 11})
    assert exc.error is not None
    assert exc.error.code is ErrorCode.TOO_LARGE


def test_bytes_body_limit() -> None:
    conn = opened(SUBPROTOCOL_MSGPACK, max_body=4)
    assert receive(conn, {**SEND, "body": b"1234"}).body == b"1234"
    error = rejected_wire(conn, {**SEND, "body": b"12345"}).error
    assert error is not None
    assert error.code is ErrorCode.TOO_LARGE


def test_bytes_body_over_json_is_not_a_thing() -> None:
    # JSON has no bytes; a base64 string is just text.
    assert receive(opened(), {**SEND, "body": "AAE="}).body == "AAE="


@pytest.mark.parametrize("field", ["members", "users"])
def test_group_cap(field: str) -> None:
    frame = GROUP_CREATE if field == "members" else VALID_FRAMES["conv.add"]
    conn = opened(max_group=3)
    assert len(receive(conn, {**frame, field: ["a", "b", "c"]}).__getattribute__(field)) == 3
    error = rejected_wire(conn, {**frame, field: ["a", "b", "c", "d"]}).error
    assert error is not None
    assert error.code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize("subprotocol", PROTOCOLS)
def test_frame_over_max_frame_closes_with_1009(subprotocol: str) -> None:
    conn = opened(subprotocol, max_frame=100)
    frame = encode(conn, {**SEND, "body": "x" * 200})
    exc = rejected(conn, frame)
    assert exc.close_code == CloseCode.MESSAGE_TOO_BIG == 1009
    assert exc.error is None
    assert conn.state is ConnectionState.CLOSING
    assert conn.close_code == 1009
    with pytest.raises(LocalProtocolError):
        conn.receive_frame(encode(conn, {"type": "ping"}))
    # Sending stays possible until the socket is closed.
    assert conn.send(Pong(server_time=5))


def test_max_frame_counts_utf8_bytes_of_text() -> None:
    conn = opened(max_frame=40)
    fits = '{"type":"ping","ref":"' + "é" * 8 + '"}'  # 22 characters of ASCII, 16 bytes of é
    assert len(fits.encode()) == 40
    assert conn.receive_frame(fits) == Ping(ref="é" * 8)
    too_big = fits.replace('"}', 'x"}')
    assert rejected(conn, too_big).close_code == 1009


# --- bad-frame counter -----------------------------------------------------------------------


def test_bad_frames_in_a_row_close_with_1008() -> None:
    conn = opened(bad_frames=3)
    for count in (1, 2):
        exc = rejected(conn, "garbage")
        assert exc.close_code is None
        assert conn.bad_frames == count
    exc = rejected(conn, "garbage")
    assert exc.close_code == CloseCode.POLICY_VIOLATION == 1008
    assert exc.error is not None
    assert exc.error.code is ErrorCode.BAD_REQUEST
    assert conn.state is ConnectionState.CLOSING


def test_a_good_frame_resets_the_count() -> None:
    conn = opened(bad_frames=2)
    rejected(conn, "garbage")
    receive(conn, {"type": "ping"})
    assert conn.bad_frames == 0
    assert rejected(conn, "garbage").close_code is None
    assert rejected(conn, "garbage").close_code == 1008


def test_too_large_bodies_count_as_bad_frames() -> None:
    conn = opened(bad_frames=2, max_body=1)
    rejected_wire(conn, {**SEND, "body": "xx"})
    assert rejected_wire(conn, {**SEND, "body": "xx"}).close_code == 1008


# --- sending ---------------------------------------------------------------------------------


def test_welcome_must_come_first_and_once() -> None:
    conn = ClientConnection(SUBPROTOCOL_JSON)
    assert conn.state is ConnectionState.AWAITING_WELCOME
    with pytest.raises(LocalProtocolError):
        conn.send(Pong(server_time=1))
    conn.send(WELCOME)
    assert conn.state is ConnectionState.OPEN
    with pytest.raises(LocalProtocolError):
        conn.send(WELCOME)


def test_frames_may_be_received_before_welcome_is_sent() -> None:
    conn = ClientConnection(SUBPROTOCOL_JSON)
    assert conn.receive_frame('{"type":"ping","ref":1}') == Ping(ref=1)


def test_begin_close_stops_receiving_first_code_wins() -> None:
    conn = opened()
    conn.begin_close(CloseCode.SERVICE_RESTART)
    conn.begin_close(CloseCode.SLOW_CONSUMER)
    assert conn.close_code == 1012
    with pytest.raises(LocalProtocolError):
        conn.receive_frame('{"type":"ping"}')
    conn.send(Pong(server_time=1))


def test_wire_names_and_omitted_optionals() -> None:
    conn = opened()
    ack = Ack(conv="c", cmid="m", id="01H", seq=1, ts=5)
    assert json.loads(conn.send(ack)) == {
        "type": "ack",
        "conv": "c",
        "cmid": "m",
        "id": "01H",
        "seq": 1,
        "ts": 5,
    }
    msg = Msg(conv="c", id="01H", seq=1, from_user="bob", cmid="m", body="hi", kind="text", ts=5)
    wire = json.loads(conn.send(msg))
    assert wire["from"] == "bob"
    assert "from_user" not in wire
    error = Error(code=ErrorCode.RATE_LIMITED, reason="slow down", ref=7, retry_after=1.5)
    assert json.loads(conn.send(error)) == {
        "type": "error",
        "code": "rate_limited",
        "reason": "slow down",
        "ref": 7,
        "retry_after": 1.5,
    }


def test_bytes_body_over_json_goes_as_body_b64() -> None:
    conn = opened()
    msg = Msg(conv="c", id="i", seq=1, from_user="b", cmid="m", body=b"\x00\xff", kind="e2e", ts=5)
    wire = json.loads(conn.send(msg))
    assert "body" not in wire
    assert wire["body_b64"] == "AP8="
    assert decode_server_frame(conn.send(msg)) == msg


def test_bytes_body_over_msgpack_stays_bytes() -> None:
    conn = opened(SUBPROTOCOL_MSGPACK)
    msg = Msg(conv="c", id="i", seq=1, from_user="b", cmid="m", body=b"\x00\xff", kind="e2e", ts=5)
    data = conn.send(msg)
    assert isinstance(data, bytes)
    assert msgpack.unpackb(data, raw=False)["body"] == b"\x00\xff"


def test_sending_a_non_server_event_is_local_misuse() -> None:
    conn = opened()
    with pytest.raises(LocalProtocolError):
        conn.send(Ping())  # type: ignore[arg-type]


def test_unencodable_value_is_local_misuse() -> None:
    conn = opened()
    with pytest.raises(LocalProtocolError):
        conn.send(Pong(server_time=1, ref=b"r"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        conn.send(Error(code=ErrorCode.INTERNAL, reason="x", retry_after=float("nan")))
