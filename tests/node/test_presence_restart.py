"""A killed presence actor comes back with empty state; the sessions (``Announce``) tell it
again who is online and who left when, and the connections subscribe again, so watchers keep
getting presence events and new subscribers get the truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gateway import Presence, _presence
from gateway._services import PRESENCE

from .test_in_process import WAIT, running, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def presence_of(user: str, status: str) -> Any:
    return lambda e: isinstance(e, Presence) and e.user == user and e.status == status


async def test_a_restarted_presence_relearns_who_is_online_and_keeps_its_watchers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No flush: zed's last-seen time lives only in presence's memory when presence dies.
    monkeypatch.setattr(_presence, "LAST_SEEN_FLUSH", 3600.0)
    async with running(tmp_path) as n:
        async with n.client("zed") as z:
            await z.create_direct("ben")
        async with n.client("ann") as a, n.client("ben") as b:
            await a.create_direct("ben")
            answer = await b.subscribe_presence(["ann", "zed"])
            assert answer["ann"].status == "online"
            left_at = answer["zed"].last_seen
            assert answer["zed"].status == "offline"
            assert left_at is not None

            old = n.kill(PRESENCE)
            for _ in range(int(WAIT / 0.01)):
                if n.node.whereis(PRESENCE) not in (None, old):
                    break
                await trio.sleep(0.01)
            else:
                raise AssertionError("presence was not restarted")
            # ben's connection subscribed again and heard the statuses anew.
            await until(b, presence_of("ann", "online"))
            # A new subscriber gets the truth, not "everyone is offline".
            async with n.client("cat") as c:
                await c.create_direct("ann")
                await c.create_direct("zed")
                again = await c.subscribe_presence(["ann", "zed"])
            assert again["ann"].status == "online"
            assert (again["zed"].status, again["zed"].last_seen) == ("offline", left_at)
            # Live events still reach ben from the new presence.
            await a.aclose()
            event = await until(b, presence_of("ann", "offline"))
            assert event.last_seen is not None
