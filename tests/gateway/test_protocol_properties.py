"""Property tests: no input escapes the protocol's errors; server events round-trip; the
bad-frame counter and close decisions follow their model."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Ack,
    ClientConnection,
    ClientEvent,
    ConnectionState,
    ConvInfo,
    ConvLeft,
    ConvsReply,
    ConvSummary,
    Error,
    ErrorCode,
    HistoryReply,
    Limits,
    LocalProtocolError,
    Msg,
    Pong,
    Presence,
    ReceiptNotice,
    RemoteProtocolError,
    ServerEvent,
    Synced,
    TypingNotice,
    Welcome,
)
from gateway._frames import SERVER_EVENTS
from gateway._validate import CONV_CREATE_SPECS, FRAME_SPECS

from ._decode import decode_server_frame
from ._examples import VALID_FRAMES

WELCOME = Welcome(user="u", device="d", session="s", heartbeat=30, max_frame=4096, server_time=0)


def opened(subprotocol: str, **limits: int) -> ClientConnection:
    conn = ClientConnection(subprotocol, Limits(**limits))
    conn.send(WELCOME)
    return conn


def check_outcome(conn: ClientConnection, data: bytes | str) -> None:
    """The one property of receive_frame: an event, or a RemoteProtocolError with a reply."""
    outcome: ClientEvent | RemoteProtocolError
    try:
        outcome = conn.receive_frame(data)
    except RemoteProtocolError as exc:
        outcome = exc
    if isinstance(outcome, RemoteProtocolError):
        assert outcome.error is not None or outcome.close_code is not None
        if outcome.error is not None:
            assert outcome.error.code in (ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE)
            conn.send(outcome.error)  # the reply itself is always encodable
    else:
        assert isinstance(outcome, ClientEvent)
        assert type(outcome) is not ClientEvent
        assert conn.bad_frames == 0


# --- fuzzing receive_frame -------------------------------------------------------------------

FIELD_NAMES = sorted(
    {"type", "ref", "kind"}
    | {f.wire for spec in FRAME_SPECS.values() for f in spec.fields}
    | {f.wire for spec in CONV_CREATE_SPECS.values() for f in spec.fields}
)
TYPES = sorted(FRAME_SPECS)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=80)
    | st.sampled_from(["", "c1", "bob", "delivered", "read", "start", "stop", "direct", "group"])
    | st.sampled_from(TYPES)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)
msgpack_values = st.recursive(
    scalars.filter(lambda v: not isinstance(v, int) or -(2**63) <= v < 2**64) | st.binary(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)


def frames(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Maps that look like frames: a real type (mostly), real field names, arbitrary values."""
    return st.builds(
        lambda kind, fields: {**fields, "type": kind} if kind is not None else fields,
        st.sampled_from(TYPES) | st.none() | values,
        st.dictionaries(st.sampled_from(FIELD_NAMES), values, max_size=8),
    )


def mutated_examples(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid frame with one field replaced or removed: close to the accepting paths."""

    def mutate(name: str, field: str, value: Any, drop: bool) -> dict[str, Any]:
        frame = dict(VALID_FRAMES[name])
        if drop:
            frame.pop(field, None)
        else:
            frame[field] = value
        return frame

    return st.builds(
        mutate, st.sampled_from(TYPES), st.sampled_from(FIELD_NAMES), values, st.booleans()
    )


@given(data=st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_data_over_msgpack(data: bytes | str) -> None:
    check_outcome(opened(SUBPROTOCOL_MSGPACK, max_frame=200), data)


@given(data=st.text(max_size=300) | st.binary(max_size=300))
def test_arbitrary_data_over_json(data: bytes | str) -> None:
    check_outcome(opened(SUBPROTOCOL_JSON, max_frame=200), data)


@given(frame=frames(json_values) | mutated_examples(json_values))
def test_frame_like_json(frame: dict[str, Any]) -> None:
    check_outcome(opened(SUBPROTOCOL_JSON, max_body=10, max_group=3), json.dumps(frame))


@given(frame=frames(msgpack_values) | mutated_examples(msgpack_values))
def test_frame_like_msgpack(frame: dict[str, Any]) -> None:
    data = msgpack.packb(frame, use_bin_type=True)
    check_outcome(opened(SUBPROTOCOL_MSGPACK, max_body=10, max_group=3), data)


@given(frame=frames(msgpack_values), cut=st.integers(min_value=0, max_value=50))
def test_truncated_msgpack(frame: dict[str, Any], cut: int) -> None:
    data = msgpack.packb(frame, use_bin_type=True)
    check_outcome(opened(SUBPROTOCOL_MSGPACK), data[: max(0, len(data) - cut)])


# --- server events round-trip ----------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)
refs = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=64)
seqs = st.integers(min_value=0, max_value=2**63 - 1)
ts = st.integers(min_value=0, max_value=2**53)
texts = st.text(max_size=50)
bodies = st.text(max_size=50) | st.binary(max_size=50)
users = st.lists(ids, max_size=4).map(tuple)
msgs = st.builds(
    Msg,
    conv=ids,
    id=ids,
    seq=seqs,
    from_user=ids,
    cmid=texts.filter(bool),
    body=bodies,
    kind=ids,
    ts=ts,
)
summaries = st.builds(
    ConvSummary,
    conv=ids,
    kind=st.sampled_from(["direct", "group"]),
    title=st.none() | texts,
    members=users,
    admins=users,
    last_seq=seqs,
    delivered_seq=seqs,
    read_seq=seqs,
)
SERVER_STRATEGIES: dict[type[ServerEvent], st.SearchStrategy[ServerEvent]] = {
    Welcome: st.builds(
        Welcome,
        user=ids,
        device=ids,
        session=ids,
        heartbeat=st.integers(1, 600) | st.floats(0.5, 600),
        max_frame=st.integers(1, 2**31),
        server_time=ts,
    ),
    Ack: st.builds(Ack, ref=refs, conv=ids, cmid=texts, id=ids, seq=seqs, ts=ts),
    Msg: msgs,
    ReceiptNotice: st.builds(
        ReceiptNotice, conv=ids, user=ids, seq=seqs, status=st.sampled_from(["delivered", "read"])
    ),
    Synced: st.builds(Synced, ref=refs, convs=st.dictionaries(ids, seqs, max_size=4)),
    ConvInfo: st.builds(
        ConvInfo,
        ref=refs,
        conv=ids,
        kind=st.sampled_from(["direct", "group"]),
        title=st.none() | texts,
        members=users,
        admins=users,
        last_seq=seqs,
    ),
    ConvLeft: st.builds(ConvLeft, conv=ids),
    ConvsReply: st.builds(
        ConvsReply, ref=refs.filter(lambda r: r is not None), convs=st.lists(summaries).map(tuple)
    ),
    HistoryReply: st.builds(
        HistoryReply,
        ref=refs.filter(lambda r: r is not None),
        conv=ids,
        messages=st.lists(msgs, max_size=3).map(tuple),
        more=st.booleans(),
    ),
    TypingNotice: st.builds(
        TypingNotice, conv=ids, user=ids, state=st.sampled_from(["start", "stop"])
    ),
    Presence: st.builds(
        Presence, user=ids, status=st.sampled_from(["online", "offline"]), last_seen=st.none() | ts
    ),
    Pong: st.builds(Pong, ref=refs, server_time=ts),
    Error: st.builds(
        Error,
        code=st.sampled_from(ErrorCode),
        reason=texts,
        ref=refs,
        retry_after=st.none() | st.floats(0, 3600) | st.integers(0, 3600),
    ),
}


def test_every_server_event_has_a_strategy() -> None:
    assert set(SERVER_STRATEGIES) == set(SERVER_EVENTS)


@settings(max_examples=300)
@given(
    event=st.one_of(*SERVER_STRATEGIES.values()),
    subprotocol=st.sampled_from([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK]),
)
def test_server_events_round_trip(event: ServerEvent, subprotocol: str) -> None:
    conn = ClientConnection(subprotocol)
    if not isinstance(event, Welcome):
        conn.send(WELCOME)
    data = conn.send(event)
    assert isinstance(data, bytes if conn.binary else str)
    assert decode_server_frame(data) == event


# --- the bad-frame counter as a state machine ------------------------------------------------


BAD_FRAMES = ["", "{", "[]", '{"type":"x"}', '{"type":"send","body":"123456789"}']


class BadFrameCounter(RuleBasedStateMachine):
    """Model: a good frame resets the count; the Nth bad frame in a row closes with 1008; a
    frame over max_frame closes with 1009; the node may close; nothing is received after a close.
    """

    def __init__(self) -> None:
        super().__init__()
        self.limit = 4
        self.conn = opened(SUBPROTOCOL_JSON, bad_frames=self.limit, max_frame=64, max_body=8)
        self.count = 0
        self.close_code: int | None = None

    @precondition(lambda self: self.close_code is None)
    @rule(ref=st.integers(0, 99))
    def good_frame(self, ref: int) -> None:
        assert self.conn.receive_frame(json.dumps({"type": "ping", "ref": ref})).ref == ref  # type: ignore[attr-defined]
        self.count = 0

    @precondition(lambda self: self.close_code is None)
    @rule(data=st.sampled_from(BAD_FRAMES))
    def bad_frame(self, data: str) -> None:
        with pytest.raises(RemoteProtocolError) as info:
            self.conn.receive_frame(data)
        self.count += 1
        assert info.value.error is not None
        if self.count >= self.limit:
            assert info.value.close_code == 1008
            self.close_code = 1008
        else:
            assert info.value.close_code is None

    @precondition(lambda self: self.close_code is None)
    @rule()
    def oversize_frame(self) -> None:
        with pytest.raises(RemoteProtocolError) as info:
            self.conn.receive_frame(json.dumps({"type": "ping", "ref": "x" * 64}))
        assert info.value.close_code == 1009
        assert info.value.error is None
        self.close_code = 1009

    @rule(code=st.sampled_from([1012, 4008, 4009]))
    def node_closes(self, code: int) -> None:
        self.conn.begin_close(code)
        if self.close_code is None:
            self.close_code = code

    @precondition(lambda self: self.close_code is not None)
    @rule()
    def receive_after_close(self) -> None:
        with pytest.raises(LocalProtocolError):
            self.conn.receive_frame('{"type":"ping"}')

    @rule()
    def send(self) -> None:
        self.conn.send(Pong(server_time=1))

    @invariant()
    def matches_model(self) -> None:
        assert self.conn.close_code == self.close_code
        expected = ConnectionState.OPEN if self.close_code is None else ConnectionState.CLOSING
        assert self.conn.state is expected
        if self.close_code is None:
            assert self.conn.bad_frames == self.count


TestBadFrameCounter = BadFrameCounter.TestCase
