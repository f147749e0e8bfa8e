"""``Ref``: the handle to an actor (Erlang's pid). Sending through it never blocks or fails."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from ._errors import CallTimeoutError, WouldBlock

if TYPE_CHECKING:
    from ._process import Context

DEFAULT_CALL_TIMEOUT: Final = 5.0  # seconds, Erlang's gen_server:call default

CAST: Final = 0
INFO: Final = 1
CALL: Final = 2


class Ref:
    """A handle to one actor, valid forever: after the actor exits, messages become dead letters.

    Two refs are equal only if they name the same actor. ``pid`` is unique within the node.
    """

    __slots__ = ("_ctx", "pid")

    def __init__(self, ctx: Context, pid: int) -> None:
        self._ctx = ctx
        self.pid = pid

    def __repr__(self) -> str:
        name = self._ctx._name
        return f"<Ref #{self.pid}{' ' + name if name else ''}>"

    @property
    def name(self) -> str | None:
        """The registered name, if any."""
        return self._ctx._name

    @property
    def alive(self) -> bool:
        """Whether the actor has not exited yet (it may be exiting)."""
        return self._ctx._state < 5  # _EXITED

    # -- asynchronous messages (never block, never raise) --

    def cast(self, message: Any) -> None:
        """Queue ``message`` for ``handle_cast``. Never blocks, never raises: a dead target or a
        full mailbox (per the actor's overflow policy) turns it into a dead letter."""
        self._ctx._deliver((CAST, message))

    def send(self, message: Any) -> None:
        """Queue ``message`` for ``handle_info`` (Erlang's ``!``). Never blocks, never raises."""
        self._ctx._deliver((INFO, message))

    def cast_nowait(self, message: Any) -> None:
        """Like :meth:`cast`, but raise :class:`WouldBlock` instead when the mailbox is full."""
        ctx = self._ctx
        if ctx._mailbox_full():
            raise WouldBlock
        ctx._deliver((CAST, message))

    def send_nowait(self, message: Any) -> None:
        """Like :meth:`send`, but raise :class:`WouldBlock` instead when the mailbox is full."""
        ctx = self._ctx
        if ctx._mailbox_full():
            raise WouldBlock
        ctx._deliver((INFO, message))

    async def cast_wait(self, message: Any) -> None:
        """Queue ``message`` for ``handle_cast``, waiting while the mailbox is full (backpressure).

        A dead target makes it a dead letter. Always a checkpoint.
        """
        await self._ctx._deliver_wait((CAST, message))

    async def send_wait(self, message: Any) -> None:
        """Queue ``message`` for ``handle_info``, waiting while the mailbox is full. Checkpoints."""
        await self._ctx._deliver_wait((INFO, message))

    # -- request/reply --

    def call(
        self, request: Any, *, timeout: float | None = DEFAULT_CALL_TIMEOUT
    ) -> Coroutine[Any, Any, Any]:
        """Send ``request`` to ``handle_call`` and wait for the reply.

        Args:
            timeout: seconds to wait (default 5, as Erlang); None waits forever. The caller's own
                cancel scopes apply as well.

        Raises:
            NoProcError: the actor was not alive.
            CallError: it exited before replying (``reason`` is its exit reason), or its mailbox
                was full (``reason == "mailbox_full"``).
            CallTimeoutError: no reply within ``timeout``.
        """
        # Not ``async def`` itself: returning the context's coroutine saves one coroutine object
        # and frame per call (measurable on the storage path). Use it as ``await ref.call(...)``.
        return self._ctx._call(request, timeout)


__all__ = ["CALL", "CAST", "DEFAULT_CALL_TIMEOUT", "INFO", "CallTimeoutError", "Ref"]
