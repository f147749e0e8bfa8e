"""Client tests run on trio only (the client is trio-native), in virtual time.

The clock autojumps only after all tasks have been blocked for a little real time, not at once:
these tests move bytes through real loopback sockets, and a jump while a frame is in flight would
fire a timeout that no real peer would.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio.testing

#: Real seconds of idleness before the virtual clock jumps to the next deadline.
AUTOJUMP_THRESHOLD = 0.02


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=AUTOJUMP_THRESHOLD)})
