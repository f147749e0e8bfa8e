"""docs/protocol.md's examples are frames the protocol accepts or produces."""

from __future__ import annotations

import json
from pathlib import Path

from gateway import ClientConnection, RemoteProtocolError, ServerEvent

from ._decode import event_from_wire

DOCS = Path(__file__).parents[2] / "docs" / "protocol.md"


def examples() -> list[str]:
    return [line for line in DOCS.read_text().splitlines() if line.startswith('{"type"')]


def test_every_example_is_a_client_or_server_frame() -> None:
    found = examples()
    assert len(found) > 25
    for line in found:
        try:
            ClientConnection(None).receive_frame(line)
        except RemoteProtocolError:
            wire = json.loads(line)
            assert isinstance(event_from_wire(wire), ServerEvent), line
