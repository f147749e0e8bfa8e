"""Stopping children the OTP way (supervisor.erl ``shutdown/2``): unlink, ask politely with a
``shutdown`` exit signal, wait up to the child's deadline, then kill."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from actors import KILL, SHUTDOWN, Context, Ref

from ._spec import BRUTAL_KILL, Shutdown


async def shutdown_child(ctx: Context, ref: Ref, shutdown: Shutdown) -> object:
    """Stop one child of the supervisor ``ctx`` and return its exit reason. Checkpoints.

    The link is removed first, so the child's exit does not come back as an ``Exit`` message.
    """
    node = ctx.node
    ctx.unlink(ref)
    if shutdown is BRUTAL_KILL:
        ctx.exit(ref, KILL)
        return await node.wait_exit(ref)
    ctx.exit(ref, SHUTDOWN)
    assert isinstance(shutdown, float | int)
    with anyio.move_on_after(shutdown):
        return await node.wait_exit(ref)
    ctx.exit(ref, KILL)
    return await node.wait_exit(ref)


async def shutdown_children(ctx: Context, refs: Sequence[Ref], shutdown: Shutdown) -> None:
    """Stop many children in parallel (a dynamic supervisor's way): signal all, wait for all
    within one deadline, then kill the ones left. Checkpoints.

    Children that do not trap exits and have no task running exit synchronously on the signal,
    so only the busy or trapping ones are waited for.
    """
    node = ctx.node
    brutal = shutdown is BRUTAL_KILL
    for ref in refs:
        ctx.unlink(ref)
        ctx.exit(ref, KILL if brutal else SHUTDOWN)
    remaining = [ref for ref in refs if ref.alive]
    if remaining and not brutal:
        assert isinstance(shutdown, float | int)
        with anyio.move_on_after(shutdown):
            for ref in remaining:
                if ref.alive:
                    await node.wait_exit(ref)
        for ref in remaining:
            if ref.alive:
                ctx.exit(ref, KILL)
    for ref in remaining:
        if ref.alive:
            await node.wait_exit(ref)
    await anyio.lowlevel.checkpoint()
