"""``parley chat``: two real processes chatting through a real node, driven through stdin."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.node._node import NodeProcess, running_node, unique

PARLEY = [sys.executable, "-c", "from gateway._cli import main; main()"]
WAIT = 15.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with running_node(tmp_path_factory.mktemp("chat-node") / "data") as process:
        yield process


class Chat:
    """One ``parley chat`` process: lines in through stdin, output lines collected."""

    def __init__(self, node: NodeProcess, user: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        self.proc = subprocess.Popen(
            [*PARLEY, "chat", user, "--data-dir", str(node.data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, "COLUMNS": "200"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def type(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not in the output: {self.lines}")

    def finish(self) -> int:
        if self.proc.poll() is None and self.proc.stdin is not None and not self.proc.stdin.closed:
            self.type("/quit")
        code = self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        return code

    def kill(self) -> None:
        """Stop the process if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


def test_two_users_chat_through_two_processes(node: NodeProcess) -> None:
    alice, bob = unique("alice"), unique("bob")
    a, b = Chat(node, alice), Chat(node, bob)
    try:
        a.wait_for(f"as {alice} (default)")
        b.wait_for(f"as {bob} (default)")
        a.type(f"/to {bob}", "hello from alice")
        a.wait_for(f"now in @{bob}")
        assert f"{alice}: hello from alice" in b.wait_for("hello from alice")
        b.wait_for(f"now in @{alice}; type to reply")
        b.type("hi alice")  # no /to needed: the first incoming message picks the conversation
        assert f"{bob}: hi alice" in a.wait_for("hi alice")
        b.type("/history 5")
        b.wait_for("me: hi alice")
        a.type("/convs")
        assert f"{alice}, {bob}" in a.wait_for("2 messages")
        b.type(f"/who {alice}")
        b.wait_for(f"{alice} is online")
        assert a.finish() == 0
        assert b.finish() == 0
    finally:
        a.kill()
        b.kill()


def test_a_line_without_a_conversation_and_unknown_commands_are_explained(
    node: NodeProcess,
) -> None:
    chat = Chat(node, unique("carol"))
    try:
        chat.type("hello?", "/nonsense")
        chat.wait_for("no conversation yet")
        chat.wait_for("/to USER")
        chat.type("/join nowhere")
        chat.wait_for("you are not in nowhere")
        chat.proc.stdin.close()  # type: ignore[union-attr]  # end of input quits
        assert chat.finish() == 0
    finally:
        chat.kill()


def test_no_node_listening_exits_1(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("no-node")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    result = subprocess.run(
        [*PARLEY, "chat", "alice", "--data-dir", str(data), "--url", "ws://127.0.0.1:9/ws"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "cannot chat" in result.stdout
