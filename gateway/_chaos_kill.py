"""How the chaos monkey kills one actor and watches its supervisor take it back.

:func:`kill` kills a target (a supervisor like any other actor) and waits until its
supervisor has taken the exit, so that the next intensity guard counts the restart;
:func:`restarted` waits for the supervisor's record to hold a new pid (a killed supervisor's
once the remains of its old subtree are gone). Times are the node's loop clock (s).
Supervisors' records change without an event to wait on: both poll, every 1 ms at first,
backing off to every 10 ms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import trio

from actors import KILL, Node, Ref

from ._chaos_targets import Target

#: Seconds a kill waits for the supervisor to take the exit before going on.
SETTLE_TIMEOUT: Final = 1.0


async def until(done: Callable[[], bool]) -> None:
    """Poll ``done`` until it holds: every 1 ms at first, backing off to every 10 ms (so a
    restart's latency is measured to within about 10 %, or 10 ms). Bound it with a cancel
    scope. Checkpoints."""
    step = 0.001
    while not done():  # supervisors' records change without an event to wait on
        await trio.sleep(step)
        step = min(0.01, step * 1.25)


async def kill(node: Node, target: Target, before: Callable[[float], None]) -> float:
    """Kill ``target`` with ``kill`` and wait (at most ``SETTLE_TIMEOUT``) until its supervisor
    has taken the exit. ``before(at)`` runs just before the kill (to record it while the
    victim's name is still registered). Returns the kill's time. Checkpoints.

    A supervisor is killed like any other actor: its children get ``killed`` through their
    links and stop in their own time, and its supervisor starts it again once they are gone
    (docs/supervisors.md, "A child's remains").
    """
    old = target.ref
    at = node.now()
    before(at)
    node.exit(old, KILL)
    with trio.move_on_after(SETTLE_TIMEOUT):
        await until(lambda: target.record.ref is not old or not target.supervisor.alive)
    return at


async def restarted(target: Target, wait: float) -> Ref | None:
    """The pid ``target``'s supervisor restarted in its place, once its record holds one (at
    most ``wait`` s); None for a temporary child, or once the supervisor has given up.
    Checkpoints."""
    if target.temporary:
        return None
    child = target.record
    old = target.ref

    def settled() -> bool:
        ref = child.ref
        return (ref is not None and ref != old) or not target.supervisor.alive

    with trio.move_on_after(wait):
        await until(settled)
    ref: Ref | None = child.ref
    return ref if ref is not None and ref != old else None
