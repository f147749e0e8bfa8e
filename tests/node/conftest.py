"""End-to-end fixtures: a real ``parley serve`` process per module, clients per test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._node import Connector, NodeProcess, running_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("node") / "data") as process:
        yield process


@pytest.fixture
def connect(node: NodeProcess) -> Iterator[Connector]:
    with contextlib.ExitStack() as stack:
        yield Connector(node, stack)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
