"""Control of the node process under test: start, SIGTERM, SIGSTOP/SIGCONT, SIGKILL and restart
on the same data, and the admin endpoint (blocking :class:`AdminClient` calls, one connection
per call, run in a thread from trio).

The chaos monkey's admin ops (``chaos.kill``, ``chaos.storm``, ``chaos.failpoint``...) each have
one small function here, so the harness never spells an op name twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import trio

from config import load_or_create_secret
from gateway import mint_token
from gateway._inspect import AdminClient, InspectError, RemoteError

#: How the node is started: the CLI's entry point with this interpreter.
PARLEY: Final = [sys.executable, "-c", "from gateway._cli import main; main()"]
#: Seconds a node may take to listen after it was started.
START_TIMEOUT: Final = 60.0
#: Seconds a graceful stop (SIGTERM) may take before the node is killed.
STOP_TIMEOUT: Final = 45.0


class NodeDown(Exception):
    """The node process is not running (it exited, or could not be started)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now.

    The node gets a fixed port rather than ``0`` so that a restarted listener (after a storm, or
    the whole node after SIGKILL) comes back on the same address the clients know.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NodeControl:
    """One ``parley serve`` process on a data directory, restartable on the same data.

    ``env`` holds the node's ``PARLEY_*`` settings (other ``PARLEY_*`` variables of the caller's
    environment are dropped). The node's output goes to ``log_path`` (appended across restarts).
    """

    def __init__(self, data_dir: Path, env: dict[str, str], log_path: Path) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        self.env.update(env)
        self.log_path = log_path
        self.port = int(env.get("PARLEY_SERVER__PORT", "0")) or free_port()
        self.env["PARLEY_SERVER__PORT"] = str(self.port)
        self.env["PARLEY_SERVER__DATA_DIR"] = str(data_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.secret = b""
        self.starts = 0
        self.paused = False

    # ------------------------------------------------------------------------------------------
    # The process

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def admin_socket(self) -> Path:
        return self.data_dir / "admin.sock"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self) -> None:
        """Start the node and wait until it listens and its admin socket answers. Blocks.

        Raises:
            NodeDown: it exited or did not come up within :data:`START_TIMEOUT` seconds.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info_path = self.data_dir / "node.json"
        with contextlib.suppress(FileNotFoundError):
            info_path.unlink()
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start {self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*PARLEY, "serve", "--data-dir", str(self.data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        self.starts += 1
        self.paused = False
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NodeDown(f"the node exited with {self.proc.returncode} while starting")
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                info = json.loads(info_path.read_text())
                if info["pid"] == self.proc.pid and self._admin_answers():
                    self.secret = load_or_create_secret(self.data_dir)
                    return
            time.sleep(0.05)
        self.kill()
        raise NodeDown(f"the node did not come up within {START_TIMEOUT:.0f} s")

    def _admin_answers(self) -> bool:
        try:
            with AdminClient(self.admin_socket) as admin:
                admin.request("stats")
        except (InspectError, OSError):
            return False
        return True

    def pause(self) -> None:
        """SIGSTOP: the node freezes (sockets stay open, nothing is read or written)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> int | None:
        """SIGKILL and wait; the exit code (None when it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        if self.paused:
            self.resume()
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM (a graceful drain) and wait; SIGKILL after :data:`STOP_TIMEOUT` seconds.
        The exit code (None when it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        if self.paused:
            self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return self.kill()

    def token(self, user: str, device: str | None = None) -> str:
        return mint_token(self.secret, user, device, ttl_s=24 * 3600)

    def log_tail(self, size: int = 4000) -> str:
        with contextlib.suppress(OSError):
            data = self.log_path.read_bytes()
            return data[-size:].decode(errors="replace")
        return ""

    # ------------------------------------------------------------------------------------------
    # The admin endpoint

    def admin_sync(self, op: str, **args: Any) -> Any:
        """One admin request on a fresh connection; its result. Blocks.

        Raises:
            NodeDown: the node is not running.
            InspectError: the endpoint refused or failed (``RemoteError`` has the code).
        """
        if not self.alive():
            raise NodeDown("the node is not running")
        with AdminClient(self.admin_socket) as admin:
            return admin.request(op, **args)

    async def admin(self, op: str, **args: Any) -> Any:
        """:meth:`admin_sync` in a worker thread (abandoned, not waited for, when cancelled)."""
        return await trio.to_thread.run_sync(
            lambda: self.admin_sync(op, **args), abandon_on_cancel=True
        )

    async def tree(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.admin("tree", depth=None, top=100)
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.admin("stats")
        return result

    async def top_mailbox(self) -> dict[str, Any] | None:
        """The actor with the longest mailbox right now (a ``top`` row), or None."""

        def one_frame() -> dict[str, Any] | None:
            if not self.alive():
                raise NodeDown("the node is not running")
            with AdminClient(self.admin_socket) as admin:
                for frame in admin.stream("top", sort="mailbox", n=1, count=1, interval=0.1):
                    rows = frame.get("rows") or []
                    return rows[0] if rows else None
            return None

        return await trio.to_thread.run_sync(one_frame, abandon_on_cancel=True)

    # The chaos monkey's ops (issue 7, part A): one function each.

    async def chaos_kill(
        self, kind: str, *, count: int = 1, seed: int | None = None, wait: float = 5.0
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.admin(
            "chaos.kill", kind=kind, count=count, seed=seed, wait=wait
        )
        return result

    async def chaos_storm(
        self, supervisor: str, *, kills: int, child: str | int | None = None, wait: float = 10.0
    ) -> dict[str, Any]:
        args: dict[str, Any] = {"supervisor": supervisor, "kills": kills, "wait": wait}
        if child is not None:
            args["child"] = child
        result: dict[str, Any] = await self.admin("chaos.storm", **args)
        return result

    async def chaos_havoc(
        self, supervisor: str, *, seed: int | None = None, wait: float = 5.0
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.admin(
            "chaos.havoc", supervisor=supervisor, seed=seed, wait=wait
        )
        return result

    async def chaos_failpoint(self, name: str, *, count: int = 1) -> dict[str, Any]:
        result: dict[str, Any] = await self.admin("chaos.failpoint", name=name, count=count)
        return result

    async def chaos_failpoints(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.admin("chaos.failpoints")
        return result

    async def chaos_status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.admin("chaos.status")
        return result


def is_unknown_op(exc: BaseException) -> bool:
    """Whether an admin error says the node does not know the op (an older node)."""
    return isinstance(exc, RemoteError) and exc.code == "bad_request" and "op" in exc.message


def find_child(tree: dict[str, Any], child_id: str) -> dict[str, Any] | None:
    """The first node of ``tree`` (depth first) whose child id is ``child_id``."""
    if tree.get("id") == child_id:
        return tree
    for child in tree.get("children", []):
        found = find_child(child, child_id)
        if found is not None:
            return found
    return None


def supervisors(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every supervisor of ``tree`` by child id (the root as ``root``)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any]) -> None:
        if node.get("kind") == "supervisor":
            found[str(node.get("id"))] = node
        for child in node.get("children", []):
            walk(child)

    walk(tree)
    return found


class PausableProxy:
    """A TCP proxy in front of the node for one slow client: while paused it stops reading
    what the node sends, with a small receive buffer towards the node, so the node's outgoing
    queue for that connection fills within a few megabytes (the loopback's own buffers,
    autotuned up to tens of megabytes, would otherwise absorb a whole flood).

    Run :meth:`serve` with ``nursery.start``; clients connect to :attr:`port`.
    """

    #: Bytes of the proxy's receive buffer towards the node.
    RCVBUF: Final = 8192

    def __init__(self, target_port: Callable[[], int]) -> None:
        self.target_port = target_port
        self.port = 0
        self.flowing = trio.Event()
        self.flowing.set()

    def pause(self) -> None:
        if self.flowing.is_set():
            self.flowing = trio.Event()

    def resume(self) -> None:
        self.flowing.set()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, down: trio.SocketStream) -> None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
        try:
            await sock.connect(("127.0.0.1", self.target_port()))
        except OSError:
            sock.close()
            await down.aclose()
            return
        up = trio.SocketStream(sock)
        async with up, down, trio.open_nursery() as nursery:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream, paused: bool) -> None:
                try:
                    while True:
                        if paused:
                            await self.flowing.wait()
                        data = await src.receive_some(65536)
                        if not data:
                            break
                        await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, down, up, False)
            nursery.start_soon(pump, up, down, True)
