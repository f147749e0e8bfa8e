"""The chaos monkey inside the node (``chaos.*`` admin ops) and ``parley chaos``.

The monkey's behaviour is tested on an in-process node in virtual time (trio's MockClock,
autojumping) with in-memory storage, through the admin ops' dispatcher; the CLI against a real
``parley serve`` process, as the inspector's tests do.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from click.testing import CliRunner

from actors import Context, Node, Ref
from gateway import ServerError, Services, mint_token, open_client
from gateway._admin_chaos import answer_chaos
from gateway._admin_ops import resolve
from gateway._admin_protocol import AdminRequestError, parse_request
from gateway._chaos import Monkey
from gateway._chaos_targets import KINDS, budget, candidates, protected_pids, records_of
from gateway._cli import main
from gateway._inspect import AdminClient
from storage import (
    STORAGE_AFTER_COMMIT,
    STORAGE_AFTER_REPLY,
    FailpointCrash,
    Failpoints,
    FailpointState,
)
from tests.inspector._schema import check
from tests.inspector.conftest import wait_for_socket
from tests.node._node import NodeProcess, running_node
from tests.node.test_in_process import SECRET, running

pytestmark = pytest.mark.anyio

#: Virtual seconds any one wait may take.
WAIT = 120.0


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@dataclass
class Local:
    """An in-process node, its root and the admin ops' dispatcher."""

    node: Node
    root: Ref
    services: Services
    url: str

    @property
    def monkey(self) -> Monkey:
        monkey = self.services.chaos
        assert isinstance(monkey, Monkey)
        return monkey

    def resolve(self, ref: int | str) -> Context:
        if ref == "root":
            ref = self.root.pid
        return resolve(self.node, ref)

    async def op(self, op: str, **args: Any) -> Any:
        """The admin op's result, as the endpoint answers it (validation included)."""
        line = json.dumps({"id": 1, "op": op, "args": args}).encode()
        return await answer_chaos(self.services, self.resolve, parse_request(line))

    def client(self, user: str) -> Any:
        return open_client(self.url, mint_token(SECRET, user, None))

    def pid_of(self, child_id: str, sup: Ref | None = None) -> int | None:
        for cid, record in records_of(self.node, sup or self.root):
            if cid == child_id:
                return record.ref.pid if record.ref is not None else None
        raise AssertionError(f"no child {child_id!r}")


@asynccontextmanager
async def local_node(tmp_path: Path) -> AsyncIterator[Local]:
    """The node tests' in-process node (memory storage), once its monkey is up."""
    async with running(tmp_path) as n:
        with trio.fail_after(WAIT):
            while n.services.chaos is None:  # noqa: ASYNC110
                await trio.sleep(0.01)
        yield Local(n.node, n.root, n.services, n.url)


@asynccontextmanager
async def chatting(n: Local) -> AsyncIterator[str]:
    """Two users connected, with a direct conversation holding one message: every kind of
    target is running. Yields the conversation's id."""
    async with n.client("ann") as a, n.client("ben") as b:
        conv = (await a.create_direct("ben")).conv
        await a.send_message(conv, "hello")
        assert b is not None
        yield conv


# -- kinds --------------------------------------------------------------------------------------


async def test_each_kind_is_killed_and_comes_back_unless_temporary(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n, chatting(n):
        for kind in ("conversation", "storage", "presence", "session", "connection", "supervisor"):
            before = {t.ref.pid for t in candidates(n.node, n.root, kind)}
            assert before, kind
            result = await n.op("chaos.kill", kind=kind, seed=7)
            check("chaos_kill", result)
            assert result["skipped"] == 0
            (record,) = result["kills"]
            assert record["kind"] == kind
            assert record["pid"] in before
            if kind in ("session", "connection"):  # temporary: not restarted
                assert record["restarted_pid"] is None
                assert record["restart_latency_s"] is None
            else:
                assert record["restarted_pid"] not in (None, record["pid"])
                assert 0 <= record["restart_latency_s"] < 5.0
                assert record["at"] <= n.node.now()
        status = await n.op("chaos.status")
        check("chaos_status", status)
        assert status["kills"] == 6
        assert status["by_kind"] == dict.fromkeys(sorted(KINDS), 1)
        assert [r["kind"] for r in status["log"]][-3:] == ["session", "connection", "supervisor"]


async def test_the_same_seed_picks_the_same_victims(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n, chatting(n):
        order = [t.ref.pid for t in candidates(n.node, n.root, "supervisor")]
        expected = random.Random(3).choice(order)
        result = await n.op("chaos.kill", kind="supervisor", seed=3, wait=0)
        assert result["kills"][0]["pid"] == expected


async def test_the_never_targets_are_never_picked(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n, chatting(n):
        never = protected_pids(n.node, n.root)
        assert len(never) == 4  # root, metrics, chaos, admin
        for kind in KINDS:
            assert not never & {t.ref.pid for t in candidates(n.node, n.root, kind)}
        await n.op("chaos.start", seed=1, rate=50, duration=20.0)
        await trio.sleep(21)
        status = await n.op("chaos.status")
        assert not status["running"]
        assert status["kills"] > 50
        killed = {r["pid"] for r in status["log"]}
        assert not killed & never
        assert protected_pids(n.node, n.root) == never  # none of them was restarted
        for child in ("admin", "chaos", "metrics"):
            for named in (child, n.pid_of(child)):
                with pytest.raises(AdminRequestError) as caught:
                    await n.op("chaos.storm", supervisor="root", child=named, kills=1)
                assert caught.value.code == "refused"


# -- the guard ----------------------------------------------------------------------------------


async def test_the_guard_never_escalates_a_supervisor_even_at_a_high_rate(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n, chatting(n):
        gateway = n.pid_of("gateway")
        storage = n.pid_of("storage")
        with structlog.testing.capture_logs() as logs:
            result = await n.op("chaos.start", seed=5, rate=50, kinds=["supervisor", "presence"])
            check("chaos_status", result)
            assert result["running"]
            assert result["seed"] == 5
            await trio.sleep(30)
            status = await n.op("chaos.stop")
        assert not status["running"]
        assert status["kills"] >= 10
        assert status["skipped"] > 1_000  # the guard said no most of the time
        assert not [e for e in logs if e["event"] == "supervisor_gave_up"]
        # Nothing escalated to the root: its budget stayed at intensity - 1 or less.
        root_budget = budget(n.node, n.root)
        assert root_budget is not None
        assert root_budget.restarts <= root_budget.intensity - 1
        assert n.root.alive
        assert (gateway, storage) != (n.pid_of("gateway"), n.pid_of("storage"))  # some were hit


async def test_a_kill_the_guard_refuses_is_skipped(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n, chatting(n):
        result = await n.op("chaos.kill", kind="presence", count=3, seed=1)
        assert len(result["kills"]) == 2  # root: 3 restarts in 10 s; the monkey stops at 2
        assert result["skipped"] == 1
        await trio.sleep(10.5)  # the period passes: there is room again
        result = await n.op("chaos.kill", kind="presence", seed=1)
        assert len(result["kills"]) == 1


# -- havoc and storms ---------------------------------------------------------------------------


@pytest.mark.parametrize(("sup", "intensity"), [("gateway", 3), ("conversations", 100)])
async def test_havoc_stops_at_intensity_minus_one(tmp_path: Path, sup: str, intensity: int) -> None:
    async with local_node(tmp_path) as n, chatting(n):
        before = n.pid_of(sup)
        assert before is not None
        result = await n.op("chaos.havoc", supervisor=before, seed=2)
        check("chaos_havoc", result)
        assert result["intensity"] == intensity
        assert len(result["kills"]) == intensity - 1
        assert all(r["restarted_pid"] is not None for r in result["kills"])
        assert result["escalated"] is False
        assert n.pid_of(sup) == before
        found = budget(n.node, _ref(n, sup))
        assert found is not None
        assert found.restarts == intensity - 1


def _ref(n: Local, child_id: str) -> Ref:
    pid = n.pid_of(child_id)
    assert pid is not None
    ref = n.node.lookup(pid)
    assert ref is not None
    return ref


async def test_a_storm_above_the_intensity_escalates_and_below_it_does_not(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n, chatting(n):
        gateway = n.pid_of("gateway")
        below = await n.op("chaos.storm", supervisor=gateway, child="listener", kills=2)
        check("chaos_storm", below)
        assert below["intensity"] == 3
        assert below["kills"] == 2
        assert below["escalated"] is False
        assert below["supervisor_pid_before"] == below["supervisor_pid_after"] == gateway
        await trio.sleep(10.5)  # out of the period
        with structlog.testing.capture_logs() as logs:
            above = await n.op("chaos.storm", supervisor=gateway, child="listener", kills=4)
        check("chaos_storm", above)
        assert above["kills"] == 4
        assert above["escalated"] is True
        assert above["supervisor_pid_before"] == gateway
        assert above["supervisor_pid_after"] not in (None, gateway)
        assert n.pid_of("gateway") == above["supervisor_pid_after"]
        assert above["records"][-1]["restarted_pid"] is None
        assert len([e for e in logs if e["event"] == "supervisor_gave_up"]) == 1


async def test_a_storm_that_would_stop_the_node_is_refused(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n:
        with pytest.raises(AdminRequestError) as caught:
            await n.op("chaos.storm", supervisor="root", child="presence", kills=3)
        assert caught.value.code == "refused"
        with pytest.raises(AdminRequestError) as caught:
            await n.op("chaos.storm", supervisor="presence", kills=1)
        assert caught.value.code == "refused"
        with pytest.raises(AdminRequestError) as caught:
            await n.op("chaos.storm", supervisor="root", child="nothing", kills=1)
        assert caught.value.code == "not_found"
        ok = await n.op("chaos.storm", supervisor="root", child="presence", kills=2)
        assert ok["escalated"] is False
        # A supervisor that is not registered is named by its path of child ids from the root.
        connections = n.node.whereis("connections")
        assert connections is not None
        havoc = await n.op("chaos.havoc", supervisor="gateway/connections")
        assert havoc["supervisor"] == connections.pid
        assert havoc["kills"] == []  # connections are temporary: nothing it would restart
        with pytest.raises(AdminRequestError) as caught:
            await n.op("chaos.havoc", supervisor="gateway/nothing")
        assert caught.value.code == "not_found"


# -- failpoints ---------------------------------------------------------------------------------


async def test_after_commit_fails_the_writers_of_a_committed_batch_count_times(
    tmp_path: Path,
) -> None:
    async with local_node(tmp_path) as n, chatting(n) as conv, n.client("ann") as a:
        assert await n.op("chaos.failpoint", name="storage.after_commit", count=2) == {
            "name": "storage.after_commit",
            "armed": 2,
        }
        stored = n.services.backend.messages[conv]
        for body in ("one", "two"):
            with pytest.raises(ServerError) as caught:
                await a.send_message(conv, body, cmid=f"cmid-{body}")
            assert caught.value.code.value == "unavailable"
            assert body in {m.body for m in stored.values()}  # committed all the same
            await trio.sleep(1.0)  # the shard's backoff restart
        ack = await a.send_message(conv, "three")
        points = await n.op("chaos.failpoints")
        check("chaos_failpoints", points)
        assert points["storage.after_commit"] == {"armed": 0, "hits": 2}
        assert points["storage.after_reply"] == {"armed": 0, "hits": 0}
        assert stored[ack.seq].body == "three"
        again = await a.send_message(conv, "one", cmid="cmid-one", retries=3)
        assert stored[again.seq].body == "one"  # the retry finds the committed message


async def test_after_reply_acks_then_crashes_the_shard(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n, chatting(n) as conv, n.client("ann") as a:
        shard = n.node.whereis("storage.shard.0")
        await n.op("chaos.failpoint", name="storage.after_reply")
        ack = await a.send_message(conv, "acked")
        assert n.services.backend.messages[conv][ack.seq].body == "acked"
        with trio.fail_after(WAIT):
            while n.node.whereis("storage.shard.0") in (None, shard):  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert (await n.op("chaos.failpoints"))["storage.after_reply"] == {"armed": 0, "hits": 1}
        await a.send_message(conv, "later", retries=3)


async def test_a_failpoint_is_disarmed_with_count_zero(tmp_path: Path) -> None:
    async with local_node(tmp_path) as n, chatting(n) as conv, n.client("ann") as a:
        await n.op("chaos.failpoint", name="storage.after_commit", count=5)
        await n.op("chaos.failpoint", name="storage.after_commit", count=0)
        await a.send_message(conv, "fine")
        assert (await n.op("chaos.failpoints"))["storage.after_commit"] == {"armed": 0, "hits": 0}


def test_the_failpoints_registry_fires_exactly_count_times() -> None:
    points = Failpoints()
    points.fire(STORAGE_AFTER_COMMIT)  # disarmed: nothing happens
    assert points.arm(STORAGE_AFTER_COMMIT, 2) == 2
    points.fire(STORAGE_AFTER_REPLY)  # another point: nothing
    for _ in range(2):
        with pytest.raises(FailpointCrash) as caught:
            points.fire(STORAGE_AFTER_COMMIT)
        assert caught.value.name == STORAGE_AFTER_COMMIT
    points.fire(STORAGE_AFTER_COMMIT)  # used up
    assert points.snapshot() == {
        STORAGE_AFTER_COMMIT: FailpointState(armed=0, hits=2),
        STORAGE_AFTER_REPLY: FailpointState(armed=0, hits=0),
    }
    points.arm(STORAGE_AFTER_REPLY, 3)
    points.arm(STORAGE_AFTER_REPLY, 1)  # not cumulative
    assert points.state(STORAGE_AFTER_REPLY).armed == 1
    with pytest.raises(ValueError, match="unknown failpoint"):
        points.arm("storage.before_commit")
    with pytest.raises(ValueError, match=">= 0"):
        points.arm(STORAGE_AFTER_REPLY, -1)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "args", "words"),
    [
        ("chaos.kill", {}, "missing argument 'kind'"),
        ("chaos.kill", {"kind": "admin"}, "one of"),
        ("chaos.kill", {"kind": "session", "count": 0}, "out of range"),
        ("chaos.kill", {"kind": "session", "wait": -1}, "out of range"),
        ("chaos.start", {"rate": 0}, "out of range (0, 50]"),
        ("chaos.start", {"rate": 51}, "out of range"),
        ("chaos.start", {"rate": 1, "kinds": []}, "non-empty list"),
        ("chaos.start", {"rate": 1, "kinds": ["root"]}, "'root' is not one of"),
        ("chaos.start", {"rate": 1, "duration": 0}, "out of range"),
        ("chaos.storm", {"supervisor": "root"}, "missing argument 'kills'"),
        ("chaos.storm", {"supervisor": "root", "kills": 0}, "out of range"),
        ("chaos.havoc", {"supervisor": 0}, "pid"),
        ("chaos.failpoint", {"name": "storage.before_commit"}, "one of"),
        ("chaos.failpoint", {"name": "storage.after_commit", "count": -1}, "out of range"),
        ("chaos.stop", {"now": True}, "unknown argument"),
    ],
)
def test_chaos_requests_are_validated(op: str, args: dict[str, Any], words: str) -> None:
    with pytest.raises(AdminRequestError) as caught:
        parse_request(json.dumps({"id": 1, "op": op, "args": args}).encode())
    assert caught.value.code == "bad_request"
    assert words in caught.value.message


def test_the_destructive_chaos_ops_are_gated_like_kill() -> None:
    for op, args in [
        ("chaos.kill", {"kind": "session"}),
        ("chaos.start", {"rate": 1}),
        ("chaos.stop", {}),
        ("chaos.havoc", {"supervisor": "root"}),
        ("chaos.storm", {"supervisor": "root", "kills": 1}),
        ("chaos.failpoint", {"name": "storage.after_reply"}),
    ]:
        assert parse_request(json.dumps({"id": 1, "op": op, "args": args}).encode()).destructive
    for op in ("chaos.status", "chaos.failpoints"):
        assert not parse_request(json.dumps({"id": 1, "op": op}).encode()).destructive


# -- parley chaos, against a real node ------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("chaos") / "data") as process:
        wait_for_socket(process.data_dir / "admin.sock")
        yield process


def chaos(node: NodeProcess, *args: str) -> tuple[int, str]:
    """Run ``parley chaos --node SOCKET ARGS`` in-process; (exit code, stdout and stderr)."""
    socket = str(node.data_dir / "admin.sock")
    result = CliRunner().invoke(main, ["chaos", "--node", socket, *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def chaos_json(node: NodeProcess, *args: str) -> Any:
    code, out = chaos(node, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def test_the_cli_kills_by_kind_and_prints_json(served: NodeProcess) -> None:
    result = chaos_json(served, "kill", "presence", "--seed", "1")
    check("chaos_kill", result)
    (record,) = result["kills"]
    assert record["name"] == "presence"
    assert record["restarted_pid"] is not None
    with AdminClient(served.data_dir / "admin.sock") as client:
        assert client.request("info", ref="presence")["pid"] == record["restarted_pid"]
    code, out = chaos(served, "kill", "conversation")  # none yet: skipped, not an error
    assert code == 0, out
    assert "skipped" in out
    status = chaos_json(served, "status")
    check("chaos_status", status)
    assert status["kills"] == 1


def test_the_cli_runs_stops_and_arms_failpoints(served: NodeProcess) -> None:
    started = chaos_json(served, "start", "--seed", "9", "--rate", "2", "--kind", "connection")
    assert started["running"]
    assert started["kinds"] == ["connection"]
    assert started["seed"] == 9
    assert chaos_json(served, "stop")["running"] is False
    armed = chaos_json(served, "failpoint", "storage.after_reply", "--count", "0")
    assert armed == {"name": "storage.after_reply", "armed": 0}
    points = chaos_json(served, "failpoints")
    check("chaos_failpoints", points)
    code, out = chaos(served, "status")
    assert code == 0
    assert out.startswith("stopped  seed=9")
    storm = chaos_json(served, "storm", "gateway", "--child", "listener", "--kills", "1")
    check("chaos_storm", storm)
    assert storm["escalated"] is False
    havoc = chaos_json(served, "havoc", "sessions")
    check("chaos_havoc", havoc)
    assert havoc["kills"] == []  # sessions are temporary: nothing to restart


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["kill"], "Missing argument"),
        (["kill", "admin"], "'admin' is not one of"),
        (["kill", "session", "--count", "0"], "0 is not in the range"),
        (["start", "--rate", "0"], "rate"),
        (["start", "--rate", "60"], "rate"),
        (["start", "--rate", "1", "--kind", "root"], "'root' is not one of"),
        (["storm", "gateway"], "Missing option '--kills'"),
        (["failpoint", "storage.nowhere"], "is not one of"),
        (["failpoint", "storage.after_commit", "--count", "-1"], "-1 is not in the range"),
    ],
)
def test_the_cli_rejects_bad_arguments_with_usage_errors(
    served: NodeProcess, args: list[str], words: str
) -> None:
    code, out = chaos(served, *args)
    assert code == 2, out
    assert words in out


def test_the_cli_exit_codes(served: NodeProcess, tmp_path: Path) -> None:
    code, out = chaos(served, "havoc", "no-such-supervisor")
    assert code == 1
    assert "not_found" in out
    code, out = chaos(served, "storm", "presence", "--kills", "1")
    assert code == 1
    assert "refused" in out
    missing = tmp_path / "nothing.sock"
    result = CliRunner().invoke(main, ["chaos", "--node", str(missing), "status"])
    assert result.exit_code == 3
    assert str(missing) in result.output
