"""Click options that several ``parley`` commands share: where a node's files are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def data_dir_option(help: str) -> Callable[[F], F]:
    """``--data-dir DIR``: a node's data directory (secret, database, node.json, admin.sock)."""
    return click.option(
        "--data-dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path), help=help
    )


def config_option(help: str = "The node's TOML configuration file.") -> Callable[[F], F]:
    """``--config FILE``: a node's TOML configuration file (must exist); passed as
    ``config_file``."""
    return click.option(
        "--config",
        "config_file",
        metavar="FILE",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=help,
    )
