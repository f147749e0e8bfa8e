"""Inspector tests against real ``parley serve`` processes (real time; every wait bounded)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.node._node import NodeProcess, running_node

TOKEN = "s3cret-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_socket(path: Path, timeout: float = 10.0) -> Path:
    """The admin socket, once the node serves it (it starts after the listener)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_socket():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    pass
                else:
                    return path
        time.sleep(0.02)
    raise AssertionError(f"no admin socket at {path}")


def wait_for_port(port: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.02)
        else:
            return port
    raise AssertionError(f"no admin port {port}")


class Inspected:
    """A node with its admin socket (and TCP port, token, whether destructive ops are allowed
    over TCP)."""

    def __init__(self, process: NodeProcess, port: int, allow_destructive: bool) -> None:
        self.process = process
        self.socket = wait_for_socket(process.data_dir / "admin.sock")
        self.port = wait_for_port(port)
        self.allow_destructive = allow_destructive


def _node(tmp: Path, allow_destructive: bool) -> Iterator[Inspected]:
    port = free_port()
    env = {
        "PARLEY_ADMIN__TCP_PORT": str(port),
        "PARLEY_ADMIN__TOKEN": TOKEN,
        "PARLEY_ADMIN__ALLOW_DESTRUCTIVE": "true" if allow_destructive else "false",
        "PARLEY_LIMITS__SEND_RATE": "100000",
        "PARLEY_LIMITS__SEND_BURST": "10000",
    }
    with running_node(tmp / "data", env) as process:
        yield Inspected(process, port, allow_destructive)


@pytest.fixture(scope="module")
def inspected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inspected]:
    yield from _node(tmp_path_factory.mktemp("inspected"), allow_destructive=False)


@pytest.fixture(scope="module")
def permissive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inspected]:
    yield from _node(tmp_path_factory.mktemp("permissive"), allow_destructive=True)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {})
