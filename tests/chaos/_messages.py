"""The message invariants: nothing acknowledged is lost, nothing appears that was not sent, each
message is stored and delivered at most once, seqs are gapless and stable and arrive in order, and
every online device gets every message within the delivery bound."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from ._model import NO_BODY, Device, Key, Model, Seen, body_key
from ._report import Report, Tally, percentiles


def _key_json(key: Key) -> dict[str, str]:
    return {"conv": key[0], "sender": key[1], "cmid": key[2]}


def _first_acks(model: Model) -> dict[Key, Seen]:
    acks: dict[Key, Seen] = {}
    for ack in model.acks:
        acks.setdefault(ack.key, ack)
    return acks


def check_acks_agree(model: Model, report: Report) -> None:
    """All acks of one (conv, sender, cmid) give the same id and seq."""
    by_key: dict[Key, dict[tuple[str, int], list[str]]] = defaultdict(lambda: defaultdict(list))
    for ack in model.acks:
        by_key[ack.key][(ack.id, ack.seq)].append(ack.where)
    bad = Tally()
    for key, answers in by_key.items():
        if len(answers) > 1:
            acks = [{"id": i, "seq": s, "ops": ops} for (i, s), ops in answers.items()]
            bad.add({**_key_json(key), "acks": acks})
    report.judge("acks_agree", bad, "{count} cmid(s) acknowledged with different ids or seqs")


def check_lost(model: Model, report: Report) -> Tally:
    """Each acked message is in storage and in every final history read of its conversation
    (reads invoked after the ack). Returns the lost messages (each once, with where it is
    missing from)."""
    acks = _first_acks(model)
    missing: dict[Key, list[str]] = defaultdict(list)
    in_storage, in_reads = Tally(), Tally()
    if model.storage is None:
        report.skip("acked_stored", "the history has no storage_dump")
    else:
        stored = {conv: {row.id for row in rows} for conv, rows in model.storage.items()}
        for key, ack in acks.items():
            if ack.id not in stored.get(key[0], set()):
                missing[key].append("storage")
                in_storage.add({**_key_json(key), "id": ack.id, "seq": ack.seq, "acked": ack.where})
    report.judge("acked_stored", in_storage, "{count} acknowledged message(s) not in storage")

    finals = [read for read in model.reads if read.final]
    if not finals:
        report.skip("acked_in_final_reads", "the history has no final history read")
    by_conv: dict[str, list[Seen]] = defaultdict(list)
    for ack in acks.values():
        by_conv[ack.conv].append(ack)
    for read in finals:
        ids = {row.id for row in read.rows}
        for ack in by_conv.get(read.conv, ()):
            if ack.time <= read.op.invoke.time and ack.id not in ids:
                reader = f"{read.user} (history op {read.op.op})"
                missing[ack.key].append(reader)
                in_reads.add({**_key_json(ack.key), "id": ack.id, "seq": ack.seq, "reader": reader})
    report.judge(
        "acked_in_final_reads", in_reads, "{count} acknowledged message(s) missing from final reads"
    )

    lost = Tally()
    for key, where in missing.items():
        ack = acks[key]
        lost.add({**_key_json(key), "id": ack.id, "seq": ack.seq, "missing_from": where})
    return lost


def check_unexpected(model: Model, report: Report) -> Tally:
    """Every message seen anywhere matches a send invoke: same (conv, sender, cmid), a body one
    of those sent when the observation carries one, and an id no other message has."""
    bodies: dict[Key, set[str]] = defaultdict(set)
    for key, ops in model.sends.items():
        for op in ops:
            if "body" in op.invoke.value:
                bodies[key].add(body_key(op.invoke.value["body"]))
    owner: dict[str, Key] = {}
    reported: set[tuple[Key, str]] = set()
    bad = Tally()
    for seen in model.observations():
        reason = None
        if seen.key not in model.sends:
            reason = "no send of this (conv, sender, cmid)"
        elif (
            seen.body is not NO_BODY
            and bodies[seen.key]
            and (body_key(seen.body) not in bodies[seen.key])
        ):
            reason = "body differs from every send of this cmid"
        elif owner.setdefault(seen.id, seen.key) != seen.key:
            reason = f"id also names {list(owner[seen.id])}"
        if reason is not None and (seen.key, seen.id) not in reported:
            reported.add((seen.key, seen.id))
            bad.add({**seen.example(), "reason": reason})
    report.judge("no_unexpected", bad, "{count} message(s) seen that no client sent")
    return bad


def check_at_most_once(model: Model, report: Report) -> tuple[Tally, Tally]:
    """Per (conv, sender, cmid), at most one stored row and one id anywhere: for acked sends
    (``stored_at_most_once``), for unknown-outcome ones (``unknown_at_most_once``); none for sends
    that only failed (``failed_not_stored``). Each device gets each id at most once
    (``delivered_at_most_once``). Returns (duplicated, recovered): recovered are unknown-outcome
    sends found stored once."""
    ids: dict[Key, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for seen in model.observations():
        ids[seen.key][seen.id].append(seen.where)
    stored: dict[Key, list[Seen]] = defaultdict(list)
    for rows in (model.storage or {}).values():
        for row in rows:
            stored[row.key].append(row)

    tallies = {name: Tally() for name in ("stored", "unknown", "failed")}
    recovered = Tally()
    for key, ops in model.sends.items():
        outcomes = sorted({op.outcome for op in ops})
        kind = "stored" if "ok" in outcomes else "unknown" if "info" in outcomes else "failed"
        limit = 0 if kind == "failed" else 1
        seen_ids, rows = ids.get(key, {}), stored.get(key, [])
        if len(seen_ids) > limit or len(rows) > limit:
            tallies[kind].add(
                {
                    **_key_json(key),
                    "outcomes": outcomes,
                    "ids": {i: sorted(set(w))[:5] for i, w in seen_ids.items()},
                    "stored": [[row.seq, row.id] for row in rows],
                }
            )
        elif kind == "unknown" and len(rows) == 1:
            recovered.add({**_key_json(key), "id": rows[0].id, "seq": rows[0].seq})
    report.judge(
        "stored_at_most_once", tallies["stored"], "{count} acked cmid(s) stored more than once"
    )
    report.judge(
        "unknown_at_most_once",
        tallies["unknown"],
        "{count} cmid(s) with unknown outcome stored more than once",
    )
    report.judge(
        "failed_not_stored", tallies["failed"], "{count} cmid(s) whose sends all failed were stored"
    )

    delivered = Counter((d.device, d.seen.id) for d in model.deliveries)
    twice = Tally()
    for (device, msg_id), n in delivered.items():
        if n > 1:
            seen = model.first_delivery[(device, msg_id)].seen
            twice.add(
                {
                    "user": device[0],
                    "device": device[1],
                    "conv": seen.conv,
                    "id": msg_id,
                    "seq": seen.seq,
                    "times": n,
                }
            )
    report.judge(
        "delivered_at_most_once", twice, "{count} message(s) delivered twice to one device"
    )

    duplicated = Tally()
    for kind, tally in (("stored", tallies["stored"]), ("unknown", tallies["unknown"])):
        duplicated.extend(_tagged(tally, kind))
    duplicated.extend(_tagged(twice, "delivered"))
    return duplicated, recovered


def _tagged(tally: Tally, kind: str) -> Tally:
    return Tally(tally.count, [{"kind": kind, **e} for e in tally.examples])


def _node_kill_between(model: Model, start: float, end: float) -> bool:
    return any(
        f.kind == "node.kill" and f.start is not None and start <= f.start.time <= end
        for f in model.faults
    )


def check_seqs(model: Model, report: Report) -> None:
    """Per conversation: stored seqs are exactly 1..last (``seqs_gapless``; each whole-history
    read too); every observation agrees on one id per (conv, seq) and one (conv, seq) per id,
    so no acked pair changes and no seq is reused, across node restarts too (``seq_stable``)."""
    gaps = Tally()
    for conv, rows in sorted((model.storage or {}).items()):
        seqs = Counter(row.seq for row in rows)
        last = max(seqs, default=0)
        holes = sorted(set(range(1, last + 1)) - set(seqs))
        twice = sorted(s for s, n in seqs.items() if n > 1)
        extra = sorted(s for s in seqs if s < 1)
        if holes or twice or extra:
            gaps.add(
                {
                    "conv": conv,
                    "source": "storage",
                    "last": last,
                    "missing": holes[:10],
                    "repeated": twice[:10],
                    "invalid": extra[:10],
                }
            )
    for read in model.reads:
        got = [row.seq for row in read.rows]
        if got != list(range(1, len(got) + 1)):
            bad = next(i for i, s in enumerate(got) if s != i + 1)
            gaps.add(
                {
                    "conv": read.conv,
                    "source": "history",
                    "where": f"history op {read.op.op} by {read.user}",
                    "expected_seq": bad + 1,
                    "got": got[max(bad - 2, 0) : bad + 3],
                }
            )
    report.judge("seqs_gapless", gaps, "{count} conversation view(s) with seq gaps or repeats")

    by_seq: dict[tuple[str, int], dict[str, list[Seen]]] = defaultdict(lambda: defaultdict(list))
    by_id: dict[str, dict[tuple[str, int], list[Seen]]] = defaultdict(lambda: defaultdict(list))
    for seen in model.observations():
        by_seq[(seen.conv, seen.seq)][seen.id].append(seen)
        by_id[seen.id][(seen.conv, seen.seq)].append(seen)
    unstable = Tally()
    for (conv, seq), ids in by_seq.items():
        if len(ids) > 1:
            times = [s.time for seen in ids.values() for s in seen]
            unstable.add(
                {
                    "conv": conv,
                    "seq": seq,
                    "ids": {i: sorted({s.where for s in seen})[:5] for i, seen in ids.items()},
                    "across_node_kill": _node_kill_between(model, min(times), max(times)),
                }
            )
    for msg_id, places in by_id.items():
        if len(places) > 1:
            unstable.add(
                {
                    "id": msg_id,
                    "positions": [
                        {"conv": c, "seq": s, "where": sorted({x.where for x in seen})[:5]}
                        for (c, s), seen in places.items()
                    ],
                }
            )
    report.judge("seq_stable", unstable, "{count} seq(s) or id(s) with more than one meaning")


def check_order(model: Model, report: Report) -> Tally:
    """Each device's deliveries of one conversation come in increasing seq order. Not judged
    here: redeliveries of an id already delivered (counted as duplicates), and a device's own
    messages, which the protocol answers with an ack instead of a live ``msg`` (a later sync
    may still push them, after messages with higher seqs)."""
    own = {(model.send_device[op.op], key) for key, ops in model.sends.items() for op in ops}
    last: dict[tuple[Device, str], int] = {}
    delivered: set[tuple[Device, str]] = set()
    anomalies = Tally()
    for d in model.deliveries:
        if (d.device, d.seen.id) in delivered or (d.device, d.seen.key) in own:
            continue
        delivered.add((d.device, d.seen.id))
        stream = (d.device, d.seen.conv)
        previous = last.get(stream)
        if previous is not None and d.seen.seq <= previous:
            anomalies.add(
                {
                    "user": d.device[0],
                    "device": d.device[1],
                    "conv": d.seen.conv,
                    "seq": d.seen.seq,
                    "after_seq": previous,
                    "index": d.index,
                    "time": d.seen.time,
                }
            )
        else:
            last[stream] = d.seen.seq
    report.judge("delivery_order", anomalies, "{count} delivery(ies) out of seq order")
    return anomalies


def _owed(
    model: Model,
    quiet: float,
    storage: dict[str, list[Seen]],
    members: dict[str, frozenset[str]],
) -> Iterator[tuple[Device, Seen, float]]:
    """(device, stored row, time from which its delivery is due) for every message an online
    device must get: stored in a conversation its user is a member of at the end, first sent
    after the user last joined it, and not sent from that device. Due at max(quiet, first ack),
    or, for a send whose outcome was unknown, max(quiet, when the last attempt ended)."""
    due: dict[Key, tuple[float, float, set[Device]]] = {}
    for key, ops in model.sends.items():
        acked = model.ack_time(key)
        since = max(quiet, max(op.end_time for op in ops) if acked is None else acked)
        first = min(op.invoke.time for op in ops)
        due[key] = (first, since, {model.send_device[op.op] for op in ops})
    for device in model.online:
        for conv, users in sorted(members.items()):
            if device[0] not in users:
                continue
            joined = model.joined.get((conv, device[0]))
            for row in storage.get(conv, ()):
                if row.key not in due:  # no send: reported as unexpected
                    continue
                first, since, senders = due[row.key]
                if device not in senders and (joined is None or first >= joined):
                    yield device, row, since


def check_delivery(model: Model, report: Report, *, bound: float) -> dict[str, Any]:
    """Every device online through the quiet phase gets every stored message of the
    conversations its user is a member of at the end (those sent after the user last joined,
    not from that device) within ``bound`` s of max(quiet, ack). Returns the latency figures:
    ``delivery_latency_s`` (ack to first delivery, over all deliveries, clamped at 0: a recipient
    may see a message before its sender's ack is recorded) and ``late_deliveries``."""
    latencies = []
    for d in model.first_delivery.values():
        acked = model.ack_time(d.seen.key)
        if acked is not None:
            latencies.append(max(d.seen.time - acked, 0.0))

    missing, late = Tally(), Tally()
    why = (
        "the history has no quiet event"
        if model.quiet is None
        else "the history has no storage_dump"
        if model.storage is None
        else "the history has no members records"
        if model.members is None
        else "the history has no online devices"
        if not model.online
        else None
    )
    if why is not None:
        report.skip("online_delivery", why)
        report.skip("delivery_bound", why)
    else:
        assert model.quiet is not None
        assert model.storage is not None
        assert model.members is not None
        for device, row, since in _owed(model, model.quiet, model.storage, model.members):
            example = {"user": device[0], "device": device[1], **row.example()}
            del example["source"], example["where"], example["time"]
            got = model.first_delivery.get((device, row.id))
            if got is None:
                missing.add(example)
            elif got.seen.time - since > bound:
                late.add({**example, "latency_s": round(got.seen.time - since, 6)})
    report.judge(
        "online_delivery", missing, "{count} stored message(s) never reached an online device"
    )
    report.judge(
        "delivery_bound",
        late,
        f"{{count}} delivery(ies) later than {bound} s after max(quiet, ack)",
    )
    return {
        "delivery_latency_s": percentiles(latencies),
        "undelivered": missing.to_json(),
        "late_deliveries": late.to_json(),
    }
