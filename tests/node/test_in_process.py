"""A node in this process, in virtual time (trio's MockClock, autojumping), with in-memory
storage: what takes minutes of real time or a well-aimed crash. Clients are Parley's own, over
real loopback sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import KILL, Node, Ref
from config import load_settings
from gateway import (
    Client,
    Closed,
    Msg,
    Services,
    TypingNotice,
    mint_token,
    node_spec,
    open_client,
)
from gateway._services import conv_name, session_name
from storage import Backend
from supervisors import run_application

from ._memory import MemoryBackend

pytestmark = pytest.mark.anyio

SECRET = b"in-process-node-secret-0123456789abcdef"
#: Virtual seconds any one wait may take.
WAIT = 120.0


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    # The node is trio-only; loopback bytes are in the peer's socket buffer as soon as they are
    # sent, so the clock never jumps past a frame in flight.
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


class _MemoryServices(Services):
    backend: Backend

    def shard_urls(self) -> list[Any]:
        backend = self.backend
        return [lambda: backend]


@dataclass
class InProcessNode:
    node: Node
    services: Services
    url: str
    root: Ref

    def client(self, user: str, device: str | None = None) -> Any:
        return open_client(self.url, mint_token(SECRET, user, device))

    def kill(self, name: str) -> Ref:
        ref = self.node.whereis(name)
        assert ref is not None, name
        self.node.exit(ref, KILL)
        return ref

    def sample(self, name: str, **labels: str) -> float | None:
        value: float | None = self.services.metrics.registry.get_sample_value(name, labels)
        return value


@asynccontextmanager
async def running(tmp_path: Path, **limits: object) -> AsyncIterator[InProcessNode]:
    settings = load_settings(
        overrides={
            "server.port": 0,
            "server.data_dir": str(tmp_path),
            "server.heartbeat": 3600,
            "metrics.port": 0,
            **{f"limits.{key}": value for key, value in limits.items()},
        },
        environ={},
    )
    services = _MemoryServices(settings, SECRET)
    services.backend = MemoryBackend()
    stop = trio.Event()
    nodes: list[tuple[Node, Ref]] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            await run_application(
                node_spec(services),
                stop_signals=(),
                stop=stop,  # type: ignore[arg-type]
                ready=lambda node, root: nodes.append((node, root)),
            )

        nursery.start_soon(run)
        info = tmp_path / "node.json"
        for _ in range(int(WAIT / 0.01)):  # the listener writes it once it is bound
            if nodes and info.exists():
                break
            await trio.sleep(0.01)
        port = json.loads(info.read_text())["port"]
        try:
            node, root = nodes[0]
            yield InProcessNode(node, services, f"ws://127.0.0.1:{port}/ws", root)
        finally:
            stop.set()


async def until(client: Client, match: Callable[[Any], bool]) -> Any:
    """The next event ``match`` accepts (others are skipped)."""
    with trio.fail_after(WAIT):
        async for event in client.events:
            if match(event):
                return event
    raise AssertionError("the events ended")


def msg_seq(conv: str, seq: int) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, Msg) and e.conv == conv and e.seq == seq


async def test_an_idle_conversation_passivates_and_restarts_on_the_next_send(
    tmp_path: Path,
) -> None:
    async with (
        running(tmp_path, conversation_idle=60) as n,
        n.client("ann") as a,
        n.client("ben") as b,
    ):
        conv = (await a.create_direct("ben")).conv
        assert (await a.send_message(conv, "one")).seq == 1
        await until(b, msg_seq(conv, 1))
        first = n.node.whereis(conv_name(conv))
        assert first is not None
        await trio.sleep(55)
        assert n.node.whereis(conv_name(conv)) == first  # not idle long enough yet
        await trio.sleep(10)
        assert n.node.whereis(conv_name(conv)) is None  # stopped (normal), not restarted
        assert (await a.send_message(conv, "two")).seq == 2
        await until(b, msg_seq(conv, 2))
        again = n.node.whereis(conv_name(conv))
        assert again is not None
        assert again != first
        assert n.sample("parley_supervisor_restarts_total", supervisor="root/conversations") == 0


async def test_typing_start_ends_after_the_typing_timeout(tmp_path: Path) -> None:
    async with running(tmp_path) as n, n.client("ann") as a, n.client("ben") as b:
        conv = (await a.create_direct("ben")).conv

        def typing(state: str) -> Callable[[Any], bool]:
            return lambda e: isinstance(e, TypingNotice) and e.user == "ann" and e.state == state

        await a.typing(conv, "start")
        await until(b, typing("start"))
        started = trio.current_time()
        await until(b, typing("stop"))
        assert 10.0 <= trio.current_time() - started < 10.5
        # A renewed start pushes the end back.
        await a.typing(conv, "start")
        await until(b, typing("start"))
        started = trio.current_time()
        await trio.sleep(6)
        await a.typing(conv, "start")
        await until(b, typing("stop"))
        assert 16.0 <= trio.current_time() - started < 16.5


async def test_a_killed_conversation_restarts_and_nothing_is_lost(tmp_path: Path) -> None:
    total = 30
    async with running(tmp_path, send_burst=total) as n, n.client("ann") as a, n.client("ben") as b:
        conv = (await a.create_direct("ben")).conv
        acks: list[Any] = []
        killed: list[Ref] = []
        reached = {8: trio.Event(), 19: trio.Event()}

        async def sender() -> None:
            for i in range(total):
                # An unavailable answer (the actor died under the call) is retried, same cmid.
                acks.append(await a.send_message(conv, f"m{i}", cmid=f"m{i}", retries=5))
                if len(acks) in reached:
                    reached[len(acks)].set()

        async def killer() -> None:
            for event in reached.values():
                await event.wait()
                killed.append(n.kill(conv_name(conv)))
                await trio.sleep(0.5)  # let the supervisor restart it before the next kill

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            nursery.start_soon(killer)
        assert len(killed) == 2
        assert [ack.seq for ack in acks] == list(range(1, total + 1))
        assert len({ack.id for ack in acks}) == total
        # Pushes lost with a dead actor come back through sync: ben ends with every message.
        await b.sync(b.cursors)
        assert b.cursors[conv] == total
        history = await b.history(conv, limit=200)
        assert [m.seq for m in history.messages] == list(range(1, total + 1))
        assert [m.id for m in history.messages] == [ack.id for ack in acks]
        # Each kill hit a live incarnation and the conversation came back after both: by its
        # supervisor, or first by a retried send starting it on demand while the supervisor
        # waited for the killed actor's linked helper to go (its restart then ignores).
        assert len(set(killed)) == 2
        assert n.node.whereis(conv_name(conv)) not in (None, *killed)
        restarts = n.sample("parley_supervisor_restarts_total", supervisor="root/conversations")
        assert restarts is not None
        assert restarts <= 2


async def test_a_session_crash_closes_its_connections_with_1011_and_reconnect_works(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as n, n.client("ann") as a, n.client("ben") as b:
        conv = (await a.create_direct("ben")).conv
        assert (await a.send_message(conv, "before")).seq == 1
        await until(b, msg_seq(conv, 1))
        n.kill(session_name("ben"))
        closed = await until(b, lambda e: isinstance(e, Closed))
        assert closed.code == 1011
        assert (await a.send_message(conv, "while away")).seq == 2
        await b.reconnect()
        await until(b, msg_seq(conv, 2))  # the connect-time sync
        assert (await a.send_message(conv, "after")).seq == 3
        await until(b, msg_seq(conv, 3))  # live again, through a new session
        assert n.node.whereis(session_name("ben")) is not None
