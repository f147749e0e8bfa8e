"""Running a node: the tree under ``run_application``, with a graceful drain on SIGTERM/SIGINT:
stop accepting, then stop the tree in order (connections flush what was committed and close with
1012, then the actors behind them, storage last)."""

from __future__ import annotations

import signal

import anyio
import structlog
import trio

from actors import Node, Ref
from config import Settings, load_or_create_secret
from supervisors import run_application

from ._messages import StopAccepting
from ._services import LISTENER, Services
from ._tree import node_spec

log = structlog.get_logger("gateway")


async def serve(settings: Settings) -> object:
    """Run a node with ``settings`` until SIGTERM or SIGINT; return the root's exit reason.

    Raises:
        ConfigError: the data directory or its secret cannot be used.
        SpawnError: the tree failed to start (e.g. storage unreachable).
    """
    secret = load_or_create_secret(settings.server.data_dir)
    services = Services(settings, secret)
    stop = anyio.Event()
    nodes: list[Node] = []

    def ready(node: Node, root: Ref) -> None:
        nodes.append(node)

    async def drain_on_signal(task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            task_status.started()
            async for signum in received:
                log.info("draining", signal=signal.Signals(signum).name)
                services.draining = True
                if nodes:
                    listener = nodes[0].whereis(LISTENER)
                    if listener is not None:
                        listener.send(StopAccepting())
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        await nursery.start(drain_on_signal)
        reason = await run_application(
            node_spec(services), name="parley", stop_signals=(), stop=stop, ready=ready
        )
        nursery.cancel_scope.cancel()
    log.info("node_stopped", reason=repr(reason))
    return reason
