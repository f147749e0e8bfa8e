"""What introspection reads off an actor: its status and a frozen ``ActorInfo`` snapshot.

Bound to ``Context`` as methods; cold paths (operators, the inspector), kept apart from the
runtime's hot paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._states import CLASS, EXITED, EXITING, INBOX, STATUS
from ._types import ActorInfo, MailboxStatistics, Status

if TYPE_CHECKING:
    from ._process import Context


def behaviour_name(ctx: Context) -> str:
    behaviour = ctx._behaviour
    if isinstance(behaviour, type):
        return behaviour.__qualname__
    if ctx._kind == CLASS:
        return type(behaviour).__qualname__
    if ctx._kind == INBOX:
        return "inbox"
    return getattr(behaviour, "__qualname__", repr(behaviour))


def status(ctx: Context) -> Status:
    """The life-cycle state now."""
    if ctx._suspended and ctx._state < EXITING:
        return Status.SUSPENDED
    return STATUS[ctx._state]


def mailbox_statistics(ctx: Context) -> MailboxStatistics:
    """The mailbox's length, capacity, high-water mark and overflow policy."""
    mailbox = ctx._mailbox
    return MailboxStatistics(
        length=len(mailbox) if mailbox else 0,
        capacity=ctx._capacity,
        high_water_mark=ctx._hwm,
        overflow=ctx._overflow,
    )


def info(ctx: Context) -> ActorInfo:
    """A frozen snapshot of everything introspection knows about this actor. O(links)."""
    summary = None
    if ctx._kind == CLASS and ctx._state < EXITED:
        try:
            summary = ctx._behaviour.format_status()
        except Exception as exc:
            summary = {"format_status_error": repr(exc)}
    return ActorInfo(
        ref=ctx._ref,
        name=ctx._name,
        behaviour=behaviour_name(ctx),
        status=status(ctx),
        mailbox=mailbox_statistics(ctx),
        processed=ctx._processed,
        links=tuple(c._ref for c in ctx._links) if ctx._links else (),
        monitors=tuple(c._ref for c in ctx._monitors.values()) if ctx._monitors else (),
        monitored_by=(
            tuple(c._ref for c in ctx._monitored_by.values()) if ctx._monitored_by else ()
        ),
        parent=ctx.parent,
        trap_exit=ctx._trap_exit,
        started_at=ctx._started_at,
        summary=summary,
    )
