"""The ``parley`` command line (subcommands are added as the node grows)."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="parley")
def main() -> None:
    """Parley: Erlang-style supervised actors and a chat node built on them."""
