"""``parley chat``: a small interactive terminal client built on :func:`open_client`.

Lines typed go to the current conversation; lines starting with ``/`` are commands (see
:data:`HELP`). Incoming frames are printed as they arrive, with ``rich``. Standard input is read
in a worker thread so the trio loop never blocks on it; end of input quits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

import trio
from rich.console import Console
from rich.markup import escape

from ._client import Client, Closed, open_client
from ._client_errors import ConnectError, ConnectionClosedError, ServerError
from ._errors import GatewayError
from ._frames import (
    ConvInfo,
    ConvLeft,
    ConvSummary,
    Error,
    Msg,
    Presence,
    ReceiptNotice,
    ServerEvent,
    Synced,
    TypingNotice,
)

HELP: Final = """\
commands:
  /to USER               talk to USER (a direct conversation)
  /group TITLE U1 U2...  create a group with these members and talk there
  /join CONV             talk in conversation CONV (an id from /convs)
  /convs                 list your conversations
  /history [N]           the last N messages here (default 20)
  /who USER              USER's presence
  /quit                  leave (end of input too)
anything else is sent to the current conversation"""

#: Close codes after which the client reconnects (the node restarting, the link lost, too slow).
RECONNECT_CODES: Final = frozenset({1006, 1011, 1012, 4008})
RECONNECT_ATTEMPTS: Final = 10


def node_url(data_dir: Path, host: str, port: int, ws_path: str) -> str:
    """The WebSocket URL of the node using ``data_dir``: from its ``node.json`` when that node
    is running (so ``--port 0`` nodes are found), else ``ws://HOST:PORT/PATH`` of the settings."""
    try:
        info = json.loads((data_dir / "node.json").read_text())
        pid, url = info["pid"], info["url"]
        if isinstance(pid, int) and isinstance(url, str):
            os.kill(pid, 0)  # raises if no such process
            return url
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return f"ws://{host}:{port}{ws_path}"


def _clock(ts_ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ts_ms / 1000))


@dataclass
class ChatSession:
    """The terminal client's state: the connection, the current conversation, labels."""

    client: Client
    console: Console
    current: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    presence: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    quit: bool = False

    # -- output ----------------------------------------------------------------------------

    def label(self, conv: str) -> str:
        return self.labels.get(conv, conv)

    def note(self, text: str, style: str = "dim") -> None:
        self.console.print(f"[{style}]{escape(text)}[/]")

    def learn(self, info: ConvInfo | ConvSummary) -> None:
        if info.kind == "direct":
            others = [m for m in info.members if m != self.client.user]
            self.labels[info.conv] = "@" + (others[0] if others else self.client.user)
        else:
            self.labels[info.conv] = "#" + (info.title or info.conv)

    def show_msg(self, msg: Msg) -> None:
        sender = "me" if msg.from_user == self.client.user else msg.from_user
        body = msg.body if isinstance(msg.body, str) else f"<{len(msg.body)} bytes, {msg.kind}>"
        where = "" if msg.conv == self.current else f"[magenta]{escape(self.label(msg.conv))}[/] "
        self.console.print(
            f"[dim]{_clock(msg.ts)}[/] {where}[bold cyan]{escape(sender)}[/]: {escape(body)}"
        )

    def show(self, event: ServerEvent) -> None:
        match event:
            case Msg():
                self.show_msg(event)
            case ReceiptNotice(status="read") if event.conv == self.current:
                self.note(f"{event.user} read up to #{event.seq}")
            case TypingNotice(state="start") if event.conv == self.current:
                self.note(f"{event.user} is typing...")
            case Presence():
                self.show_presence(event)
            case ConvInfo():
                self.learn(event)
                members = ", ".join(event.members)
                self.note(f"{self.label(event.conv)} ({event.conv}): {members}", "green")
            case ConvLeft():
                self.note(f"you are no longer in {self.label(event.conv)}", "yellow")
                if event.conv == self.current:
                    self.current = None
            case Synced():
                if event.ref is None:
                    self.note("up to date")
            case Error():
                self.note(f"error: {event.code}: {event.reason}", "red")
            case _:
                pass

    def show_presence(self, presence: Presence) -> None:
        known = (presence.status, presence.last_seen)
        if self.presence.get(presence.user) == known:
            return  # the answer to /who arrives as an event too
        self.presence[presence.user] = known
        text = f"{presence.user} is {presence.status}"
        if presence.status == "offline" and presence.last_seen is not None:
            text += f" (last seen {_clock(presence.last_seen)})"
        self.note(text, "blue")

    # -- input -----------------------------------------------------------------------------

    async def handle_line(self, line: str) -> None:
        """Run one typed line: a command, or a message for the current conversation."""
        line = line.strip()
        if not line:
            return
        if not line.startswith("/"):
            if self.current is None:
                self.note("no conversation yet: /to USER, /group TITLE USERS..., or /join CONV")
                return
            await self.client.send_message(self.current, line)
            return
        command, *args = line.split()
        handler = self.commands().get(command)
        if handler is None:
            self.note(HELP)
            return
        await handler(args)

    def commands(self) -> dict[str, Callable[[list[str]], Awaitable[None]]]:
        return {
            "/to": self.cmd_to,
            "/group": self.cmd_group,
            "/join": self.cmd_join,
            "/convs": self.cmd_convs,
            "/history": self.cmd_history,
            "/who": self.cmd_who,
            "/quit": self.cmd_quit,
            "/help": self.cmd_help,
        }

    async def cmd_to(self, args: list[str]) -> None:
        if len(args) != 1:
            self.note("usage: /to USER")
            return
        self.enter(await self.client.create_direct(args[0]))

    async def cmd_group(self, args: list[str]) -> None:
        if len(args) < 2:
            self.note("usage: /group TITLE USER1 USER2...")
            return
        self.enter(await self.client.create_group(args[0], args[1:]))

    async def cmd_join(self, args: list[str]) -> None:
        if len(args) != 1:
            self.note("usage: /join CONV")
            return
        for summary in await self.client.convs():
            self.learn(summary)
        if args[0] not in self.labels:
            self.note(f"you are not in {args[0]} (see /convs)")
            return
        self.current = args[0]
        self.note(f"now in {self.label(args[0])}", "green")

    async def cmd_convs(self, args: list[str]) -> None:
        summaries = await self.client.convs()
        if not summaries:
            self.note("no conversations yet")
        for summary in summaries:
            self.learn(summary)
            mark = "*" if summary.conv == self.current else " "
            self.console.print(
                f"{mark} [bold]{escape(self.label(summary.conv))}[/] {escape(summary.conv)}"
                f" [dim]{escape(', '.join(summary.members))}; {summary.last_seq} messages[/]"
            )

    async def cmd_history(self, args: list[str]) -> None:
        if self.current is None:
            self.note("no conversation yet")
            return
        try:
            limit = int(args[0]) if args else 20
        except ValueError:
            self.note("usage: /history [N]")
            return
        page = await self.client.history(self.current, limit=max(1, min(limit, 200)))
        for msg in page.messages:
            self.show_msg(msg)
        if page.messages:
            await self.client.receipt(self.current, page.messages[-1].seq, "read")

    async def cmd_who(self, args: list[str]) -> None:
        if len(args) != 1:
            self.note("usage: /who USER")
            return
        for presence in (await self.client.subscribe_presence(args)).values():
            self.presence.pop(presence.user, None)  # asked: say it even if unchanged
            self.show_presence(presence)

    async def cmd_quit(self, args: list[str]) -> None:
        self.quit = True

    async def cmd_help(self, args: list[str]) -> None:
        self.note(HELP)

    def enter(self, info: ConvInfo) -> None:
        self.learn(info)
        self.current = info.conv
        self.note(f"now in {self.label(info.conv)} ({info.conv})", "green")


async def _read_lines(send: trio.MemorySendChannel[str | None], stdin: TextIO) -> None:
    async with send:
        while True:
            line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
            if not line:
                await send.send(None)  # end of input
                return
            await send.send(line)


async def _receive(session: ChatSession, done: trio.CancelScope) -> None:
    client = session.client
    async for event in client.events:
        if isinstance(event, Closed):
            if event.code not in RECONNECT_CODES:
                session.note(f"connection closed ({event.code} {event.reason})".strip(), "red")
                done.cancel()
                return
            session.note(f"connection lost ({event.code}); reconnecting...", "yellow")
            try:
                await client.reconnect(attempts=RECONNECT_ATTEMPTS, backoff=0.5, max_backoff=5)
            except ConnectError as exc:
                session.note(f"could not reconnect: {exc}", "red")
                done.cancel()
                return
            session.note("reconnected", "green")
            continue
        session.show(event)
        if isinstance(event, Msg) and session.current is None and event.from_user != client.user:
            session.current = event.conv  # so a reply can just be typed
            session.note(f"now in {session.label(event.conv)}; type to reply", "green")
        if isinstance(event, Msg):  # own messages too: the next connect skips them
            status = "read" if event.conv == session.current else "delivered"
            with suppress(ConnectionClosedError):  # the Closed event follows
                await client.receipt(event.conv, event.seq, status)


async def run_chat(
    url: str, token: str, *, stdin: TextIO | None = None, console: Console | None = None
) -> int:
    """Run the terminal client until ``/quit``, end of input, or a final close.

    Returns:
        The exit status: 0 after ``/quit`` or end of input, 1 when the connection could not be
        opened or was closed for good.
    """
    console = console if console is not None else Console(highlight=False)
    stdin = stdin if stdin is not None else sys.stdin
    try:
        async with open_client(url, token) as client:
            session = ChatSession(client, console)
            console.print(
                f"[green]connected to {escape(url)} as [bold]{escape(client.user)}[/]"
                f" ({escape(client.welcome.device)}); /help for commands[/]"
            )
            for summary in await client.convs():
                session.learn(summary)
            lines_send, lines = trio.open_memory_channel[str | None](16)
            with trio.CancelScope() as done:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_read_lines, lines_send, stdin)
                    nursery.start_soon(_receive, session, done)
                    async for line in lines:
                        if line is None:
                            break
                        try:
                            await session.handle_line(line)
                        except ServerError as exc:
                            session.note(f"{exc.code}: {exc.reason}", "red")
                        except ConnectionClosedError:
                            session.note("not connected; try again in a moment", "yellow")
                        if session.quit:
                            break
                    nursery.cancel_scope.cancel()
            if done.cancelled_caught:
                return 1
    except GatewayError as exc:
        console.print(f"[red]cannot chat: {escape(str(exc))}[/]")
        return 1
    return 0
