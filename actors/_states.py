"""An actor's life-cycle states and kinds, as small ints (compared on hot paths)."""

from __future__ import annotations

from typing import Final

from ._types import Status

# States, ordered: everything >= EXITING takes no more messages.
STARTING: Final = 0
RUNNING: Final = 1
WAITING: Final = 2
HIBERNATED: Final = 3
EXITING: Final = 4
EXITED: Final = 5
STATUS: Final = (
    Status.STARTING,
    Status.RUNNING,
    Status.WAITING,
    Status.HIBERNATED,
    Status.EXITING,
    Status.EXITED,
)

CLASS: Final = 0  # an Actor subclass instance (gen_server)
FUNCTION: Final = 1  # an async function with selective receive
INBOX: Final = 2  # a mailbox read by an outside task (tests, the shell)
