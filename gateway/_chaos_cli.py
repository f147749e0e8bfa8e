"""``parley chaos``: drive a running node's chaos monkey through its admin endpoint.

The same connection options and exit codes as ``parley inspect`` (0 ok, 1 not found / refused /
unauthorized, 2 usage or a request the node calls bad, 3 cannot connect); ``--json`` prints the
endpoint's result as one JSON document (schemas in docs/inspector.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click

from ._admin_protocol import CHAOS_KINDS, FAILPOINT_NAMES, MAX_KILLS
from ._cli_options import F
from ._inspect_cli import (
    Target,
    _client,
    _echo_json,
    _json_option,
    _ref,
    admin_endpoint_options,
    bind_target,
    pass_target,
)

#: Seconds ``parley chaos`` allows the node beyond the op's own waits.
SLACK: Final = 60.0


def _record_line(record: dict[str, Any]) -> str:
    name = f" {record['name']}" if record["name"] else ""
    head = f"killed {record['kind']} #{record['pid']}{name} (supervisor #{record['supervisor']})"
    if record["restarted_pid"] is None:
        return f"{head}: not restarted"
    return f"{head}: restarted as #{record['restarted_pid']} in {record['restart_latency_s']} s"


def _run(target: Target, op: str, timeout: float | None, **args: Any) -> Any:
    with _client(target) as client:
        client.reply_timeout = timeout
        result = client.request(op, **args)
    if target.as_json:
        _echo_json(result)
        return None
    return result


@click.group()
@admin_endpoint_options
@click.pass_context
def chaos(
    ctx: click.Context,
    node: str | None,
    data_dir: Path | None,
    config_file: Path | None,
    token: str | None,
) -> None:
    """Kill a running node's actors on purpose: by kind, at a seeded rate, up to a
    supervisor's restart intensity (havoc) or beyond it (storm), and arm storage failpoints.

    The root, the admin endpoint, the monkey and the metrics endpoint are never killed.
    Exit codes: 0 ok, 1 not found or refused, 2 usage, 3 cannot connect.
    """
    bind_target(ctx, "chaos", node, data_dir, config_file, token)


_SEED = click.option("--seed", type=int, help="Seed of the random choices (default: unseeded).")


def _wait_option(default: float) -> Callable[[F], F]:
    return click.option(
        "--wait",
        type=click.FloatRange(0, 600),
        default=default,
        show_default=True,
        help="Seconds to wait for each restart.",
    )


@chaos.command("kill")
@click.argument("kind", type=click.Choice(CHAOS_KINDS))
@click.option("--count", type=click.IntRange(1, MAX_KILLS), default=1, show_default=True)
@_SEED
@_wait_option(5.0)
@_json_option
@pass_target
def kill_command(target: Target, kind: str, count: int, seed: int | None, wait: float) -> None:
    """Kill COUNT random actors of KIND, one after another, each only if its supervisor stays
    below its restart intensity (otherwise it is skipped)."""
    result = _run(
        target,
        "chaos.kill",
        count * (wait + 1) + SLACK,
        kind=kind,
        count=count,
        seed=seed,
        wait=wait,
    )
    if result is not None:
        for record in result["kills"]:
            click.echo(_record_line(record))
        click.echo(f"skipped: {result['skipped']}")


@chaos.command("start")
@click.option(
    "--rate",
    type=click.FloatRange(0, 50, min_open=True),
    required=True,
    help="Kills per second (at most 50).",
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(CHAOS_KINDS),
    multiple=True,
    help="A kind to kill (repeat for several; default all six).",
)
@click.option(
    "--duration",
    type=click.FloatRange(0, min_open=True),
    help="Seconds, then stop (default: until `parley chaos stop`).",
)
@_SEED
@_json_option
@pass_target
def start_command(
    target: Target, rate: float, kinds: tuple[str, ...], duration: float | None, seed: int | None
) -> None:
    """Kill random actors at RATE per second in the background (seeded: the seed is shown)."""
    args: dict[str, Any] = {"rate": rate, "duration": duration, "seed": seed}
    if kinds:
        args["kinds"] = list(kinds)
    result = _run(target, "chaos.start", SLACK, **args)
    if result is not None:
        _status(result)


@chaos.command("stop")
@_json_option
@pass_target
def stop_command(target: Target) -> None:
    """Stop the background kills."""
    result = _run(target, "chaos.stop", SLACK)
    if result is not None:
        _status(result)


@chaos.command("status")
@_json_option
@pass_target
def status_command(target: Target) -> None:
    """Whether the monkey is running, its last run's settings and every kill so far."""
    result = _run(target, "chaos.status", SLACK)
    if result is not None:
        _status(result, log=20)


def _status(result: dict[str, Any], log: int = 0) -> None:
    state = "running" if result["running"] else "stopped"
    kinds = ",".join(result["kinds"] or []) or "-"
    click.echo(
        f"{state}  seed={result['seed']}  rate={result['rate']}/s  kinds={kinds}  "
        f"duration={result['duration']}"
    )
    by_kind = "  ".join(f"{k}={n}" for k, n in result["by_kind"].items()) or "-"
    click.echo(f"kills={result['kills']}  skipped={result['skipped']}  by kind: {by_kind}")
    for record in result["log"][-log:] if log else ():
        click.echo(f"  {record['at']:.3f}  {_record_line(record)}")


@chaos.command("havoc")
@click.argument("supervisor", metavar="SUPERVISOR")
@_SEED
@_wait_option(5.0)
@_json_option
@pass_target
def havoc_command(target: Target, supervisor: str, seed: int | None, wait: float) -> None:
    """Kill SUPERVISOR's restartable children until its restarts inside its period reach
    intensity - 1 (so it does not give up)."""
    result = _run(target, "chaos.havoc", None, supervisor=_ref(supervisor), seed=seed, wait=wait)
    if result is not None:
        click.echo(
            f"havoc on #{result['supervisor']} (intensity {result['intensity']} in "
            f"{result['period']} s): {len(result['kills'])} kills, escalated={result['escalated']}"
        )
        for record in result["kills"]:
            click.echo(f"  {_record_line(record)}")


@chaos.command("storm")
@click.argument("supervisor", metavar="SUPERVISOR")
@click.option("--kills", type=click.IntRange(1, MAX_KILLS), required=True)
@click.option(
    "--child",
    metavar="ID|PID|NAME",
    help="The child to kill (default: the supervisor's first running child).",
)
@_wait_option(10.0)
@_json_option
@pass_target
def storm_command(
    target: Target, supervisor: str, kills: int, child: str | None, wait: float
) -> None:
    """Kill one child of SUPERVISOR KILLS times back to back, without the guard: more than
    its intensity inside its period makes it give up (escalate)."""
    result = _run(
        target,
        "chaos.storm",
        kills * (wait + 1) + SLACK,
        supervisor=_ref(supervisor),
        child=_ref(child) if child is not None else None,
        kills=kills,
        wait=wait,
    )
    if result is not None:
        click.echo(
            f"storm on #{result['supervisor_pid_before']} (intensity {result['intensity']} in "
            f"{result['period']} s): {result['kills']} kills, escalated={result['escalated']}, "
            f"now #{result['supervisor_pid_after']}"
        )
        for record in result["records"]:
            click.echo(f"  {_record_line(record)}")


@chaos.command("failpoint")
@click.argument("name", type=click.Choice(FAILPOINT_NAMES))
@click.option(
    "--count",
    type=click.IntRange(0, 1_000_000),
    default=1,
    show_default=True,
    help="Times it fires (0 disarms it).",
)
@_json_option
@pass_target
def failpoint_command(target: Target, name: str, count: int) -> None:
    """Arm a storage failpoint: the shard actor crashes after a batch's commit, before its
    replies (storage.after_commit), or right after them (storage.after_reply)."""
    result = _run(target, "chaos.failpoint", SLACK, name=name, count=count)
    if result is not None:
        click.echo(f"armed: {result['name']} x{result['armed']}")


@chaos.command("failpoints")
@_json_option
@pass_target
def failpoints_command(target: Target) -> None:
    """Every storage failpoint: firings left (armed) and so far (hits)."""
    result = _run(target, "chaos.failpoints", SLACK)
    if result is not None:
        for name, state in result.items():
            click.echo(f"{name}  armed={state['armed']}  hits={state['hits']}")
