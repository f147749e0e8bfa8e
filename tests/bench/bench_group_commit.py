"""A busy group conversation: many members sending at once (the case a conversation's group
commit is for).

Starts a real node (``parley serve --port 0`` in a temporary data directory, send-rate limits
raised) and, from this one process with Parley's own client, opens ``--members`` connections,
creates one group of them, and has ``--senders`` of them send in a closed loop (each sends its
next message when the last is acked) for ``--duration`` seconds; every member reads its events.
Reports the acked messages per second and the ack latency of the best of ``--repeat`` runs.
All clients share this process, so the figures are for comparing builds on one machine in one
session, not absolute.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file: make `tests.bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tempfile
import time
from contextlib import AsyncExitStack
from typing import Any

import trio

from gateway import Client, open_client
from tests.bench._report import emit_json, make_parser, note, options_from, percentile, print_table
from tests.node._node import NodeProcess

NODE_ENV = {
    "PARLEY_LIMITS__SEND_RATE": "100000000",
    "PARLEY_LIMITS__SEND_BURST": "1000000",
    "PARLEY_SERVER__LOG_FORMAT": "json",
}


async def _drain(client: Client) -> None:
    async for _ in client.events:
        pass


async def _closed_loop(clients: list[Client], conv: str, duration: float) -> list[float]:
    """Each client sends in a closed loop until ``duration`` s have passed; ack times in s."""
    acks: list[float] = []
    end = time.monotonic() + duration

    async def sender(client: Client) -> None:
        while time.monotonic() < end:
            started = time.monotonic()
            await client.send_message(conv, "x" * 64, retries=5)
            acks.append(time.monotonic() - started)

    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(sender, client)
    return acks


async def _run(node: NodeProcess, members: int, senders: int, duration: float, repeat: int) -> Any:
    users = [f"member{i}" for i in range(members)]
    runs: list[list[float]] = []
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_client(node.url, node.token(user)))
            for user in users
        ]
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(_drain, client)
            conv = (await clients[0].create_group("bench", users[1:])).conv
            for client in clients[:senders]:  # warm: the conversation's actor, the sessions
                await client.send_message(conv, "warm-up")
            for _ in range(repeat):
                acks = await _closed_loop(clients[:senders], conv, duration)
                note(f"  {len(acks) / duration:,.0f} acked/s")
                runs.append(acks)
            nursery.cancel_scope.cancel()
    return max(runs, key=len)


def main() -> None:
    parser = make_parser("A group conversation with many senders at once")
    parser.add_argument("--members", type=int, default=None, help="group members (16)")
    parser.add_argument("--senders", type=int, default=None, help="members sending (16)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (10)")
    args = parser.parse_args()
    opts = options_from(args)
    members = args.members or opts.count(16, 4)
    senders = min(members, args.senders or opts.count(16, 4))
    duration = args.duration or opts.count(10, 2)
    with tempfile.TemporaryDirectory(prefix="bench-group-") as tmp:
        node = NodeProcess(Path(tmp) / "data", NODE_ENV).start()
        try:
            note(f"node on {node.url}: {members} members, {senders} sending, {duration:g} s")
            acks = trio.run(_run, node, members, senders, duration, opts.repeat)
        finally:
            node.stop()
    result = {
        "quick": opts.quick,
        "members": members,
        "senders": senders,
        "acked_per_s": round(len(acks) / duration, 1),
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(acks, 99) * 1000, 1),
    }
    print_table(
        "A busy group conversation (best run)",
        [{"measure": k, "value": v} for k, v in result.items()],
    )
    if opts.json:
        emit_json(result)


if __name__ == "__main__":
    main()
