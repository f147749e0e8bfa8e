"""Small actors and helpers shared by the actor tests."""

from __future__ import annotations

from typing import Any

import anyio

from actors import Actor, Context, Down, Exit, From, Ref


async def settle() -> None:
    """Let every runnable actor run until the node is idle (virtual time: costs nothing)."""
    await anyio.sleep(0.001)


class Boom(Exception):
    """The exception test actors crash with."""


class Recorder(Actor):
    """Records everything it is sent; answers calls about its state; crashes or stops on demand.

    Casts: ``("crash", text)`` raises ``Boom(text)``; ``("stop", reason)`` stops;
    anything else is recorded. Calls: ``"got"`` (all recorded messages), ``"infos"``, ``"ping"``.
    """

    def init(self, *args: Any) -> None:
        self.got: list[Any] = []
        self.infos: list[Any] = []
        self.terminated: list[object] = []
        self.trap = bool(args and args[0])
        if self.trap:
            self.ctx.trap_exit = True

    def handle_call(self, request: Any, from_: From) -> Any:
        if request == "got":
            return list(self.got)
        if request == "infos":
            return list(self.infos)
        if request == "ping":
            return "pong"
        if isinstance(request, tuple) and request[0] == "crash":
            raise Boom(request[1])
        return ("echo", request)

    def handle_cast(self, message: Any) -> None:
        if isinstance(message, tuple) and message[0] == "crash":
            raise Boom(message[1])
        if isinstance(message, tuple) and message[0] == "stop":
            self.stop(message[1])
            return
        self.got.append(message)

    def handle_info(self, message: Any) -> None:
        self.infos.append(message)
        self.got.append(message)

    def terminate(self, reason: object) -> None:
        self.terminated.append(reason)


def actor_of(ref: Ref) -> Any:
    """The behaviour instance behind a live class actor (white-box: for assertions only)."""
    return ref._ctx._behaviour


async def next_message(inbox: Context, timeout: float = 1.0) -> Any:
    return await inbox.receive(timeout=timeout)


async def expect_down(inbox: Context, ref: Ref, timeout: float = 1.0) -> Down:
    message = await inbox.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=timeout)
    assert isinstance(message, Down)
    return message


async def expect_exit(inbox: Context, ref: Ref | None, timeout: float = 1.0) -> Exit:
    message = await inbox.receive(lambda m: isinstance(m, Exit) and m.ref == ref, timeout=timeout)
    assert isinstance(message, Exit)
    return message
