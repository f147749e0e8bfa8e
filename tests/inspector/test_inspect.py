"""``parley inspect`` and the admin endpoint against a real node process."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from gateway import Msg, open_client
from gateway._cli import main
from gateway._inspect import AdminClient, RemoteError
from tests.node._node import PARLEY, unique

from ._schema import check
from .conftest import TOKEN, Inspected

pytestmark = pytest.mark.anyio

WAIT = 20.0


def inspect(node: Inspected, *args: str) -> tuple[int, str]:
    """Run ``parley inspect --node SOCKET ARGS`` in-process; (exit code, stdout)."""
    result = CliRunner().invoke(main, ["inspect", "--node", str(node.socket), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def inspect_json(node: Inspected, *args: str) -> Any:
    code, out = inspect(node, *args, "--json")
    assert code == 0, out
    return json.loads(out)


async def until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until it holds (at most ``WAIT`` seconds)."""
    with trio.fail_after(WAIT):
        while not predicate():  # noqa: ASYNC110 (state of other tasks, no event to wait on)
            await trio.sleep(0.01)


def walk(entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield entry
    for child in entry["children"]:
        yield from walk(child)


def by_id(tree: dict[str, Any], child_id: Any) -> dict[str, Any]:
    return next(e for e in walk(tree) if e["id"] == child_id)


def raw(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(WAIT)
    sock.connect(str(path))
    return sock


def exchange(sock: socket.socket, data: bytes) -> dict[str, Any]:
    sock.sendall(data)
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "closed"
        buffer += chunk
    reply: dict[str, Any] = json.loads(buffer)
    return reply


# -- the socket ---------------------------------------------------------------------------------


def test_the_socket_is_owner_only(inspected: Inspected) -> None:
    mode = inspected.socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_bad_requests_get_bad_request_and_the_connection_stays_usable(
    inspected: Inspected,
) -> None:
    with raw(inspected.socket) as sock, raw(inspected.socket) as other:
        for junk in (
            b"not json\n",
            b'{"id": 1, "op": "shutdown"}\n',
            b'{"id": 2, "op": "info", "args": {"ref": -4}}\n',
            b'{"id": 3, "op": "trace", "args": {"ref": 1}}\n',
            b"[]\n",
            b"x" * 70_000 + b"\n",
        ):
            reply = exchange(sock, junk)
            assert reply["ok"] is False
            assert reply["error"]["code"] == "bad_request", reply
        reply = exchange(sock, b'{"id": 9, "op": "info", "args": {"ref": "presence"}}\n')
        assert reply["ok"] is True
        assert reply["id"] == 9
        assert reply["result"]["name"] == "presence"
        # Another client never noticed.
        reply = exchange(other, b'{"id": "a", "op": "tree", "args": {"depth": 0}}\n')
        assert reply["ok"] is True
        assert reply["id"] == "a"
        # A missing actor is not_found, not bad_request.
        reply = exchange(sock, b'{"id": 10, "op": "kill", "args": {"ref": 999999}}\n')
        assert reply["error"]["code"] == "not_found"


def test_tcp_needs_the_token_and_refuses_destructive_ops(inspected: Inspected) -> None:
    address = ("127.0.0.1", inspected.port)
    with AdminClient(address) as client, pytest.raises(RemoteError) as caught:
        client.request("tree", depth=0)
    assert caught.value.code == "unauthorized"
    with AdminClient(address, token="wrong") as client, pytest.raises(RemoteError) as caught:
        client.request("stats")
    assert caught.value.code == "unauthorized"
    with AdminClient(address, token=TOKEN) as client:
        assert client.request("tree", depth=0)["kind"] == "supervisor"
        with pytest.raises(RemoteError) as caught:
            client.request("kill", ref="presence")
        assert caught.value.code == "refused"
        with pytest.raises(RemoteError) as caught:
            client.request("suspend", ref="presence")
        assert caught.value.code == "refused"
    # The CLI over TCP: same answers, exit code 1 for refused.
    result = CliRunner().invoke(
        main, ["inspect", "--node", f"127.0.0.1:{inspected.port}", "--token", TOKEN, "stats"]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        main, ["inspect", "--node", f"127.0.0.1:{inspected.port}", "kill", "presence"]
    )
    assert result.exit_code == 1
    assert "unauthorized" in result.output


def test_destructive_ops_over_tcp_when_allowed(permissive: Inspected) -> None:
    with AdminClient(("127.0.0.1", permissive.port), token=TOKEN) as client:
        before = client.request("info", ref="presence")
        assert client.request("suspend", ref="presence")["status"] == "suspended"
        assert client.request("resume", ref="presence")["status"] != "suspended"
        result = client.request("restart", supervisor=before["supervisor"], child="presence")
        assert result["old_pid"] == before["pid"]
        assert result["pid"] != before["pid"]
        assert client.request("info", ref="presence")["pid"] == result["pid"]


# -- the CLI ------------------------------------------------------------------------------------


def test_exit_codes(inspected: Inspected, tmp_path: Path) -> None:
    assert inspect(inspected, "info", "no-such-actor")[0] == 1
    assert inspect(inspected, "info", "999999")[0] == 1
    assert inspect(inspected, "top", "--sort", "cpu")[0] == 2
    assert inspect(inspected, "trace", "presence")[0] == 2  # --count is mandatory
    assert inspect(inspected, "restart", "presence", "x")[0] == 1  # not a supervisor
    missing = tmp_path / "nothing.sock"
    result = CliRunner().invoke(main, ["inspect", "--node", str(missing), "tree"])
    assert result.exit_code == 3
    assert str(missing) in result.output
    result = CliRunner().invoke(main, ["inspect", "--node", "127.0.0.1:1", "tree"])
    assert result.exit_code == 3
    assert "127.0.0.1:1" in result.output


def test_the_real_command_finds_the_data_directory_socket(inspected: Inspected) -> None:
    data = inspected.process.data_dir
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    done = subprocess.run(
        [*PARLEY, "inspect", "--data-dir", str(data), "tree", "--depth", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    check("tree", json.loads(done.stdout))
    done = subprocess.run(
        [*PARLEY, "inspect", "--data-dir", str(data.parent / "elsewhere"), "tree"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
    )
    assert done.returncode == 3
    assert str(data.parent / "elsewhere" / "admin.sock") in done.stderr


def test_json_output_follows_the_documented_schema(inspected: Inspected) -> None:
    check("tree", inspect_json(inspected, "tree"))
    check("info", inspect_json(inspected, "info", "presence"))
    check("stats", inspect_json(inspected, "stats"))
    code, out = inspect(inspected, "top", "--count", "2", "--interval", "0.2", "-n", "5", "--json")
    assert code == 0, out
    frames = [json.loads(line) for line in out.splitlines()]
    assert len(frames) == 2
    for frame in frames:
        check("top_frame", frame)
        assert len(frame["rows"]) == 5
    for sort in ("rate", "memory", "restarts"):
        code, out = inspect(inspected, "top", "--count", "1", "--sort", sort, "--json")
        assert code == 0, out
        check("top_frame", json.loads(out))
    # Human output renders too.
    code, out = inspect(inspected, "tree")
    assert code == 0
    assert "conversations" in out
    assert "admin" in out
    for args in (("stats",), ("info", "presence"), ("top", "--count", "1")):
        code, out = inspect(inspected, *args)
        assert code == 0, out


# -- against live chat traffic ------------------------------------------------------------------


async def test_the_tree_shows_client_actors_and_heals_a_killed_conversation(
    inspected: Inspected,
) -> None:
    node = inspected.process
    alice, bob = unique("alice"), unique("bob")
    sent: list[int] = []
    got: list[int] = []
    async with (
        open_client(node.url, node.token(alice)) as a,
        open_client(node.url, node.token(bob)) as b,
    ):
        conv = (await a.create_direct(bob)).conv
        name = f"conv:{conv}"
        stop = trio.Event()
        stopped = trio.Event()
        # Sends pause around each kill: a send in that window would start the conversation on
        # demand (a new child, restarts 0) before its supervisor, which first waits for the
        # killed actor's linked children to go, restarts it (then OTP's ignore).
        resume = trio.Event()
        resume.set()
        idle = trio.Event()

        async def sender() -> None:
            n = 0
            while not stop.is_set():
                if not resume.is_set():
                    idle.set()
                    await resume.wait()
                n += 1
                # Retries ride out the conversation's restart (unavailable, with retry_after).
                ack = await a.send_message(conv, f"m{n}", retries=20)
                sent.append(ack.seq)
                await trio.sleep(0.005)
            stopped.set()

        async def receiver() -> None:
            async for event in b.events:
                if isinstance(event, Msg) and event.conv == conv:
                    got.append(event.seq)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            nursery.start_soon(receiver)
            await until(lambda: len(sent) >= 20)

            def admin(op: str, **args: Any) -> Any:
                with AdminClient(inspected.socket) as client:
                    return client.request(op, **args)

            tree = await trio.to_thread.run_sync(lambda: admin("tree"))
            names = {e["name"] for e in walk(tree)}
            assert {name, f"session:{alice}", f"session:{bob}"} <= names
            connections = by_id(tree, "connections")
            assert connections["child_count"] >= 2
            assert {"conversations", "sessions", "gateway", "storage", "admin"} <= {
                e["id"] for e in walk(tree)
            }

            async def paused() -> None:
                nonlocal resume, idle
                resume, idle = trio.Event(), trio.Event()
                with trio.fail_after(WAIT):
                    await idle.wait()

            before = await trio.to_thread.run_sync(lambda: admin("info", ref=name))
            assert before["behaviour"] == "ConversationActor"
            # Kill by name, then by pid: the supervisor restarts it each time.
            await paused()
            await trio.to_thread.run_sync(lambda: admin("kill", ref=name))
            with trio.fail_after(WAIT):
                while True:
                    after = await trio.to_thread.run_sync(lambda: admin("info", ref=name))
                    if after["pid"] != before["pid"]:
                        break
            resume.set()
            assert after["restarts"] == 1
            assert after["last_reason"] == "'killed'"
            await paused()
            await trio.to_thread.run_sync(lambda: admin("kill", ref=after["pid"]))
            with trio.fail_after(WAIT):
                while True:
                    again = await trio.to_thread.run_sync(lambda: admin("info", ref=name))
                    if again["pid"] != after["pid"]:
                        break
            resume.set()
            assert again["restarts"] == 2
            count = len(sent)
            await until(lambda: len(sent) >= count + 20)
            stop.set()
            with trio.fail_after(WAIT):
                await stopped.wait()
            # Live delivery carries on; a message acked just before a kill may miss its
            # live push (the actor died before its fan-out) and is then had from storage,
            # as a reconnecting device would (the design's at-least-once by sync).
            with trio.move_on_after(3.0):
                await until(lambda: not set(sent) - set(got))
            nursery.cancel_scope.cancel()
        stored: list[int] = []
        before_seq: int | None = None
        while True:
            page = await b.history(conv, before=before_seq, limit=200)
            stored.extend(m.seq for m in page.messages)
            if not page.more or not page.messages:
                break
            before_seq = page.messages[0].seq
        assert len(got) >= len(sent) - 4, "live delivery did not carry on"
    # Nothing acked was lost, nothing was stored twice, and the seqs have no gaps.
    assert sorted(sent) == list(range(1, len(sent) + 1))
    assert sorted(stored) == sorted(sent)
    assert set(got) <= set(sent)
    # The CLI shows the history too.
    entry = next(e for e in walk(inspect_json(inspected, "tree")) if e["name"] == name)
    assert entry["restarts"] == 2
    assert entry["last_reason"] == "'killed'"
    code, out = inspect(inspected, "info", name)
    assert code == 0
    assert "restarts" in out
    assert "killed" in out


async def test_a_trace_stops_after_count_messages(inspected: Inspected) -> None:
    node = inspected.process
    alice, bob = unique("alice"), unique("bob")
    async with (
        open_client(node.url, node.token(alice)) as a,
        open_client(node.url, node.token(bob)),
    ):
        conv = (await a.create_direct(bob)).conv
        await a.send_message(conv, "wake up")
        events: list[Any] = []

        def trace() -> None:
            with AdminClient(inspected.socket) as client:
                events.extend(client.stream("trace", ref=f"conv:{conv}", count=3))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, trace)
            with trio.fail_after(WAIT):
                n = 0
                while len(events) < 3:
                    n += 1
                    await a.send_message(conv, f"t{n}")
                    await trio.sleep(0.02)
        assert len(events) == 3
        for item in events:
            check("trace_event", item)
        # The CLI: exactly --count lines, then exit 0; another trace may start at once.
        async with trio.open_nursery() as nursery:
            result: list[tuple[int, str]] = []

            def run() -> None:
                result.append(inspect(inspected, "trace", f"conv:{conv}", "--count", "2", "--json"))

            nursery.start_soon(trio.to_thread.run_sync, run)
            with trio.fail_after(WAIT):
                while not result:
                    await a.send_message(conv, "more")
                    await trio.sleep(0.02)
        code, out = result[0]
        assert code == 0, out
        assert len(out.splitlines()) == 2


def test_a_trace_ends_when_the_client_leaves(inspected: Inspected) -> None:
    request = b'{"id": 1, "op": "trace", "args": {"ref": "presence", "count": 100}}\n'
    with raw(inspected.socket) as sock:
        sock.sendall(request)
        time.sleep(0.2)
    # Once the endpoint has noticed, the actor may be traced again (one trace per actor): a
    # new trace is accepted (it streams: no reply, or its first event) instead of refused.
    deadline = time.monotonic() + WAIT
    while True:
        with raw(inspected.socket) as probe:
            probe.settimeout(0.5)
            try:
                reply = exchange(probe, request)
            except TimeoutError:
                return
        if "event" in reply:  # accepted, and the actor (presence flushes on a timer) was busy
            return
        assert reply["error"]["code"] == "refused", reply
        assert time.monotonic() < deadline, "the first trace never ended"
        time.sleep(0.05)
