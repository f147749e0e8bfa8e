"""Shared fixtures: each ``@pytest.mark.anyio`` test runs on trio and asyncio, in virtual time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import trio.testing

from tests._virtual_time import VirtualTimeLoop

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(
    params=[
        pytest.param(("trio", {}), id="trio"),
        pytest.param(("asyncio", {}), id="asyncio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    """Both backends, each with an autojumping virtual clock (no real sleeps in tests)."""
    name, _ = request.param
    if name == "trio":
        yield ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    else:
        yield ("asyncio", {"loop_factory": VirtualTimeLoop})


def require_service(name: str, error: BaseException | str | None) -> None:
    """Skip (or, under CI, fail) a test whose external service is unreachable.

    ``error`` is what went wrong reaching ``name`` (None when it was reached). Outside CI the test
    is skipped with that reason; under ``CI=true`` the services must run, so it fails instead.
    """
    if error is None:
        return
    reason = f"{name} is not reachable: {error}"
    if IN_CI:
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)
