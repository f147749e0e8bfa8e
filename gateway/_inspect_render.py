"""Human output of ``parley inspect`` with rich: the tree, tables and top's live view.

Each function takes the endpoint's JSON result (the shapes in docs/inspector.md) and prints it
on stdout; none of them talks to the node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

_STATUS_STYLE = {
    "running": "green",
    "waiting": "green",
    "hibernated": "cyan",
    "suspended": "yellow",
    "restarting": "yellow",
    "starting": "yellow",
    "stopped": "red",
    "exited": "red",
    "exiting": "red",
}


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _label(entry: dict[str, Any]) -> Text:
    text = Text()
    text.append(str(entry["id"]), style="bold")
    pid = entry.get("pid")
    text.append(f"  #{pid}" if pid is not None else "  -", style="dim")
    name = entry.get("name")
    if name and name != entry["id"]:
        text.append(f" {name}", style="magenta")
    text.append(f"  {entry['behaviour']}")
    kind = entry["kind"]
    if kind == "supervisor":
        text.append(f"  supervisor/{entry['strategy']}", style="blue")
    status = entry["status"]
    text.append(f"  {status}", style=_STATUS_STYLE.get(status, ""))
    if entry.get("mailbox_length") or entry.get("mailbox_high_water_mark"):
        text.append(f"  mailbox {entry['mailbox_length']} (max {entry['mailbox_high_water_mark']})")
    if entry.get("restarts"):
        text.append(f"  restarts {entry['restarts']}", style="yellow")
        if entry.get("last_reason"):
            text.append(f" (last: {entry['last_reason']})", style="yellow")
    if kind == "supervisor" and entry.get("summarised"):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(entry["by_status"].items()))
        text.append(
            f"  {entry['child_count']} children ({counts}); top {len(entry['children'])} "
            "by mailbox:",
            style="dim",
        )
    elif kind == "supervisor":
        text.append(f"  {entry['child_count']} children", style="dim")
    return text


def render_tree(result: dict[str, Any]) -> None:
    """The supervision tree, one line per actor."""
    root = Tree(_label(result))
    stack = [(result, root)]
    while stack:
        entry, branch = stack.pop()
        for child in entry["children"]:
            stack.append((child, branch.add(_label(child))))
    _console().print(root)


def render_kv(title: str, result: Any) -> None:
    """A small result as ``title: key=value ...``."""
    if isinstance(result, dict):
        body = "  ".join(f"{k}={v}" for k, v in result.items())
    else:
        body = str(result)
    _console().print(f"{title}: {body}")


def render_info(result: dict[str, Any]) -> None:
    """One actor as a two-column table."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    mailbox = result["mailbox"]
    rows: list[tuple[str, Any]] = [
        ("pid", result["pid"]),
        ("name", result["name"]),
        ("behaviour", result["behaviour"]),
        ("status", result["status"]),
        (
            "mailbox",
            f"{mailbox['length']} / {mailbox['capacity']} (high-water {mailbox['high_water_mark']},"
            f" {mailbox['overflow']})",
        ),
        ("processed", result["processed"]),
        ("links", ", ".join(f"#{p}" for p in result["links"]) or "-"),
        ("monitors", ", ".join(f"#{p}" for p in result["monitors"]) or "-"),
        ("monitored by", ", ".join(f"#{p}" for p in result["monitored_by"]) or "-"),
        ("parent", f"#{result['parent']}" if result["parent"] is not None else "-"),
        ("trap_exit", result["trap_exit"]),
        ("uptime", f"{result['uptime_s']:.1f} s"),
        ("child id", result["child_id"]),
        ("restarts", result["restarts"]),
        ("last reason", result["last_reason"] or "-"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    summary = result.get("summary")
    if summary:
        for key, value in summary.items():
            table.add_row(f"  {key}", str(value))
    _console().print(table)


def render_stats(result: dict[str, Any]) -> None:
    """Node-wide figures as a few small tables."""
    console = _console()
    figures = Table(title="node", show_header=False, box=None, title_justify="left")
    figures.add_column(style="bold")
    figures.add_column(justify="right")
    rss = result.get("rss_bytes")
    lag = result["loop_lag_s"]
    ack = result["ack_latency_s"]
    commit = result["storage_commit_latency_s"]
    for key, value in (
        ("actors", result["actors"]["total"]),
        ("connections", result["connections"]),
        ("sessions", result["sessions"]),
        ("conversations", result["conversations"]),
        ("messages in/s", result["messages_in_per_s"]),
        ("messages out/s", result["messages_out_per_s"]),
        (
            "ack latency p50/p99 (s, ≤ bucket)",
            f"{ack['p50'] or '-'} / {ack['p99'] or '-'}  (n={ack['count']})",
        ),
        (
            "commit latency p50/p99 (s)",
            f"{_round(commit['p50'])} / {_round(commit['p99'])}  (n={commit['count']})",
        ),
        ("restarts/min", result["restarts_per_min"]),
        ("restarts (total)", result["restarts_total"]),
        ("dead letters", result["dead_letters"]["total"]),
        ("RSS", f"{rss / 2**20:.1f} MiB" if rss else "?"),
        ("loop lag last/max (ms)", f"{_ms(lag['last'])} / {_ms(lag['max'])}"),
    ):
        figures.add_row(key, str(value))
    console.print(figures)
    kinds = Table(title="actors by behaviour", title_justify="left")
    kinds.add_column("behaviour")
    kinds.add_column("actors", justify="right")
    for name, count in result["actors"]["by_behaviour"].items():
        kinds.add_row(name, str(count))
    console.print(kinds)
    statuses = "  ".join(f"{k} {v}" for k, v in result["actors"]["by_status"].items())
    console.print(f"by status: {statuses}")


def _round(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def top_table(frame: dict[str, Any], sort: str) -> Group:
    """One frame of ``top`` as a header line and a table."""
    header = Text(
        f"{frame['actors']} actors · sorted by {sort} · rates over {frame['window_s']:.1f} s",
        style="bold",
    )
    table = Table(expand=False)
    for column, justify in (
        ("pid", "right"),
        ("name", "left"),
        ("behaviour", "left"),
        ("status", "left"),
        ("mailbox", "right"),
        ("msgs/s", "right"),
        ("processed", "right"),
        ("memory", "right"),
        ("restarts", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in frame["rows"]:
        table.add_row(
            str(row["pid"]),
            row["name"] or "",
            row["behaviour"],
            Text(row["status"], style=_STATUS_STYLE.get(row["status"], "")),
            str(row["mailbox"]),
            f"{row['rate']:.1f}",
            str(row["processed"]),
            f"{row['memory'] / 1024:.1f}K",
            str(row["restarts"]),
        )
    return Group(header, table)


def render_top(frames: Iterable[dict[str, Any]], sort: str) -> None:
    """Each frame replaces the last on the terminal (the last one stays)."""
    console = _console()
    with Live(console=console, auto_refresh=False, transient=False) as live:
        for frame in frames:
            live.update(top_table(frame, sort), refresh=True)
    console.line()
