"""A real node process for end-to-end tests, and a small client over the independent
``websockets`` library (sync API) speaking msgpack or json."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from config import load_or_create_secret
from gateway import mint_token

PARLEY = [sys.executable, "-c", "from gateway._cli import main; main()"]
START_TIMEOUT = 30.0
RECV_TIMEOUT = 10.0
_users = itertools.count(1)


def unique(name: str) -> str:
    """A user id no other test uses (tests share a node)."""
    return f"{name}{next(_users)}-{os.getpid()}"


class NodeProcess:
    """``parley serve --port 0`` in a data directory; the port comes from DATA/node.json."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        self.env.update(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.secret = b""
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    def start(self) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "node.json").unlink()
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [*PARLEY, "serve", "--port", "0", "--data-dir", str(self.data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                text=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        info_path = self.data_dir / "node.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log()}")
            with contextlib.suppress(FileNotFoundError, ValueError):
                info = json.loads(info_path.read_text())
                if info["pid"] == self.proc.pid:
                    self.port = info["port"]
                    self.secret = load_or_create_secret(self.data_dir)
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"node did not start listening: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def token(self, user: str, device: str | None = None, ttl: float = 3600) -> str:
        return mint_token(self.secret, user, device, ttl_s=ttl)

    def signal(self, signum: int) -> int:
        """Send ``signum`` and wait for the process to exit; its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def encode(frame: dict[str, Any], binary: bool) -> bytes | str:
    return msgpack.packb(frame) if binary else json.dumps(frame)


def decode(data: bytes | str) -> dict[str, Any]:
    if isinstance(data, bytes):
        result: dict[str, Any] = msgpack.unpackb(data)
    else:
        result = json.loads(data)
    return result


class Client:
    """One device's WebSocket: send frames as dicts, receive them decoded."""

    def __init__(self, ws: ClientConnection, user: str, device: str) -> None:
        self.ws = ws
        self.user = user
        self.device = device
        self.binary = ws.subprotocol == "parley.v1.msgpack"
        self.pending: list[dict[str, Any]] = []
        self._refs = itertools.count(1)

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(encode(frame, self.binary))

    def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        if self.pending:
            return self.pending.pop(0)
        return decode(self.ws.recv(timeout=timeout))

    def expect(
        self, match: Callable[[dict[str, Any]], bool] | str, timeout: float = RECV_TIMEOUT
    ) -> dict[str, Any]:
        """The first frame ``match`` accepts (a ``type`` string or a predicate); frames skipped
        on the way are kept for later ``recv``/``expect`` calls."""
        test = (lambda f: f["type"] == match) if isinstance(match, str) else match
        for index, frame in enumerate(self.pending):
            if test(frame):
                return self.pending.pop(index)
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                frame = decode(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                if test(frame):
                    return frame
                skipped.append(frame)
        finally:
            self.pending.extend(skipped)

    def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send ``frame`` with a fresh ``ref``; the reply echoing it."""
        ref = f"r{next(self._refs)}"
        self.send({**frame, "ref": ref})
        return self.expect(lambda f: f.get("ref") == ref)

    def quiet(self, timeout: float = 0.3) -> list[dict[str, Any]]:
        """Frames that arrive within ``timeout`` (to check that nothing else came)."""
        frames, self.pending = self.pending, []
        with contextlib.suppress(TimeoutError):
            while True:
                frames.append(decode(self.ws.recv(timeout=timeout)))
        return frames

    def close_code(self, timeout: float = RECV_TIMEOUT) -> int | None:
        """Read until the server closes; its close code."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        raise AssertionError("the server did not close the connection")


class Connector:
    """Opens clients to one node and closes them all at the end of a test."""

    def __init__(self, node: NodeProcess, stack: contextlib.ExitStack) -> None:
        self.node = node
        self.stack = stack

    def raw(
        self,
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
        path: str = "/ws",
    ) -> ClientConnection:
        url = f"ws://127.0.0.1:{self.node.port}{path}{query}"
        return self.stack.enter_context(
            connect(
                url,
                additional_headers=headers,
                subprotocols=subprotocols,  # type: ignore[arg-type]
                open_timeout=RECV_TIMEOUT,
                max_size=None,
                close_timeout=2,
            )
        )

    def __call__(
        self,
        user: str,
        device: str | None = None,
        *,
        proto: str = "parley.v1.msgpack",
        synced: bool = True,
    ) -> Client:
        """A connected device, past ``welcome`` (and past ``synced`` unless told otherwise)."""
        ws = self.raw(
            headers={"Authorization": f"Bearer {self.node.token(user, device)}"},
            subprotocols=[proto],
        )
        client = Client(ws, user, device or "default")
        welcome = client.recv()
        assert welcome["type"] == "welcome", welcome
        if synced:
            client.expect("synced")
        return client


@contextlib.contextmanager
def running_node(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[NodeProcess]:
    node = NodeProcess(data_dir, env).start()
    try:
        yield node
    finally:
        node.stop()
