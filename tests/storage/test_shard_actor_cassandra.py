"""A storage actor through a real Cassandra stop and restart (a second, private instance).

The shared instance on 9042 is left alone: this test stops and starts its own instance with
``.ci/cassandra`` on ``PARLEY_CASSANDRA_RESTART_PORT`` (default: the first free port from
9043), starting it first when it is not running and stopping it at the end in that case.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from actors import open_node
from storage import Message, ShardOptions, Storage, StorageShard, Unavailable, shard_name
from tests.conftest import require_service

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _free_instance_port() -> str:
    """A native-protocol port P for the private instance such that P and the ports
    ``.ci/cassandra`` derives from it (P + 10000..10002) are all free: a server left running by
    another checkout must not make this test fail."""
    for port in range(9043, 9100):
        try:
            for candidate in (port, port + 10000, port + 10001, port + 10002):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return str(port)
    return "9043"  # all taken: starting fails with a clear reason


PORT = os.environ.get("PARLEY_CASSANDRA_RESTART_PORT") or _free_instance_port()


async def cassandra(command: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PARLEY_CASSANDRA_PORT": PORT}
    return await trio.run_process(
        ["bash", str(ROOT / ".ci" / "cassandra"), command],
        env=env,
        check=False,
        capture_stdout=True,
        capture_stderr=True,
    )


def drop_keyspace(keyspace: str) -> None:
    from cassandra.cluster import Cluster
    from cassandra.io.libevreactor import LibevConnection

    cluster = Cluster(
        ["127.0.0.1"], port=int(PORT), protocol_version=3, connection_class=LibevConnection
    )
    try:
        cluster.connect().execute(f'DROP KEYSPACE IF EXISTS "{keyspace}"')
    finally:
        cluster.shutdown()


async def test_cassandra_stopped_and_restarted_under_writes() -> None:
    """While the server is down the actor fails fast (breaker open); after the restart it
    recovers by itself; every acked write is stored exactly once and seqs stay gapless."""
    started_here = (await cassandra("status")).returncode != 0
    if started_here:
        started = await cassandra("start")
        if started.returncode != 0:
            require_service(f"cassandra on {PORT}", started.stderr.decode()[-300:])
    keyspace = f"t_{secrets.token_hex(4)}"
    url = f"cassandra://127.0.0.1:{PORT}/{keyspace}?protocol_version=3"
    options = ShardOptions(breaker_cooldown=0.5, breaker_max_cooldown=2.0)
    convs = [f"cs{i}" for i in range(8)]
    acked = dict.fromkeys(convs, 0)
    fast_failures: list[float] = []
    try:
        async with open_node() as node:
            await node.start(StorageShard, 0, url, options)
            storage = Storage(node, shards=1)

            def breaker() -> str:
                summary = node.context(shard_name(0)).info().summary
                assert summary is not None
                return str(summary["breaker"])

            async def writer(conv: str) -> None:
                seq = 1
                while seq <= 30:
                    m = Message(conv, seq, f"{conv}-{seq}", "u", f"m{seq}", "text", "c" * 200, 1)
                    started = trio.current_time()
                    try:
                        await storage.append_messages([m])
                    except Unavailable as exc:
                        if "circuit breaker" in str(exc):
                            fast_failures.append(trio.current_time() - started)
                        await trio.sleep(min(exc.retry_after, 0.5))
                        continue  # resend: idempotent by (conv, sender, cmid)
                    acked[conv] = seq
                    seq += 1
                    await trio.sleep(0.05)

            with trio.fail_after(100):
                async with trio.open_nursery() as nursery:
                    for conv in convs:
                        nursery.start_soon(writer, conv)
                    await trio.sleep(0.3)
                    assert (await cassandra("stop")).returncode == 0
                    # Down: the breaker opens and calls fail fast instead of queueing.
                    while breaker() == "closed":  # noqa: ASYNC110 (polls the actor's status)
                        await trio.sleep(0.05)
                    await trio.sleep(1.0)
                    assert breaker() != "closed"
                    assert (await cassandra("start")).returncode == 0
            assert fast_failures
            assert max(fast_failures) < 0.1
            assert breaker() == "closed"
            for conv in convs:
                page = await storage.messages_after(conv, 0, 100)
                assert [m.seq for m in page] == list(range(1, 31))
    finally:
        if (await cassandra("status")).returncode != 0:
            await cassandra("start")
        await trio.to_thread.run_sync(drop_keyspace, keyspace)
        if started_here:  # leave no private server (~600 MB) running after the run
            await cassandra("stop")
    assert all(v == 30 for v in acked.values())
