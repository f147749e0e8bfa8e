"""The admin endpoint's request validation and line splitting (sans-IO, no node)."""

from __future__ import annotations

import json

import pytest

from gateway._admin_protocol import (
    MAX_LINE,
    OPS,
    SCHEMAS,
    AdminRequestError,
    LineBuffer,
    parse_request,
)


def line(**message: object) -> bytes:
    return json.dumps(message).encode()


def test_a_valid_request_gets_its_defaults() -> None:
    request = parse_request(line(id=1, op="top", args={"sort": "rate"}))
    assert request.id == 1
    assert request.args == {"sort": "rate", "interval": 1.0, "window": 5.0, "n": 20, "count": None}
    assert not request.destructive
    assert parse_request(line(id="a", op="kill", args={"ref": "conv:x"})).args == {
        "ref": "conv:x",
        "reason": "kill",
    }
    assert parse_request(line(id=2, op="stats")).args == {}


def test_every_op_has_a_schema() -> None:
    assert set(SCHEMAS) == OPS


@pytest.mark.parametrize(
    ("raw", "rid", "words"),
    [
        (b"not json", None, "not JSON"),
        (b"\xff\xfe", None, "not JSON"),
        (b"[1, 2]", None, "JSON object"),
        (line(op="tree"), None, "'id'"),
        (line(id=True, op="tree"), None, "'id'"),
        (line(id="x" * 65, op="tree"), None, "'id'"),
        (line(id=1, op="reboot"), 1, "unknown op"),
        (line(id=1, op="tree", extra=1), 1, "unknown field"),
        (line(id=1, op="tree", args=[]), 1, "must be an object"),
        (line(id=1, op="tree", args={"deep": 1}), 1, "unknown argument"),
        (line(id=1, op="tree", args={"depth": -1}), 1, "out of range"),
        (line(id=1, op="tree", args={"depth": "2"}), 1, "integer"),
        (line(id=1, op="tree", args={"depth": 1.5}), 1, "integer"),
        (line(id=1, op="info"), 1, "missing argument 'ref'"),
        (line(id=1, op="info", args={"ref": 0}), 1, "pid"),
        (line(id=1, op="info", args={"ref": True}), 1, "pid"),
        (line(id=1, op="info", args={"ref": ""}), 1, "pid"),
        (line(id=1, op="info", args={"ref": None}), 1, "null"),
        (line(id=1, op="trace", args={"ref": 3}), 1, "missing argument 'count'"),
        (line(id=1, op="trace", args={"ref": 3, "count": 0}), 1, "out of range"),
        (line(id=1, op="trace", args={"ref": 3, "count": 10**6}), 1, "out of range"),
        (line(id=1, op="trace", args={"ref": 3, "count": 5, "rate": 0}), 1, "out of range"),
        (line(id=1, op="top", args={"sort": "cpu"}), 1, "one of"),
        (line(id=1, op="top", args={"interval": 0}), 1, "out of range"),
        (line(id=1, op="top", args={"interval": 2, "window": 1}), 1, "window"),
        (b'{"id": 1, "op": "top", "args": {"interval": NaN}}', 1, "finite"),
        (line(id=1, op="kill", args={"ref": 3, "reason": ""}), 1, "out of range"),
        (line(id=1, op="restart", args={"supervisor": "root"}), 1, "missing argument 'child'"),
        (line(id=1, op="restart", args={"supervisor": 2, "child": [1]}), 1, "child id"),
        (line(id=1, op="stats", token=5), 1, "'token'"),
        (b"x" * (MAX_LINE + 1), None, "longer than"),
    ],
)
def test_bad_requests_say_why(raw: bytes, rid: object, words: str) -> None:
    with pytest.raises(AdminRequestError) as caught:
        parse_request(raw)
    assert caught.value.code == "bad_request"
    assert caught.value.id == rid
    assert words in caught.value.message


def test_lines_are_split_and_oversized_ones_skipped() -> None:
    buffer = LineBuffer(limit=10)
    assert buffer.feed(b"abc\nde") == [b"abc"]
    assert buffer.feed(b"f\n") == [b"def"]
    # A line too long is reported once (None), discarded up to its newline; the next is whole.
    assert buffer.feed(b"0123456789") == [None]
    assert buffer.feed(b"more and more") == []
    assert buffer.feed(b"\nok\n") == [b"ok"]
    assert buffer.feed(b"0123456789\nok\n") == [None, b"ok"]
    assert buffer.feed(b"012345678\n") == [b"012345678"]
