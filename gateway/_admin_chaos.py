"""The admin endpoint's ``chaos.*`` ops: validated requests in, the chaos monkey's results out.

The monkey (``gateway._chaos``) is reached through ``Services.chaos`` while the ``chaos`` actor
runs; the failpoints through ``Services.failpoints``. Result shapes are in docs/inspector.md
(schemas ``chaos_kill``, ``chaos_status``, ``chaos_havoc``, ``chaos_storm``,
``chaos_failpoints``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors import Context, NoProcError

from ._admin_protocol import AdminRequestError, Request
from ._chaos import ChaosError, Monkey
from ._services import Services


def failpoints_of(services: Services) -> dict[str, Any]:
    """``{name: {"armed", "hits"}}`` of every storage failpoint."""
    return {
        name: {"armed": state.armed, "hits": state.hits}
        for name, state in services.failpoints.snapshot().items()
    }


def _supervisor(monkey: Monkey, resolve: Callable[[int | str], Context], ref: int | str) -> Context:
    """A supervisor by ref, or, when no actor is registered under a string, by its path of
    child ids from the root (``gateway``, ``gateway/connections``, ``storage``)."""
    try:
        return resolve(ref)
    except AdminRequestError as exc:
        if not isinstance(ref, str) or exc.code != "not_found":
            raise
        found = monkey.by_path(ref)
        if found is None:
            raise
        return resolve(found.pid)


def _monkey(services: Services) -> Monkey:
    monkey = services.chaos
    if not isinstance(monkey, Monkey) or not monkey.self_ref.alive:
        raise AdminRequestError("refused", "the chaos monkey is not running (restarting?)")
    return monkey


async def answer_chaos(
    services: Services, resolve: Callable[[int | str], Context], request: Request
) -> Any:
    """The result of a ``chaos.*`` op. ``resolve`` turns a wire ref into a live actor (raising
    ``not_found``). Checkpoints.

    Raises:
        AdminRequestError: ``not_found``, ``refused`` (the monkey is not running, or refuses the
            request: see ``Monkey``), ``bad_request`` (an unknown chaos op).
    """
    op, args = request.op, request.args
    if op == "chaos.failpoint":
        armed = services.failpoints.arm(args["name"], args["count"])
        return {"name": args["name"], "armed": armed}
    if op == "chaos.failpoints":
        return failpoints_of(services)
    monkey = _monkey(services)
    try:
        if op == "chaos.status":
            return monkey.status()
        if op == "chaos.stop":
            return monkey.stop()
        if op == "chaos.start":
            return monkey.start(args["seed"], args["rate"], args["kinds"], args["duration"])
        if op == "chaos.kill":
            return await monkey.kill(args["kind"], args["count"], args["seed"], args["wait"])
        if op in ("chaos.havoc", "chaos.storm"):
            ctx = _supervisor(monkey, resolve, args["supervisor"])
            if op == "chaos.havoc":
                return await monkey.havoc(ctx.ref, args["seed"], args["wait"])
            return await monkey.storm(ctx.ref, args["child"], args["kills"], args["wait"])
    except ChaosError as exc:
        if exc.code == "not_found":
            raise AdminRequestError("not_found", exc.message) from None
        raise AdminRequestError("refused", exc.message) from None
    except NoProcError as exc:
        raise AdminRequestError("not_found", str(exc)) from None
    except ValueError as exc:
        raise AdminRequestError("bad_request", str(exc)) from None
    raise AdminRequestError("bad_request", f"unknown op {op!r}", request.id)
