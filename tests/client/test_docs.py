"""docs/protocol.md's "Python client" example runs against a real node and prints what it says."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.node._node import NodeProcess, running_node, unique

DOCS = Path(__file__).parents[2] / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("docs-node") / "data") as process:
        yield process


def example() -> str:
    section = DOCS.read_text().split("## Python client", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None
    return found.group(1)


def test_the_python_client_example_runs(
    node: NodeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(example(), str(DOCS), "exec"), namespace)
    alice, bob = unique("alice"), unique("bob")
    trio.run(namespace["main"], node.url, node.token(alice), node.token(bob))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("stored as 1 ")
    assert out[1] == f"{alice} says hello bob"
    assert out[2].startswith("refused: ")  # a direct conversation cannot grow
