"""Selective receive for function actors and inboxes (Erlang's ``receive ... after``).

The mailbox is scanned in order for the first message the predicate accepts; the rest stay
queued. Bound to ``Context`` as its ``receive`` method.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ._errors import NoProcError, ReceiveTimeoutError
from ._ref import CALL, INFO
from ._states import CLASS, EXITING
from ._types import Call

if TYPE_CHECKING:
    from ._process import Context

NOTHING: Final = object()


def as_message(entry: tuple[Any, ...]) -> Any:
    return Call(entry[1], entry[2]) if entry[0] is CALL else entry[1]


async def receive(
    ctx: Context, match: Callable[[Any], bool] | None = None, *, timeout: float | None = None
) -> Any:
    """Take the first message ``match`` accepts (any message when None), waiting for one.

    System messages (``Exit``, ``Down``) are looked at first, then the mailbox in order;
    a ``call`` appears as a :class:`Call`. Unmatched messages stay queued in order.

    Args:
        timeout: seconds to wait; None waits forever.

    Raises:
        ReceiveTimeoutError: nothing matched within ``timeout``.
        NoProcError: this actor (an inbox) has exited.
    """
    if ctx._kind == CLASS:
        raise RuntimeError("receive() is for function actors and inboxes, not Actor classes")
    node = ctx._node
    timer = None
    try:
        while True:
            message = take(ctx, match)
            if message is not NOTHING:
                await node._backend.checkpoint()
                return message
            if ctx._state >= EXITING:
                raise NoProcError(f"{ctx._ref!r} has exited")
            if ctx._mailbox is not None and not ctx._mailbox:
                ctx._mailbox = None  # an empty deque is ~600 bytes: waiting actors keep none
            waiter = ctx._parked = node._backend.new_waiter()
            if timeout is not None and timer is None:
                timer = node._timers.add(
                    node._backend.now() + timeout,
                    functools.partial(
                        waiter.throw, ReceiveTimeoutError(f"no message within {timeout} s")
                    ),
                )
            elif timer is not None:
                timer.callback = functools.partial(
                    waiter.throw, ReceiveTimeoutError(f"no message within {timeout} s")
                )
            try:
                await waiter.wait()
            finally:
                ctx._parked = None
    finally:
        if timer is not None:
            timer.cancel()


def take(ctx: Context, match: Callable[[Any], bool] | None) -> Any:
    signals = ctx._signals
    if signals:
        for index, message in enumerate(signals):
            if match is None or match(message):
                del signals[index]
                count(ctx, INFO, message)
                return message
    mailbox = ctx._mailbox
    if mailbox:
        for index, entry in enumerate(mailbox):
            message = as_message(entry)
            if match is None or match(message):
                del mailbox[index]
                count(ctx, entry[0], message)
                if entry[0] is CALL and not entry[2].done:
                    # Fail it if this actor exits before replying.
                    if ctx._deferred is None:
                        ctx._deferred = set()
                    ctx._deferred.add(entry[2])
                if ctx._room_waiters:
                    ctx._wake_room_waiters()
                return message
    return NOTHING


def count(ctx: Context, kind: int, message: Any) -> None:
    ctx._processed += 1
    if ctx._tracer is not None:
        ctx._tracer.offer((kind, message))
