"""The runtime's exceptions: one root, and the field's names for each failure."""

from __future__ import annotations

from anyio import WouldBlock as WouldBlock


class ActorsError(Exception):
    """Root of every error the actor runtime raises."""


class NoProcError(ActorsError):
    """The target actor is not alive (never existed, already exited, or a name is unregistered).

    Raised by ``call``, ``link`` (when not trapping exits) and name look-ups. Erlang's ``noproc``.
    """

    reason = "noproc"


class CallError(ActorsError):
    """A ``call`` failed: the server exited before replying, or the request was refused.

    ``reason`` is the server's exit reason (an exception, ``"killed"``, ``"shutdown"``, ...) or
    ``"mailbox_full"`` when the request could not be queued.
    """

    def __init__(self, reason: object, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or f"call failed: {reason!r}")


class CallTimeoutError(CallError, TimeoutError):
    """A ``call`` got no reply within its timeout (Erlang's default: 5 s)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__("timeout", f"no reply within {timeout} s")


class ReceiveTimeoutError(ActorsError, TimeoutError):
    """A selective ``receive`` with a timeout found no matching message in time."""


class SpawnError(ActorsError):
    """An actor's ``init`` failed, so the actor was never started.

    ``reason`` is the exit reason (usually the exception ``init`` raised, also chained as
    ``__cause__``).
    """

    def __init__(self, reason: object) -> None:
        self.reason = reason
        super().__init__(f"init failed: {reason!r}")


class NameTakenError(ActorsError):
    """``register`` was asked for a name that another live actor holds, or the actor has one."""


class NodeClosedError(ActorsError):
    """The node is shutting down or closed, so it cannot spawn."""
