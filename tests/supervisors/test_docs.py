"""docs/supervisors.md's worked example runs and prints what the page shows."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.anyio

DOC = Path(__file__).parents[2] / "docs" / "supervisors.md"


def blocks(language: str) -> list[str]:
    """The page's fenced blocks opened with ```language (empty: a bare fence), in order."""
    found: list[str] = []
    fence: str | None = None
    lines: list[str] = []
    for line in DOC.read_text().splitlines(keepends=True):
        if fence is None and line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif fence is not None and line.rstrip() == "```":
            if fence == language:
                found.append("".join(lines))
            fence = None
        elif fence is not None:
            lines.append(line)
    return found


async def test_the_worked_example_prints_what_the_page_shows() -> None:
    source = blocks("python")[0]
    assert source.rstrip().endswith("anyio.run(main)")
    namespace: dict[str, Any] = {"__name__": "chat_example"}
    exec(compile(source.rstrip().removesuffix("anyio.run(main)"), str(DOC), "exec"), namespace)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await namespace["main"]()  # in virtual time: its sleep costs nothing
    shown = blocks("")[0]
    assert out.getvalue() == shown
