"""The ``parley`` command line (subcommands are added as the node grows)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import trio

from actors import SpawnError
from config import ConfigError, load_or_create_secret, load_settings

from ._auth import DEFAULT_TOKEN_TTL_S, mint_token
from ._cli_options import config_option, data_dir_option
from ._logging import configure_logging
from ._validate import ID_RE


@click.group()
@click.version_option(package_name="parley")
def main() -> None:
    """Parley: Erlang-style supervised actors and a chat node built on them."""


def _identifier(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not ID_RE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not 1-64 characters of [A-Za-z0-9_.-]")
    return value


@main.command()
@click.argument("user", callback=_identifier)
@click.option("--device", metavar="D", callback=_identifier, help="Device id (default: default).")
@click.option(
    "--ttl",
    metavar="SECONDS",
    type=click.IntRange(min=1),
    default=DEFAULT_TOKEN_TTL_S,
    show_default=True,
    help="How long the token is valid, in seconds.",
)
@data_dir_option("The node's data directory (its secret is created there if absent).")
@config_option()
def token(
    user: str, device: str | None, ttl: int, data_dir: Path | None, config_file: Path | None
) -> None:
    """Print a token for USER, signed with the secret of the node using this data directory.

    The data directory comes from --data-dir, else from --config, else from the environment
    (PARLEY_SERVER__DATA_DIR), else ./parley-data.
    """
    if data_dir is not None and config_file is not None:
        raise click.UsageError("give --data-dir or --config, not both")
    try:
        settings = load_settings(config_file, overrides={"server.data_dir": data_dir})
        secret = load_or_create_secret(settings.server.data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(mint_token(secret, user, device, ttl_s=ttl))


@main.command()
@click.option("--host", metavar="H", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", metavar="P", type=click.IntRange(0, 65535), help="Port; 0 picks one.")
@data_dir_option("Data directory: secret, SQLite database, node.json (default ./parley-data).")
@click.option("--storage", "storage_url", metavar="URL", help="Storage URL (default: SQLite).")
@click.option("--shards", metavar="N", type=click.IntRange(min=1), help="Storage shards.")
@config_option("TOML configuration file.")
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    storage_url: str | None,
    shards: int | None,
    config_file: Path | None,
) -> None:
    """Run a chat node until SIGTERM or SIGINT, which drain it gracefully.

    Settings come from defaults, --config, PARLEY_* environment variables and these flags, each
    overriding the one before. Once listening, the node logs "listening on ws://HOST:PORT/ws" and
    writes the same address to DATA/node.json.
    """
    from ._serve import serve as run_node

    try:
        settings = load_settings(
            config_file,
            overrides={
                "server.host": host,
                "server.port": port,
                "server.data_dir": data_dir,
                "storage.url": storage_url,
                "storage.shards": shards,
            },
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(settings.server.log_format)
    # A process-wide choice, so made here and not in the embeddable serve(): rarer full
    # collections (see ServerSettings.gc_thresholds), none of which scans what the imports
    # built, since that lives as long as the process.
    gc.set_threshold(*settings.server.gc_thresholds)
    gc.collect()
    gc.freeze()
    try:
        trio.run(run_node, settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    except SpawnError as exc:
        raise click.ClickException(f"the node failed to start: {exc.reason!r}") from exc


@main.command()
@click.argument("user", callback=_identifier)
@click.option("--device", metavar="D", callback=_identifier, help="Device id (default: default).")
@click.option(
    "--url",
    metavar="URL",
    help="The node's WebSocket URL (default: the running node of the data directory, "
    "else ws://127.0.0.1:8765/ws).",
)
@data_dir_option("The node's data directory, for its secret and address (default ./parley-data).")
@config_option()
@click.option("--token", "given_token", metavar="T", help="Use this token instead of minting one.")
def chat(
    user: str,
    device: str | None,
    url: str | None,
    data_dir: Path | None,
    config_file: Path | None,
    given_token: str | None,
) -> None:
    """Chat as USER in this terminal: type to send, /help for commands.

    The token is minted with the secret of the node using this data directory (as `parley
    token` does) unless --token is given.
    """
    from ._client_chat import node_url, run_chat

    if data_dir is not None and config_file is not None:
        raise click.UsageError("give --data-dir or --config, not both")
    try:
        settings = load_settings(config_file, overrides={"server.data_dir": data_dir})
        if given_token is None:
            secret = load_or_create_secret(settings.server.data_dir)
            given_token = mint_token(secret, user, device)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    server = settings.server
    if url is None:
        url = node_url(Path(server.data_dir), server.host, server.port, server.ws_path)
    raise SystemExit(trio.run(run_chat, url, given_token))


def _load_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options every ``parley loadgen`` mode shares."""
    for option in reversed(
        [
            click.option(
                "--url",
                metavar="URL",
                help="The node's WebSocket URL, loopback only (default: the running node of "
                "the data directory).",
            ),
            data_dir_option("The node's data directory, for its secret and address."),
            config_option(),
            click.option(
                "--workers",
                metavar="N",
                type=click.IntRange(0, 64),
                default=0,
                help="Worker processes (default 0: one per 5,000 connections, at least 2).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON line."),
        ]
    ):
        command = option(command)
    return command


@main.group()
def loadgen() -> None:
    """Drive a running node on this machine from worker processes and measure it.

    Tokens are minted with the node's secret (--data-dir or --config, as `parley token`).
    """


def _run_load(
    mode: str,
    users: int,
    *,
    url: str | None,
    data_dir: Path | None,
    config_file: Path | None,
    workers: int,
    as_json: bool,
    rate: float = 0.0,
    duration: float = 10.0,
    light: bool = False,
) -> None:
    import json

    from ._client_chat import node_url
    from ._loadgen import LoadError, LoadPlan, format_report, run_load

    if data_dir is not None and config_file is not None:
        raise click.UsageError("give --data-dir or --config, not both")
    try:
        settings = load_settings(config_file, overrides={"server.data_dir": data_dir})
        secret = load_or_create_secret(settings.server.data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    server = settings.server
    if url is None:
        url = node_url(Path(server.data_dir), server.host, server.port, server.ws_path)
    plan = LoadPlan(
        url=url,
        secret=secret,
        mode=mode,  # type: ignore[arg-type]
        users=users,
        rate=rate,
        duration=duration,
        workers=workers,
        light=light,
    )
    try:
        report = run_load(plan)
    except LoadError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.as_dict(), separators=(",", ":")))
    else:
        click.echo(format_report(report))


@loadgen.command("connect")
@click.argument("count", type=click.IntRange(1, 50_000))
@click.option(
    "--light",
    is_flag=True,
    help="Use the light client: prebuilt upgrade requests on raw sockets, read through "
    "`synced`, then only answer pings; measures the node rather than the client library.",
)
@_load_options
def loadgen_connect(count: int, light: bool, **options: Any) -> None:
    """Open COUNT authenticated connections, hold them idle, report handshakes/s
    (completed at `welcome`, or at `synced` with --light)."""
    _run_load("connect", count, light=light, **options)


@loadgen.command("chat")
@click.option("--users", type=click.IntRange(2, 50_000), default=100, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=100.0,
    show_default=True,
    help="Messages per second in total (0: as fast as acks come back).",
)
@click.option(
    "--duration", type=click.FloatRange(0, 600, min_open=True), default=10.0, show_default=True
)
@_load_options
def loadgen_chat(users: int, rate: float, duration: float, **options: Any) -> None:
    """1:1 traffic among USERS connected users in pairs: ack and delivery latency.

    The node's per-user send rate limit (100 per minute by default) applies: raise it
    (PARLEY_LIMITS__SEND_RATE, PARLEY_LIMITS__SEND_BURST) for rates above about 1.6 per user per
    second, or the excess is counted as send errors.
    """
    _run_load("chat", users, rate=rate, duration=duration, **options)


@loadgen.command("group")
@click.option("--members", type=click.IntRange(2, 50_000), default=256, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Messages per second from one member.",
)
@click.option(
    "--duration", type=click.FloatRange(0, 600, min_open=True), default=10.0, show_default=True
)
@_load_options
def loadgen_group(members: int, rate: float, duration: float, **options: Any) -> None:
    """One group of MEMBERS online members, one of them sending: delivery latency to all."""
    _run_load("group", members, rate=rate, duration=duration, **options)


from ._chaos_cli import chaos  # noqa: E402  (its own module: a large group)
from ._inspect_cli import inspect  # noqa: E402  (its own module: a large group)

main.add_command(inspect)
main.add_command(chaos)
