"""``parley inspect``: the operator's view of a running node through its admin endpoint.

Human output with rich (tables, trees, a live view); ``--json`` prints the endpoint's results as
they come (one JSON document; one JSON line per frame or event for ``top`` and ``trace``).
Exit codes: 0 ok, 1 not found / refused / unauthorized, 2 usage (or a request the node calls
bad), 3 cannot connect (the path or address tried is printed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from config import ConfigError, load_settings

from ._cli_options import config_option, data_dir_option
from ._inspect import (
    AdminClient,
    ConnectFailed,
    InspectError,
    RemoteError,
    parse_target,
)
from ._inspect_render import render_info, render_kv, render_stats, render_top, render_tree

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


@dataclass
class Target:
    """Where ``parley inspect`` connects and how it prints, from the group's options."""

    node: str | None = None
    data_dir: Path | None = None
    config_file: Path | None = None
    token: str | None = None
    as_json: bool = False
    command: str = "inspect"  # the subcommand named in error messages

    def address(self) -> tuple[str, int] | Path:
        if self.node is not None:
            try:
                return parse_target(self.node)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--node") from exc
        try:
            settings = load_settings(self.config_file, overrides={"server.data_dir": self.data_dir})
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        return Path(settings.admin.socket)


def _fail(code: int, message: str, command: str = "inspect") -> NoReturn:
    click.echo(f"parley {command}: {message}", err=True)
    sys.exit(code)


@contextmanager
def _client(target: Target) -> Iterator[AdminClient]:
    command = target.command
    try:
        with AdminClient(target.address(), target.token) as client:
            yield client
    except ConnectFailed as exc:
        _fail(EXIT_UNREACHABLE, str(exc), command)
    except RemoteError as exc:
        _fail(EXIT_USAGE if exc.code == "bad_request" else EXIT_FAILED, str(exc), command)
    except (InspectError, OSError) as exc:
        _fail(EXIT_UNREACHABLE, f"lost the connection: {exc}", command)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=True))


def _ref(value: str) -> int | str:
    """A REF argument: digits are a pid, anything else a registered name."""
    return int(value) if value.isdigit() else value


pass_target = click.make_pass_decorator(Target)


def _json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(Target).as_json = True

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=callback,
        help="Print JSON (see docs/inspector.md for the schema).",
    )(command)


def admin_endpoint_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--node``, ``--data-dir``, ``--config``, ``--token`` and ``--json``: how a command group
    (``parley inspect``, ``parley chaos``) reaches a node's admin endpoint. Its callback passes
    them to :func:`bind_target`."""
    command = _json_option(command)
    command = click.option("--token", metavar="T", help="The [admin] token, for TCP.")(command)
    command = config_option()(command)
    command = data_dir_option("The node's data directory (default ./parley-data).")(command)
    return click.option(
        "--node",
        metavar="PATH|HOST:PORT",
        help="The admin endpoint: a Unix socket path, or HOST:PORT for TCP (default: the data "
        "directory's admin.sock, or [admin] socket).",
    )(command)


def bind_target(
    ctx: click.Context,
    command: str,
    node: str | None,
    data_dir: Path | None,
    config_file: Path | None,
    token: str | None,
) -> Target:
    """The group's :class:`Target` from :func:`admin_endpoint_options`' values (``--json`` may
    come before or after the subcommand: its callback sets ``as_json``).

    Raises:
        click.UsageError: both ``--data-dir`` and ``--config``.
    """
    if data_dir is not None and config_file is not None:
        raise click.UsageError("give --data-dir or --config, not both")
    target = ctx.ensure_object(Target)
    target.node, target.data_dir, target.config_file = node, data_dir, config_file
    target.token = token
    target.command = command
    return target


@click.group()
@admin_endpoint_options
@click.pass_context
def inspect(
    ctx: click.Context,
    node: str | None,
    data_dir: Path | None,
    config_file: Path | None,
    token: str | None,
) -> None:
    """Look inside a running node: its supervision tree, busiest actors, one actor, traces.

    Exit codes: 0 ok, 1 not found or refused, 2 usage, 3 cannot connect.
    """
    bind_target(ctx, "inspect", node, data_dir, config_file, token)


@inspect.command("tree")
@click.option("--depth", type=click.IntRange(0, 64), help="Levels below the root (default all).")
@click.option(
    "--top",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    help="Children shown of a summarised dynamic supervisor.",
)
@_json_option
@pass_target
def tree_command(target: Target, depth: int | None, top: int) -> None:
    """The supervision tree: ids, pids, kinds, strategies, status, restarts, mailboxes."""
    with _client(target) as client:
        result = client.request("tree", depth=depth, top=top)
    if target.as_json:
        _echo_json(result)
    else:
        render_tree(result)


@inspect.command("top")
@click.option(
    "--sort",
    type=click.Choice(["mailbox", "rate", "memory", "restarts"]),
    default="mailbox",
    show_default=True,
)
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    help="Seconds between frames.",
)
@click.option(
    "--window",
    type=click.FloatRange(0.1, 600),
    default=5.0,
    show_default=True,
    help="Seconds over which message rates are taken.",
)
@click.option("-n", "--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--count", type=click.IntRange(1, 1_000_000), help="Frames, then exit.")
@_json_option
@pass_target
def top_command(
    target: Target, sort: str, interval: float, window: float, limit: int, count: int | None
) -> None:
    """A live view of the busiest actors (Ctrl-C to stop), with message rates."""
    window = max(window, interval)
    with _client(target) as client:
        frames = client.stream(
            "top", sort=sort, interval=interval, window=window, n=limit, count=count
        )
        try:
            if target.as_json:
                for frame in frames:
                    click.echo(json.dumps(frame, sort_keys=True))
            else:
                render_top(frames, sort)
        except KeyboardInterrupt:
            pass


@inspect.command("info")
@click.argument("ref", metavar="REF|NAME")
@_json_option
@pass_target
def info_command(target: Target, ref: str) -> None:
    """Everything about one actor (by pid or registered name)."""
    with _client(target) as client:
        result = client.request("info", ref=_ref(ref))
    if target.as_json:
        _echo_json(result)
    else:
        render_info(result)


@inspect.command("stats")
@_json_option
@pass_target
def stats_command(target: Target) -> None:
    """Node-wide figures: actors, connections, message rates, latencies, restarts, memory."""
    with _client(target) as client:
        result = client.request("stats")
    if target.as_json:
        _echo_json(result)
    else:
        render_stats(result)


def _simple(target: Target, op: str, title: str, **args: Any) -> None:
    with _client(target) as client:
        result = client.request(op, **args)
    if target.as_json:
        _echo_json(result)
    else:
        render_kv(title, result)


@inspect.command("kill")
@click.argument("ref", metavar="REF|NAME")
@click.option("--reason", default="kill", show_default=True, help="The exit reason sent.")
@_json_option
@pass_target
def kill_command(target: Target, ref: str, reason: str) -> None:
    """Send an exit signal (``kill`` cannot be trapped); its supervisor decides the rest."""
    _simple(target, "kill", "killed", ref=_ref(ref), reason=reason)


@inspect.command("restart")
@click.argument("supervisor", metavar="SUPERVISOR")
@click.argument("child_id", metavar="CHILD_ID")
@_json_option
@pass_target
def restart_command(target: Target, supervisor: str, child_id: str) -> None:
    """Restart a supervisor's child (static: by id; dynamic: by pid or name)."""
    _simple(target, "restart", "restarted", supervisor=_ref(supervisor), child=_ref(child_id))


@inspect.command("suspend")
@click.argument("ref", metavar="REF|NAME")
@_json_option
@pass_target
def suspend_command(target: Target, ref: str) -> None:
    """Stop an actor taking messages (they keep queueing) until ``resume``."""
    _simple(target, "suspend", "suspended", ref=_ref(ref))


@inspect.command("resume")
@click.argument("ref", metavar="REF|NAME")
@_json_option
@pass_target
def resume_command(target: Target, ref: str) -> None:
    """Let a suspended actor take messages again."""
    _simple(target, "resume", "resumed", ref=_ref(ref))


@inspect.command("trace")
@click.argument("ref", metavar="REF|NAME")
@click.option("--count", type=click.IntRange(1, 10_000), required=True, help="Messages, then stop.")
@click.option(
    "--rate",
    type=click.FloatRange(0.01, 1000),
    default=100.0,
    show_default=True,
    help="At most this many messages per second are shown (the rest are dropped).",
)
@_json_option
@pass_target
def trace_command(target: Target, ref: str, count: int, rate: float) -> None:
    """Show the messages an actor takes, up to --count (a limit is mandatory)."""
    with _client(target) as client:
        try:
            for item in client.stream("trace", ref=_ref(ref), count=count, rate=rate):
                if target.as_json:
                    click.echo(json.dumps(item, sort_keys=True))
                else:
                    at, pid, kind = item["at"], item["pid"], item["kind"]
                    click.echo(f"{at:.6f}  #{pid}  {kind:<6} {item['message']}")
        except KeyboardInterrupt:
            pass
