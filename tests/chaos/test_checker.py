"""The chaos history format and its checker: each invariant is fed a history that breaks it."""

from __future__ import annotations

import json
import tempfile
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import SHARD_BACKOFF
from tests.chaos._history import (
    Completion,
    HistoryError,
    HistoryWriter,
    load_history,
    parse_history,
)
from tests.chaos.checker import check, main


class FakeClock:
    """A settable monotonic clock for the writer (seconds)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the format: writer and reader --------------------------------------------------------------


def test_writer_round_trip(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "history.jsonl"
    with HistoryWriter(path, clock=clock) as w:
        w.event("observer", "run", {"seed": 1})
        clock.now += 0.5
        op = w.invoke("c1", "send", {"conv": "g", "cmid": "m1", "body": b"\x00\xff"})
        clock.now += 0.25
        w.complete("c1", "ok", "send", op, {"conv": "g", "cmid": "m1", "id": "I", "seq": 1})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["index"] for r in lines] == [0, 1, 2]
    assert [r["time"] for r in lines] == [0.0, 0.5, 0.75]
    assert lines[1]["value"] == {"op": op, "conv": "g", "cmid": "m1", "body": {"base64": "AP8="}}
    history = load_history(tmp_path)
    (sent,) = history.ops.values()
    assert (sent.f, sent.process, sent.outcome, sent.end_time) == ("send", "c1", "ok", 0.75)
    assert history.events("run")[0].value == {"seed": 1}
    assert history.warnings == ()


def test_writer_refuses_misuse(tmp_path: Path) -> None:
    with HistoryWriter(tmp_path / "h.jsonl") as w:
        op = w.invoke("c1", "send", {})
        with pytest.raises(ValueError, match="invoked as"):
            w.complete("c2", "ok", "send", op)
        with pytest.raises(ValueError, match="completion is one of"):
            w.complete("c1", "done", "send", op)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="assigns the op id"):
            w.invoke("c1", "send", {"op": 3})
        w.complete("c1", "info", "send", op, {"error": "timeout"})
        with pytest.raises(ValueError, match="not pending"):
            w.complete("c1", "ok", "send", op)
        with pytest.raises(TypeError, match="JSON data"):
            w.event("observer", "x", {"v": object()})


def test_writer_is_thread_safe(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:

        def work(n: int) -> None:
            for _ in range(200):
                op = w.invoke(f"c{n}", "send", {})
                w.complete(f"c{n}", "ok", "send", op, {})

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    history = load_history(path)
    assert len(history.records) == 1600
    assert all(op.outcome == "ok" for op in history.ops.values())


def test_reader_rejects_inconsistent_histories() -> None:
    def line(index: int, type_: str, op: int, process: str = "c1") -> str:
        value = {"index": index, "time": 0.0, "process": process, "type": type_, "f": "send"}
        return json.dumps({**value, "value": {"op": op}}) + "\n"

    with pytest.raises(HistoryError, match="never invoked"):
        parse_history([line(0, "ok", 1)])
    with pytest.raises(HistoryError, match="completed by c2"):
        parse_history([line(0, "invoke", 1), line(1, "ok", 1, "c2")])
    with pytest.raises(HistoryError, match="index 5, expected 1"):
        parse_history([line(0, "invoke", 1), line(5, "ok", 1)])
    with pytest.raises(HistoryError, match="not JSON"):
        parse_history(["{\n", line(1, "invoke", 1)])
    # A truncated last line (the run was killed mid-write) is dropped with a warning, and an
    # operation that never completed counts as info.
    history = parse_history([line(0, "invoke", 1), '{"index": 1, "ti'])
    assert history.ops[1].outcome == "info"
    assert len(history.warnings) == 2


# --- a small correct node, recorded the way the harness records one ----------------------------

DELIVERY_BOUND = 5.0
RESTART_BOUND = 2.0
ROOT = ["storage", "presence", "conversations", "sessions", "gateway", "admin"]
GATEWAY = ["listener", "connections"]

Row = list[Any]  # [seq, id, sender, cmid]


def kill_record(kind: str, latency: float | None = 0.05, name: str = "x") -> dict[str, Any]:
    """A chaos monkey kill record; ``latency`` None: not restarted."""
    return {
        "kind": kind,
        "pid": 101,
        "name": name,
        "supervisor": 7,
        "child_id": name,
        "at": 12.5,
        "restarted_pid": None if latency is None else 102,
        "restart_latency_s": latency,
    }


def siblings(
    supervisor: str, strategy: str, killed: str, children: list[str], changed: list[str]
) -> dict[str, Any]:
    """A supervisor's children before and after a fault, ``changed`` ones with new pids."""
    before = {c: 10 + i for i, c in enumerate(children)}
    after = {c: pid + 100 if c in changed else pid for c, pid in before.items()}
    return {
        "supervisor": supervisor,
        "strategy": strategy,
        "killed": killed,
        "before": before,
        "after": after,
    }


def storm(*, above: bool, escalated: bool) -> dict[str, Any]:
    """A ``chaos.storm`` result on the gateway (intensity 3) as the nemesis records it."""
    kills = 4 if above else 2
    records = [kill_record("supervisor", 0.02, "listener") for _ in range(kills)]
    if escalated:
        records[-1] = kill_record("supervisor", None, "listener")
    return {
        "supervisor": "gateway",
        "supervisor_pid_before": 40,
        "supervisor_pid_after": 41 if escalated else 40,
        "intensity": 3,
        "period": 10.0,
        "kills": kills,
        "escalated": escalated,
        "records": records,
        "siblings": siblings("gateway", "rest_for_one", "listener", GATEWAY, GATEWAY),
        "root_siblings": siblings(
            "root", "one_for_one", "gateway", ROOT, ["gateway"] if escalated else []
        ),
    }


class Scenario:
    """Writes a history with :class:`HistoryWriter` the way the harness would, for a node that
    behaves; tests then break one thing and :meth:`finish` checks the result."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.clock = FakeClock()
        self.w = HistoryWriter(directory / "history.jsonl", clock=self.clock)
        self.devices = {"alice": ["d0", "d1"], "bob": ["d0"], "carol": ["d0"], "dave": ["d0"]}
        self.members: dict[str, list[str]] = {}
        self.stored: dict[str, list[Row]] = defaultdict(list)
        self.seq: Counter[str] = Counter()
        self.faults = 0
        self.w.event(
            "observer",
            "run",
            {
                "seed": 7,
                "backend": "memory",
                "duration": 60,
                "clients": 5,
                "settings": {},
                "delivery_bound_s": DELIVERY_BOUND,
                "restart_bound_s": RESTART_BOUND,
            },
        )

    def tick(self, dt: float = 0.01) -> None:
        self.clock.now += dt

    def membership(
        self, f: str, conv: str, members: list[str], *, outcome: Completion = "ok"
    ) -> None:
        """A membership change by alice that leaves ``members`` in ``conv`` (even when the
        client does not learn the outcome)."""
        op = self.w.invoke("c-alice-d0", f, {"user": "alice", "conv": conv})
        self.tick()
        value = {"conv": conv, "members": members, "admins": ["alice"]}
        self.w.complete("c-alice-d0", outcome, f, op, value if outcome == "ok" else {})
        self.members[conv] = list(members)
        self.tick()

    def send(
        self,
        user: str,
        conv: str,
        cmid: str,
        *,
        device: str = "d0",
        outcome: Completion = "ok",
        store: bool = True,
        deliver: bool = True,
    ) -> Row:
        """A send; ``store`` puts it in the conversation (next seq), ``deliver`` hands it to
        every other device of every member at once. Returns the row it got (or would have)."""
        process = f"c-{user}-{device}"
        value = {"user": user, "device": device, "conv": conv, "cmid": cmid, "body": cmid * 2}
        op = self.w.invoke(process, "send", value)
        self.tick()
        self.seq[conv] += store
        row: Row = [self.seq[conv], f"{conv}:{self.seq[conv]}:{cmid}", user, cmid]
        if store:
            self.stored[conv].append(row)
        self.tick()
        if outcome == "ok":
            ack = {"conv": conv, "cmid": cmid, "id": row[1], "seq": row[0], "ts": 1}
            self.w.complete(process, "ok", "send", op, ack)
        elif outcome == "info":
            self.w.complete(process, "info", "send", op, {"error": "timeout"})
        else:
            self.w.complete(process, "fail", "send", op, {"code": "forbidden"})
        if store and deliver:
            self.deliver_all(conv, row, sender=(user, device))
        return row

    def resend(self, row: Row, conv: str, *, device: str = "d0") -> None:
        """A retry of ``row``'s cmid, answered with the same ack."""
        user, cmid = row[2], row[3]
        process = f"c-{user}-{device}"
        value = {"user": user, "device": device, "conv": conv, "cmid": cmid, "body": cmid * 2}
        op = self.w.invoke(process, "send", value)
        self.tick()
        ack = {"conv": conv, "cmid": cmid, "id": row[1], "seq": row[0], "ts": 1}
        self.w.complete(process, "ok", "send", op, ack)

    def deliver(self, user: str, device: str, conv: str, row: Row) -> None:
        seq, msg_id, sender, cmid = row
        value = {"user": user, "device": device, "conv": conv, "seq": seq, "id": msg_id}
        value |= {"sender": sender, "cmid": cmid, "via": "live"}
        self.w.event(f"c-{user}-{device}", "deliver", value)

    def deliver_all(self, conv: str, row: Row, *, sender: tuple[str, str]) -> None:
        for user in self.members[conv]:
            for device in self.devices[user]:
                if (user, device) != sender:
                    self.deliver(user, device, conv, row)

    def fault(self, kind: str, detail: dict[str, Any]) -> None:
        self.faults += 1
        value = {"id": self.faults, "kind": kind, "phase": "start", "detail": {}}
        self.w.event("nemesis", "fault", value)
        self.tick(0.2)
        self.w.event("nemesis", "fault", {**value, "phase": "end", "detail": detail})
        self.tick()

    def stats(self, phase: str, *, actors: int = 40, max_mailbox: int = 3) -> None:
        value = {
            "phase": phase,
            "actors": actors,
            "by_kind": {"sessions": 0, "conversations": actors - 40},
            "max_mailbox": max_mailbox,
            "mailbox_capacity": 1000,
            "restarts": {"root": 1, "gateway": 2},
        }
        self.w.event("observer", "node_stats", value)

    def finish(
        self,
        *,
        dump: dict[str, list[Row]] | None = None,
        reads: dict[tuple[str, str], list[Row]] | None = None,
        end_actors: int = 41,
        observer: bool = True,
    ) -> dict[str, Any]:
        """The end of the run (online devices, final reads by every member, the observer's
        records, with ``dump`` and ``reads`` replacing what the node stored); the checker's
        results."""
        for user, devices in self.devices.items():
            for device in devices:
                self.w.event("observer", "online", {"user": user, "device": device})
        self.w.event("nemesis", "final", {})
        for conv, users in self.members.items():
            for user in users:
                op = self.w.invoke(f"c-{user}-d0", "history", {"user": user, "conv": conv})
                self.tick()
                rows = (reads or {}).get((conv, user), self.stored[conv])
                value = {"user": user, "conv": conv, "messages": rows}
                self.w.complete(f"c-{user}-d0", "ok", "history", op, value)
        self.w.event("c-bob-d0", "redeliveries", {"user": "bob", "device": "d0", "count": 2})
        self.stats("end", actors=end_actors)
        if observer:
            for conv, users in self.members.items():
                rows = (dump or {}).get(conv, self.stored[conv])
                self.w.event("observer", "storage_dump", {"conv": conv, "messages": rows})
                self.w.event("observer", "members", {"conv": conv, "members": users})
        self.w.close()
        return check(load_history(self.dir))


def clean(s: Scenario) -> Scenario:
    """A run of a correct node: sends with every outcome, a retry, a member who joins late, a
    direct conversation, and faults whose results are what the strategies imply."""
    s.stats("baseline")
    s.membership("create_group", "g1", ["alice", "bob", "carol"])
    s.members["dm"] = ["alice", "bob"]  # a direct conversation: no membership op
    a1 = s.send("alice", "g1", "a1")
    s.send("bob", "g1", "b1")
    s.send("alice", "g1", "a2", device="d1")  # alice's other device gets it
    s.resend(a1, "g1")
    s.send("carol", "g1", "c1", outcome="info")  # stored anyway: recovered
    s.send("bob", "g1", "b2", outcome="info", store=False)
    s.send("carol", "g1", "c2", outcome="fail", store=False)
    s.send("alice", "dm", "a3")
    s.fault("kill.conversation", {"kills": [kill_record("conversation")], "skipped": 0})
    s.fault("kill.session", {"kills": [kill_record("session", None)], "skipped": 0})
    root = siblings("root", "one_for_one", "presence", ROOT, ["presence"])
    s.fault("kill.presence", {"kills": [kill_record("presence")], "siblings": root})
    gateway = siblings("gateway", "rest_for_one", "connections", GATEWAY, ["connections"])
    s.fault("kill.supervisor", {"kills": [kill_record("supervisor", 1.5)], "siblings": gateway})
    s.fault("storm.below", storm(above=False, escalated=False))
    s.fault("storm.above", storm(above=True, escalated=True))
    s.fault("node.kill", {"exit_code": -9, "restart_s": 1.2})
    s.stats("sample", actors=60, max_mailbox=900)
    s.membership("add_members", "g1", ["alice", "bob", "carol", "dave"])  # dave: not a1..c1
    s.w.event("nemesis", "quiet", {})
    s.tick(1.0)
    s.send("bob", "g1", "b3")
    s.send("dave", "g1", "d1")
    s.send("bob", "dm", "b4")
    s.tick(0.5)
    return s


@pytest.fixture
def run(tmp_path: Path) -> Scenario:
    return clean(Scenario(tmp_path))


def failed(results: dict[str, Any]) -> set[str]:
    return {f["invariant"] for f in results["failures"]}


def examples(results: dict[str, Any], invariant: str) -> list[dict[str, Any]]:
    (failure,) = (f for f in results["failures"] if f["invariant"] == invariant)
    assert failure["count"] == len(failure["examples"]) or len(failure["examples"]) == 10
    return failure["examples"]  # type: ignore[no-any-return]


# --- a correct run is valid ---------------------------------------------------------------------


def test_clean_run_is_valid(run: Scenario) -> None:
    results = run.finish()
    assert results["failures"] == []
    assert results["valid"] is True
    assert set(results["invariants"].values()) == {"pass"}, results["unchecked"]
    assert results["lost"]["count"] == results["unexpected"]["count"] == 0
    assert results["duplicated"]["count"] == 0
    assert results["recovered"]["count"] == 1
    assert results["recovered"]["examples"][0]["cmid"] == "c1"
    assert results["redeliveries"] == 2
    assert results["operations"]["send"] == {"ok": 8, "info": 2, "fail": 1}
    assert results["faults"]["storm.above"] == 1
    assert results["escalations"]["expected"] == results["escalations"]["seen"] == 1
    assert results["restarts"]["latency_s"]["max"] == 1.5
    assert results["max_mailbox"] == 900
    assert (results["seed"], results["backend"]) == (7, "memory")
    assert results["delivery_latency_s"]["count"] > 0


def test_cli_writes_results_and_exits_by_verdict(run: Scenario, capsys: Any) -> None:
    run.finish()
    assert main([str(run.dir)]) == 0
    written = json.loads((run.dir / "results.json").read_text())
    assert written["valid"] is True
    assert {
        "seed",
        "backend",
        "faults",
        "operations",
        "lost",
        "unexpected",
        "duplicated",
        "recovered",
        "order_anomalies",
        "delivery_latency_s",
        "restarts",
        "escalations",
        "max_mailbox",
        "failures",
    } <= set(written)
    assert "VALID" in capsys.readouterr().out
    # A tighter restart bound than the run's makes the 1.5 s supervisor restart too slow.
    assert main([str(run.dir), "--restart-bound", "1.0"]) == 1
    assert json.loads((run.dir / "results.json").read_text())["valid"] is False


# --- each invariant, broken once ----------------------------------------------------------------


def test_acked_message_missing_from_storage(run: Scenario) -> None:
    results = run.finish(dump={"dm": run.stored["dm"][:-1]})
    assert results["valid"] is False
    assert failed(results) == {"acked_stored"}
    (example,) = examples(results, "acked_stored")
    assert (example["conv"], example["cmid"], example["seq"]) == ("dm", "b4", 2)
    assert results["lost"]["count"] == 1
    assert results["lost"]["examples"][0]["missing_from"] == ["storage"]


def test_acked_message_missing_from_a_members_final_read(run: Scenario) -> None:
    results = run.finish(reads={("g1", "carol"): run.stored["g1"][:-1]})
    assert failed(results) == {"acked_in_final_reads"}
    (example,) = examples(results, "acked_in_final_reads")
    assert example["cmid"] == "d1"
    assert example["reader"].startswith("carol")
    assert results["lost"]["count"] == 1


def test_message_nobody_sent(run: Scenario) -> None:
    run.deliver("bob", "d0", "g1", [9, "forged", "mallory", "m1"])
    results = run.finish()
    assert failed(results) == {"no_unexpected"}
    (example,) = examples(results, "no_unexpected")
    assert (example["id"], example["where"], example["sender"]) == ("forged", "bob/d0", "mallory")
    assert results["unexpected"]["count"] == 1


def test_message_with_a_body_never_sent(run: Scenario) -> None:
    dump = [row[:4] for row in run.stored["dm"]]
    dump[0] = [*dump[0], "not what alice wrote"]
    results = run.finish(dump={"dm": dump})
    assert failed(results) == {"no_unexpected"}
    (example,) = examples(results, "no_unexpected")
    assert (example["cmid"], example["source"]) == ("a3", "storage")
    assert "body" in example["reason"]


def test_message_delivered_twice_to_one_device(run: Scenario) -> None:
    run.deliver("carol", "d0", "g1", run.stored["g1"][0])
    results = run.finish()
    assert failed(results) == {"delivered_at_most_once"}
    (example,) = examples(results, "delivered_at_most_once")
    assert (example["user"], example["seq"], example["times"]) == ("carol", 1, 2)
    assert results["duplicated"]["examples"][0]["kind"] == "delivered"


def test_unknown_outcome_send_stored_twice(run: Scenario) -> None:
    run.send("carol", "g1", "twice", outcome="info")
    run.send("carol", "g1", "twice", outcome="info")  # the retry stored a second copy
    results = run.finish()
    assert failed(results) == {"unknown_at_most_once"}
    (example,) = examples(results, "unknown_at_most_once")
    assert example["cmid"] == "twice"
    assert len(example["stored"]) == 2
    assert results["duplicated"]["count"] == 1


def test_acked_send_stored_twice(run: Scenario) -> None:
    run.send("carol", "g1", "again")
    run.send("carol", "g1", "again", outcome="info")
    assert failed(run.finish()) == {"stored_at_most_once"}


def test_retry_acked_with_another_seq(run: Scenario) -> None:
    row = run.stored["g1"][0]
    run.resend([row[0] + 1, *row[1:]], "g1")
    results = run.finish()
    assert "acks_agree" in failed(results)
    assert examples(results, "acks_agree")[0]["cmid"] == row[3]


def test_failed_send_stored(run: Scenario) -> None:
    run.send("carol", "g1", "nope", outcome="fail")
    assert failed(run.finish()) == {"failed_not_stored"}


def test_device_sees_seq_3_before_2(run: Scenario) -> None:
    run.members["g2"] = ["alice", "bob"]
    rows = [run.send("alice", "g2", f"o{i}", deliver=False) for i in range(1, 4)]
    for row in (rows[0], rows[2], rows[1]):
        run.deliver("bob", "d0", "g2", row)
    for row in rows:
        run.deliver("alice", "d1", "g2", row)
    results = run.finish()
    assert failed(results) == {"delivery_order"}
    (example,) = examples(results, "delivery_order")
    assert (example["user"], example["conv"], example["seq"], example["after_seq"]) == (
        "bob",
        "g2",
        2,
        3,
    )
    assert results["order_anomalies"]["count"] == 1


def test_own_message_synced_after_later_ones_is_in_order(run: Scenario) -> None:
    run.members["g2"] = ["alice", "bob"]
    own = run.send("alice", "g2", "mine", outcome="info", deliver=False)  # alice/d0 sent seq 1
    later = run.send("bob", "g2", "theirs", deliver=False)
    for device in ("d0", "d1"):
        run.deliver("alice", device, "g2", own if device == "d1" else later)
    run.deliver("alice", "d0", "g2", own)  # a reconnect's sync pushes alice/d0 its own seq 1
    run.deliver("alice", "d1", "g2", later)
    run.deliver("bob", "d0", "g2", own)
    results = run.finish()
    assert results["valid"] is True, results["failures"]


def test_gap_in_stored_seqs(run: Scenario) -> None:
    run.seq["g1"] += 1  # seq 7 is never assigned
    run.send("bob", "g1", "after-gap")
    results = run.finish()
    assert failed(results) == {"seqs_gapless"}
    found = examples(results, "seqs_gapless")
    assert {"conv": "g1", "source": "storage", "missing": [7]}.items() <= found[0].items()
    assert {e["source"] for e in found} == {"storage", "history"}  # the final reads show it too


def test_seq_reused_with_another_id_after_node_restart(run: Scenario) -> None:
    first = run.send("alice", "dm", "before-kill")
    run.fault("node.kill", {"exit_code": -9, "restart_s": 1.0})
    run.seq["dm"] -= 1  # the restarted node lost the message and hands its seq out again
    run.stored["dm"].remove(first)
    second = run.send("bob", "dm", "after-kill")
    results = run.finish()
    assert {"seq_stable", "acked_stored", "acked_in_final_reads"} <= failed(results)
    (example,) = examples(results, "seq_stable")
    assert (example["conv"], example["seq"]) == ("dm", first[0])
    assert set(example["ids"]) == {first[1], second[1]}
    assert example["across_node_kill"] is True


def test_delivery_later_than_the_bound(run: Scenario) -> None:
    row = run.send("alice", "g1", "slow", deliver=False)
    run.tick(DELIVERY_BOUND + 1.0)
    run.deliver_all("g1", row, sender=("alice", "d0"))
    results = run.finish()
    assert failed(results) == {"delivery_bound"}
    found = examples(results, "delivery_bound")
    assert {(e["user"], e["device"]) for e in found} == {
        ("alice", "d1"),
        ("bob", "d0"),
        ("carol", "d0"),
        ("dave", "d0"),
    }
    assert all(DELIVERY_BOUND < e["latency_s"] < DELIVERY_BOUND + 1.1 for e in found)
    assert results["delivery_latency_s"]["max"] > DELIVERY_BOUND


def test_message_never_delivered_to_an_online_device(run: Scenario) -> None:
    row = run.send("alice", "g1", "lost-in-transit", deliver=False)
    for user, device in [("alice", "d1"), ("bob", "d0"), ("dave", "d0")]:
        run.deliver(user, device, "g1", row)
    results = run.finish()
    assert failed(results) == {"online_delivery"}
    (example,) = examples(results, "online_delivery")
    assert (example["user"], example["cmid"]) == ("carol", "lost-in-transit")


def test_killed_actor_not_restarted_or_restarted_slowly(run: Scenario) -> None:
    kills = [
        kill_record("conversation", None, "c-1"),
        kill_record("presence", RESTART_BOUND + 1.0, "presence"),
        # A storage shard comes back after its backoff: late, but within it, is fine ...
        kill_record("storage", RESTART_BOUND + SHARD_BACKOFF.max - 1.0, "shard-0"),
        # ... beyond it is not.
        kill_record("storage", RESTART_BOUND + SHARD_BACKOFF.max + 1.0, "shard-1"),
    ]
    run.fault("kill.conversation", {"kills": kills, "skipped": 0})
    results = run.finish()
    assert failed(results) == {"restart_bound"}
    found = examples(results, "restart_bound")
    assert [(e["name"], e["problem"]) for e in found] == [
        ("c-1", "not restarted"),
        ("presence", "slow restart"),
        ("shard-1", "slow restart"),
    ]


def test_sibling_restarted_under_one_for_one(run: Scenario) -> None:
    root = siblings("root", "one_for_one", "presence", ROOT, ["presence", "conversations"])
    run.fault("kill.presence", {"kills": [kill_record("presence")], "siblings": root})
    results = run.finish()
    assert failed(results) == {"restart_scope"}
    (example,) = examples(results, "restart_scope")
    assert example["restarted_unexpectedly"] == ["conversations"]


def test_rest_for_one_leaves_a_later_child_running(run: Scenario) -> None:
    gateway = siblings("gateway", "rest_for_one", "listener", GATEWAY, ["listener"])
    run.fault("kill.supervisor", {"kills": [kill_record("supervisor")], "siblings": gateway})
    results = run.finish()
    assert failed(results) == {"restart_scope"}
    assert examples(results, "restart_scope")[0]["not_restarted"] == ["connections"]


def test_storms_escalating_the_wrong_way(run: Scenario) -> None:
    run.fault("storm.above", storm(above=True, escalated=False))
    run.fault("storm.below", storm(above=False, escalated=True))
    results = run.finish()
    assert failed(results) == {"escalation"}
    found = examples(results, "escalation")
    assert [(e["fault_kind"], e["expected"], e["escalated"]) for e in found] == [
        ("storm.above", True, False),
        ("storm.below", False, True),
    ]
    assert results["escalations"]["by_kind"]["storm.above"] == {
        "faults": 2,
        "expected": 2,
        "seen": 1,
    }


def test_mailbox_over_capacity(run: Scenario) -> None:
    run.stats("sample", max_mailbox=1001)
    results = run.finish()
    assert failed(results) == {"mailbox_bounded"}
    assert examples(results, "mailbox_bounded")[0]["max_mailbox"] == 1001
    assert results["max_mailbox"] == 1001


def test_actor_count_not_back_to_baseline(run: Scenario) -> None:
    results = run.finish(end_actors=40 + 6)  # the tolerance is 5 actors at this size
    assert failed(results) == {"actors_baseline"}
    (example,) = examples(results, "actors_baseline")
    assert (example["baseline"], example["end"]) == (40, 46)
    assert example["by_kind"] == {"conversations": 6}


def test_member_added_with_unknown_outcome_is_owed_what_follows(tmp_path: Path) -> None:
    s = clean(Scenario(tmp_path))
    s.devices["erin"] = ["d0"]
    s.membership("add_members", "g1", [*s.members["g1"], "erin"], outcome="info")
    s.send("bob", "g1", "for-erin")
    assert s.finish()["valid"] is True


def test_member_added_with_unknown_outcome_misses_a_message(tmp_path: Path) -> None:
    s = clean(Scenario(tmp_path))
    s.devices["erin"] = ["d0"]
    s.membership("add_members", "g1", [*s.members["g1"], "erin"], outcome="info")
    s.devices["erin"] = []  # the message is fanned out before erin's device is known
    row = s.send("bob", "g1", "not-for-erin")
    s.devices["erin"] = ["d0"]
    results = s.finish()
    assert failed(results) == {"online_delivery"}
    (example,) = examples(results, "online_delivery")
    assert (example["user"], example["id"]) == ("erin", row[1])


# --- too little to judge ------------------------------------------------------------------------


def test_empty_history_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "history.jsonl").write_text("")
    assert main([str(tmp_path)]) == 2
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["valid"] == "unknown"
    assert "no send was acknowledged" in results["unknown_reasons"]


def test_unreadable_history_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "history.jsonl").write_text('{"index": 3}\n{}\n')
    assert main([str(tmp_path)]) == 2
    assert (
        "cannot be judged"
        in json.loads((tmp_path / "results.json").read_text())["unknown_reasons"][0]
    )


def test_run_without_storage_dump_is_unknown(run: Scenario) -> None:
    results = run.finish(observer=False)
    assert results["valid"] == "unknown"
    assert results["unknown_reasons"] == ["no storage_dump records"]
    assert results["invariants"]["acked_stored"] == "unchecked"


def test_failure_wins_over_thin_history(run: Scenario) -> None:
    run.deliver("bob", "d0", "g1", [9, "forged", "mallory", "m1"])
    assert run.finish(observer=False)["valid"] is False


# --- any history of a correct node is valid ----------------------------------------------------


def _faults() -> list[tuple[str, dict[str, Any]]]:
    root = siblings("root", "one_for_one", "presence", ROOT, ["presence"])
    return [
        ("kill.conversation", {"kills": [kill_record("conversation", 0.3)], "skipped": 0}),
        ("kill.connection", {"kills": [kill_record("connection", None)], "skipped": 1}),
        ("kill.presence", {"kills": [kill_record("presence", 0.01)], "siblings": root}),
        ("storm.below", storm(above=False, escalated=False)),
        ("storm.above", storm(above=True, escalated=True)),
        ("node.pause", {"paused_s": 2.0}),
        ("node.kill", {"exit_code": -9, "restart_s": 1.1}),
    ]


#: A send's outcome and whether the node stored it: every combination a correct node can give.
OUTCOMES: list[tuple[Completion, bool]] = [
    ("ok", True),
    ("info", True),
    ("info", False),
    ("fail", False),
]


def simulate(s: Scenario, data: st.DataObject) -> None:
    """Drive ``s`` as a correct node would behave under random traffic: sends with every
    outcome, retries answered with the first ack, members joining, faults with the results the
    strategies imply, each device's deliveries late but in order, and all delivered at quiet."""
    s.stats("baseline")
    users = list(s.devices)
    s.membership("create_group", "g1", users[: data.draw(st.integers(2, 4), label="members")])
    s.members["dm"] = ["alice", "bob"]
    owed: dict[tuple[str, str], list[tuple[str, Row]]] = defaultdict(list)
    stored: dict[tuple[str, str, str], Row] = {}
    sent: list[tuple[str, str, str, str]] = []

    def fan_out(conv: str, row: Row, sender: tuple[str, str]) -> None:
        for user in s.members[conv]:
            for device in s.devices[user]:
                if (user, device) != sender:
                    owed[(user, device)].append((conv, row))

    steps = ["send", "send", "retry", "deliver", "deliver", "join", "wait", "fault"]
    for step in range(data.draw(st.integers(0, 40), label="steps")):
        action = data.draw(st.sampled_from(steps))
        if action == "send":
            conv = data.draw(st.sampled_from(sorted(s.members)))
            user = data.draw(st.sampled_from(s.members[conv]))
            device = data.draw(st.sampled_from(s.devices[user]))
            outcome, store = data.draw(st.sampled_from(OUTCOMES))
            cmid = f"m{step}"
            row = s.send(
                user, conv, cmid, device=device, outcome=outcome, store=store, deliver=False
            )
            sent.append((user, device, conv, cmid))
            if store:
                stored[(conv, user, cmid)] = row
                fan_out(conv, row, (user, device))
        elif action == "retry" and sent:
            user, device, conv, cmid = data.draw(st.sampled_from(sent))
            if (conv, user, cmid) in stored:
                s.resend(stored[(conv, user, cmid)], conv, device=device)
            else:  # the earlier attempts stored nothing: this one does
                row = s.send(user, conv, cmid, device=device, deliver=False)
                stored[(conv, user, cmid)] = row
                fan_out(conv, row, (user, device))
        elif action == "deliver" and owed:
            device_key = data.draw(st.sampled_from(sorted(owed)))
            n = data.draw(st.integers(1, 3))
            for conv, row in owed[device_key][:n]:
                s.deliver(*device_key, conv, row)
            del owed[device_key][:n]
        elif action == "join":
            outsiders = [u for u in users if u not in s.members["g1"]]
            if outsiders:
                s.membership("add_members", "g1", [*s.members["g1"], outsiders[0]])
        elif action == "wait":
            s.tick(data.draw(st.floats(0.0, 3.0)))
        elif action == "fault":
            s.fault(*data.draw(st.sampled_from(_faults())))
    s.w.event("nemesis", "quiet", {})
    for device_key, pending in owed.items():
        for conv, row in pending:
            s.deliver(*device_key, conv, row)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_history_of_a_correct_node_is_valid(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        s = Scenario(Path(directory))
        try:
            simulate(s, data)
            results = s.finish()
        finally:
            s.w.close()  # hypothesis may stop an example at any draw
        assert results["failures"] == []
        acked = results["operations"].get("send", {}).get("ok", 0) > 0
        assert results["valid"] == (True if acked else "unknown")
