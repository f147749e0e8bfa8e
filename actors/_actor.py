"""The gen_server behaviour: ``Actor`` and the reply handle ``From``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, final

import structlog

from ._errors import CallError, CallTimeoutError
from ._lowlevel import Waiter
from ._types import NORMAL, Overflow

if TYPE_CHECKING:
    from ._process import Context
    from ._ref import Ref
    from ._timers import Timer

log = structlog.get_logger("actors")


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOREPLY"


#: Return this from ``handle_call`` to answer later with ``From.reply`` (OTP's ``{noreply, S}``).
NOREPLY: Final = _NoReply()


@final
class From:
    """Where a ``call``'s reply goes. Reply exactly once, from any actor or task.

    A reply to a caller that already timed out, was cancelled, or got an error is ignored
    (``reply`` returns False), as with OTP's process aliases.
    """

    __slots__ = ("_server", "_timer", "_waiter", "done")

    def __init__(self, server: Context, waiter: Waiter) -> None:
        self._server = server
        self._waiter = waiter
        self._timer: Timer | None = None
        self.done = False

    def reply(self, value: Any) -> bool:
        """Answer the call with ``value``. Returns False if the caller is no longer waiting."""
        if not self._close():
            return False
        return self._waiter.wake(value)

    def _fail(self, error: BaseException) -> bool:
        if not self._close():
            return False
        return self._waiter.throw(error)

    def _close(self) -> bool:
        if self.done:
            return False
        self.done = True
        # The waiter's abort hook is this From's bound method: a reference cycle that would keep
        # the call's reply alive until the cyclic collector runs. Answered calls need no hook.
        self._waiter.on_abort = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deferred = self._server._deferred
        if deferred is not None:
            deferred.discard(self)
        return True

    def _on_timeout(self, timeout: float) -> None:
        self._timer = None
        self._fail(CallTimeoutError(timeout))

    def _abandon(self) -> None:  # the caller was cancelled
        self._waiter.on_abort = None
        if not self.done:
            self.done = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            deferred = self._server._deferred
            if deferred is not None:
                deferred.discard(self)

    def _server_exited(self, reason: object) -> None:
        self._fail(CallError(reason))


class Actor:
    """Base class of gen_server-style actors. Override what you need; each handler may be a plain
    ``def`` (fastest: no coroutine per message) or an ``async def``.

    - ``init(*args)``: set up state. Raising makes ``spawn``/``start`` raise ``SpawnError``.
    - ``handle_call(request, from_)``: return the reply, or ``NOREPLY`` and call
      ``from_.reply(value)`` later.
    - ``handle_cast(message)``, ``handle_info(message)``: no reply. ``Exit`` and ``Down``
      arrive at ``handle_info``.
    - ``terminate(reason)``: runs when the actor stops itself, crashes, or (while trapping exits)
      is told to exit by its parent. It does not run for ``kill`` or untrapped exit signals.
    - ``format_status()``: a small mapping for introspection (``ActorInfo.summary``).

    Class attributes set defaults for spawning: ``mailbox_size``, ``overflow`` and
    ``hibernate_after`` (seconds idle before giving up the task, up to 50 ms more; None never).
    Inside handlers, ``self.ctx`` is the actor's :class:`Context` and ``self.ref`` its ``Ref``.
    """

    mailbox_size: ClassVar[int | None] = None
    overflow: ClassVar[Overflow | None] = None
    hibernate_after: ClassVar[float | None] = None

    _async_init: ClassVar[bool] = False
    _async_call: ClassVar[bool] = False
    _async_cast: ClassVar[bool] = False
    _async_info: ClassVar[bool] = False
    _async_terminate: ClassVar[bool] = False
    _needs_cancel_scope: ClassVar[bool] = False  # some handler awaits: kills must cancel it

    ctx: Context

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._async_init = inspect.iscoroutinefunction(cls.init)
        cls._async_call = inspect.iscoroutinefunction(cls.handle_call)
        cls._async_cast = inspect.iscoroutinefunction(cls.handle_cast)
        cls._async_info = inspect.iscoroutinefunction(cls.handle_info)
        cls._async_terminate = inspect.iscoroutinefunction(cls.terminate)
        cls._needs_cancel_scope = cls._async_call or cls._async_cast or cls._async_info

    def init(self, *args: Any) -> Awaitable[None] | None:
        """Set up the actor's state from the spawn arguments."""
        if args:
            raise TypeError(f"{type(self).__qualname__}.init takes no arguments, got {args!r}")
        return None

    def handle_call(self, request: Any, from_: From) -> Any:
        """Answer a ``call``. The default crashes: the actor did not expect calls."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected call: {request!r}")

    def handle_cast(self, message: Any) -> Awaitable[None] | None:
        """Handle a ``cast``. The default crashes: the actor did not expect casts."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected cast: {message!r}")

    def handle_info(self, message: Any) -> Awaitable[None] | None:
        """Handle any other message. The default logs it and carries on, as OTP does."""
        log.warning("unexpected_info", actor=repr(self.ctx.ref), message=repr(message)[:200])
        return None

    def terminate(self, reason: object) -> Awaitable[None] | None:
        """Clean up before exiting with ``reason``."""
        return None

    def format_status(self) -> Mapping[str, Any] | None:
        """A small summary of the state for operators; None exposes nothing."""
        return None

    @property
    def ref(self) -> Ref:
        """This actor's ``Ref``."""
        return self.ctx.ref

    def stop(self, reason: object = NORMAL) -> None:
        """Exit with ``reason`` once the current handler returns (``terminate`` runs first)."""
        self.ctx.stop(reason)
