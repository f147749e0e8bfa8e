"""The supervisors' exceptions: one root, and OTP's error names."""

from __future__ import annotations

from actors import ActorsError


class SupervisorError(ActorsError):
    """Root of the errors supervisors raise to their callers."""


class SpecError(SupervisorError, ValueError):
    """A child spec or supervisor flag is invalid; the message names the field and the value."""


class ChildNotFoundError(SupervisorError, LookupError):
    """No child with that id (OTP's ``{error, not_found}``)."""


class ChildRunningError(SupervisorError):
    """The child is running, so it cannot be restarted or deleted (OTP's ``{error, running}``)."""


class AlreadyPresentError(SupervisorError):
    """A child with that id exists already (OTP's ``already_present`` / ``already_started``)."""


class NotAllowedError(SupervisorError):
    """The operation is not allowed for this kind of supervisor (e.g. ``restart_child`` on a
    dynamic supervisor, OTP's ``{error, simple_one_for_one}``), or the child cap is reached."""


class Ignore(Exception):
    """Raised from a child's ``init`` to not start it: OTP's ``ignore`` return.

    A restart that meets it leaves the child not running without counting a failure or
    retrying: a dynamic supervisor forgets the child, a static one keeps its spec with no
    process (as OTP does). ``start_child`` raises :class:`StartChildError` with it as the
    ``reason``. Use it when the child finds that its job is already done elsewhere, e.g. a
    registered name already held by a newer incarnation started on demand.
    """


def ignored(exc: StartChildError) -> bool:
    """Whether a failed start was the child's :class:`Ignore`."""
    return isinstance(exc.reason, Ignore)


class StartChildError(SupervisorError):
    """Starting a child failed; ``reason`` is its init failure (also chained)."""

    def __init__(self, child_id: object, reason: object) -> None:
        self.child_id = child_id
        self.reason = reason
        super().__init__(f"child {child_id!r} failed to start: {reason!r}")
