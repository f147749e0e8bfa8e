"""The application entry point: run a supervision tree on a node until told to stop."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import structlog

from actors import KILL, SHUTDOWN, Context, Exit, Node, Ref, SpawnError, open_node

from ._spec import INFINITY, ChildSpec

log = structlog.get_logger("supervisors")


async def run_application(
    root: ChildSpec,
    *,
    name: str = "parley",
    stop_signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    stop: anyio.Event | None = None,
    ready: Callable[[Node, Ref], Any] | None = None,
) -> object:
    """Open a node, start the ``root`` child (usually a supervisor) and run until a stop signal
    arrives, ``stop`` is set, or the root exits by itself (e.g. it gave up after too many
    restarts). Stopping asks the root to shut down (``shutdown`` exit signal from its parent),
    waits up to ``root.shutdown`` seconds for the tree to stop in reverse order, then kills it.

    Args:
        stop_signals: OS signals that stop the application (main thread only; pass ``()`` to
            use ``stop`` alone).
        ready: called once with the node and the root's ref after the tree has started.

    Returns:
        The root's exit reason.

    Raises:
        SpawnError: the root failed to start.
    """
    failure: SpawnError | None = None
    async with open_node(name=name) as node:
        with node.inbox() as app:
            try:
                root_ref = await app.start_link(root.start, *root.args, **root.options)
            except SpawnError as exc:
                failure = exc  # raised outside the node's task group, not in an ExceptionGroup
            else:
                return await _run(node, app, root, root_ref, stop_signals, stop, ready)
    assert failure is not None
    raise failure


async def _run(
    node: Node,
    app: Context,
    root: ChildSpec,
    root_ref: Ref,
    stop_signals: Sequence[signal.Signals],
    stop: anyio.Event | None,
    ready: Callable[[Node, Ref], Any] | None,
) -> object:
    if ready is not None:
        ready(node, root_ref)
    async with anyio.create_task_group() as waiters:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(*stop_signals) as received:
                async for signum in received:
                    log.info("stop_signal", signal=signal.Signals(signum).name)
                    break
            waiters.cancel_scope.cancel()

        async def on_event(event: anyio.Event) -> None:
            await event.wait()
            waiters.cancel_scope.cancel()

        async def on_root_exit() -> None:
            await app.receive(lambda m: type(m) is Exit and m.ref == root_ref)
            waiters.cancel_scope.cancel()

        if stop_signals:
            waiters.start_soon(on_signal)
        if stop is not None:
            waiters.start_soon(on_event, stop)
        waiters.start_soon(on_root_exit)
    if not root_ref.alive:
        reason = await node.wait_exit(root_ref)
        log.info("application_stopped", reason=repr(reason))
        return reason
    app.unlink(root_ref)
    app.exit(root_ref, SHUTDOWN)
    deadline = root.shutdown if isinstance(root.shutdown, float | int) else 0.0
    if deadline != INFINITY:
        with anyio.move_on_after(deadline):
            reason = await node.wait_exit(root_ref)
            log.info("application_stopped", reason=repr(reason))
            return reason
        app.exit(root_ref, KILL)
    reason = await node.wait_exit(root_ref)
    log.info("application_stopped", reason=repr(reason))
    return reason
