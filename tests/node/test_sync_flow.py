"""The connect-time sync under flow control: it fills at most half of the device's outgoing
queue, so a device whose delivered watermark lags far behind is not cut off (4008) by its own
sync and the live messages that arrive meanwhile; one that reads nothing still is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog.testing
import trio
import trio.testing

from gateway import Closed, Msg, Synced, mint_token, open_client

from .test_in_process import SECRET, WAIT, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


QUEUE = 8
BODY = "x" * 16000


async def test_a_lagging_device_gets_its_sync_and_the_live_messages_in_order(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, outgoing_queue=QUEUE, send_rate=100000, send_burst=1000) as n:
        async with n.client("ann") as a:
            conv = (await a.create_direct("ben")).conv
            for i in range(60):  # ben is offline: his delivered watermark stays at 0
                await a.send_message(conv, f"{i} {BODY}")
            got: list[Msg] = []
            closes: list[Closed] = []
            async with n.client("ben") as b, trio.open_nursery() as nursery:

                async def talk() -> None:  # live messages while ben's sync is pushed
                    for i in range(60, 90):
                        await a.send_message(conv, f"{i} {BODY}")

                nursery.start_soon(talk)
                with trio.fail_after(WAIT):
                    async for event in b.events:
                        if isinstance(event, Msg):
                            got.append(event)
                        elif isinstance(event, Closed):
                            closes.append(event)
                            break
                        if len(got) == 90:
                            break
                stats = b.statistics()
        assert closes == []
        assert [m.seq for m in got] == list(range(1, 91))
        # In seq order from the server itself: nothing held, no gap to fill.
        assert (stats.gap_syncs, stats.duplicates_dropped) == (0, 0)


async def test_a_device_that_reads_nothing_of_its_sync_is_still_closed_with_4008(
    tmp_path: Path,
) -> None:
    limits = {"outgoing_queue": QUEUE, "send_rate": 100000, "send_burst": 1000}
    async with running(tmp_path, **limits) as n, n.client("ann") as a:
        conv = (await a.create_direct("ben")).conv
        for i in range(800):
            await a.send_message(conv, f"{i} {BODY}")
        with structlog.testing.capture_logs() as logs:
            async with open_client(n.url, mint_token(SECRET, "ben"), event_buffer=1) as b:
                await trio.sleep(WAIT / 2)  # read nothing: the socket's buffers fill up
                with trio.fail_after(WAIT):
                    async for event in b.events:
                        if isinstance(event, Closed):
                            break
                        assert not isinstance(event, Synced)
    closed = [e for e in logs if e["event"] == "connection_closed" and e.get("user") == "ben"]
    assert [(e["code"], e["reason"]) for e in closed] == [(4008, "not reading its sync")]
