"""Workers and helpers shared by the supervisor tests."""

from __future__ import annotations

from typing import Any

import anyio

from actors import Actor, Context, Exit, From, Ref
from supervisors import ChildSpec, Restart


class Boom(Exception):
    """The exception test workers crash with."""


class Worker(Actor):
    """A child that reports its life to a log inbox.

    ``init(name, log=None, trap=False, *extra)`` sends ``("started", name, ref)`` to ``log``;
    ``terminate`` sends ``("terminated", name, reason)`` (it runs on a polite shutdown only when
    ``trap``). Calls: ``"whoami"`` → ``(name, extra)``, ``"ping"``, ``"crash"`` (raises
    :class:`Boom`), ``("stop", reason)``.
    """

    def init(self, name: str, log: Ref | None = None, trap: bool = False, *extra: Any) -> None:
        self.name = name
        self.log = log
        self.extra = extra
        if trap:
            self.ctx.trap_exit = True
        if log is not None:
            log.send(("started", name, self.ref))

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "whoami":
            return (self.name, self.extra)
        if request == "ping":
            return "pong"
        if request == "crash":
            raise Boom(self.name)
        if isinstance(request, tuple) and request[0] == "stop":
            self.stop(request[1])
            return "stopping"
        raise AssertionError(f"unexpected call {request!r}")

    def handle_info(self, message: Any) -> None:
        pass

    def terminate(self, reason: object) -> None:
        if self.log is not None:
            self.log.send(("terminated", self.name, reason))


class FailingInit(Actor):
    """A child whose ``init`` raises :class:`Boom` (after reporting the attempt to ``log``)."""

    def init(self, name: str, log: Ref | None = None) -> None:
        if log is not None:
            log.send(("attempt", name))
        raise Boom(f"{name} cannot start")


class Flaky(Actor):
    """A child with an ``async`` init (so starting it waits): the first start succeeds, the next
    ``state["failures"]`` starts fail with :class:`Boom` (all of them when absent), later ones
    succeed. ``state["starts"]`` counts the attempts; ``state`` is shared with the test."""

    async def init(self, name: str, state: dict[str, int]) -> None:
        await anyio.lowlevel.checkpoint()
        starts = state["starts"] = state.get("starts", 0) + 1
        self.name = name
        if 1 < starts <= 1 + state.get("failures", 1 << 30):
            raise Boom(f"{name} cannot start (attempt {starts})")

    def handle_call(self, request: Any, from_: From) -> Any:
        return "pong"


async def stubborn(ctx: Context, name: str, log: Ref) -> None:
    """A function actor that traps exits and ignores every message, shutdown included."""
    ctx.trap_exit = True
    log.send(("started", name, ctx.ref))
    while True:
        await ctx.receive()


def worker(
    name: str,
    log: Ref | None = None,
    *,
    trap: bool = False,
    restart: Restart = Restart.PERMANENT,
    **fields: Any,
) -> ChildSpec:
    """A spec for a :class:`Worker` named ``name``."""
    return ChildSpec(id=name, start=Worker, args=(name, log, trap), restart=restart, **fields)


async def started(inbox: Context, count: int) -> list[str]:
    """The names in the next ``count`` ``started`` reports, in order."""
    names = []
    for _ in range(count):
        message = await inbox.receive(
            lambda m: isinstance(m, tuple) and m[0] == "started", timeout=60
        )
        names.append(message[1])
    return names


async def terminated(inbox: Context, count: int) -> list[tuple[str, object]]:
    """(name, reason) of the next ``count`` ``terminated`` reports, in order."""
    found = []
    for _ in range(count):
        message = await inbox.receive(
            lambda m: isinstance(m, tuple) and m[0] == "terminated", timeout=60
        )
        found.append((message[1], message[2]))
    return found


def no_more(inbox: Context, kind: str) -> bool:
    """Whether no ``kind`` report is queued (a non-waiting check, after a settling call)."""
    queued = list(inbox._mailbox or ())  # white-box peek: does not take anything
    return not any(isinstance(e[1], tuple) and e[1][0] == kind for e in queued)


async def exit_of(inbox: Context, ref: Ref) -> object:
    """The reason in the ``Exit`` the inbox (a linked parent) gets from ``ref``."""
    message = await inbox.receive(lambda m: isinstance(m, Exit) and m.ref == ref, timeout=60)
    assert isinstance(message, Exit)
    return message.reason


class SlowStop(Actor):
    """Traps exits; its ``terminate`` takes ``seconds`` of (virtual) time, then reports
    ``("terminated", name, reason)`` to ``log``."""

    def init(self, name: str, log: Ref, seconds: float, *extra: Any) -> None:
        self.ctx.trap_exit = True
        self.name = name
        self.log = log
        self.seconds = seconds

    def handle_call(self, request: Any, from_: From) -> Any:
        return "pong"

    async def terminate(self, reason: object) -> None:
        await anyio.sleep(self.seconds)
        self.log.send(("terminated", self.name, reason))
