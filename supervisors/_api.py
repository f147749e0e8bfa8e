"""The client API (OTP's supervisor module functions): calls to a running supervisor.

Each call waits for the supervisor's answer without a timeout (as OTP's, which use
``infinity``); bound it with a cancel scope (``anyio.move_on_after``) when needed.
"""

from __future__ import annotations

from typing import Any

from actors import Ref

from ._base import Failure, Request
from ._restarts import ChildCounts, ChildInfo
from ._spec import ChildSpec


async def _request(sup: Ref, op: str, arg: Any = None) -> Any:
    # No call timeout, as OTP's supervisor:call/2 (infinity): terminate_child may wait out a
    # child's whole shutdown deadline. The caller bounds the wait with a cancel scope.
    reply = await sup.call(Request(op, arg), timeout=None)
    if type(reply) is Failure:
        raise reply.error
    return reply


async def start_child(sup: Ref, *args: Any) -> Ref:
    """Start a child: on a static supervisor ``start_child(sup, spec)``, on a dynamic one
    ``start_child(sup, *extra_args)`` (appended to the spec's args).

    Raises:
        StartChildError: its init failed (nothing is added).
        AlreadyPresentError: a static child with that id exists.
        NotAllowedError: a dynamic supervisor's ``max_children`` is reached.
    """
    if args and isinstance(args[0], ChildSpec):
        if len(args) != 1:
            raise TypeError("start_child(sup, spec) takes one ChildSpec")
        result: Ref = await _request(sup, "start_child", args[0])
        return result
    result = await _request(sup, "start_child", args)
    return result


async def terminate_child(sup: Ref, child: Any) -> None:
    """Stop a child (by id on a static supervisor, by ref on a dynamic one) within its
    ``shutdown``; a static child's spec stays (unless temporary). Raises ChildNotFoundError."""
    await _request(sup, "terminate_child", child)


async def restart_child(sup: Ref, child_id: Any) -> Ref:
    """Start a stopped static child again. Raises ChildNotFoundError, ChildRunningError,
    StartChildError, or NotAllowedError on a dynamic supervisor."""
    result: Ref = await _request(sup, "restart_child", child_id)
    return result


async def delete_child(sup: Ref, child_id: Any) -> None:
    """Remove a stopped static child's spec. Raises ChildNotFoundError, ChildRunningError, or
    NotAllowedError on a dynamic supervisor."""
    await _request(sup, "delete_child", child_id)


async def get_childspec(sup: Ref, child: Any) -> ChildSpec:
    """A child's spec (by id, or by ref on a dynamic supervisor). Raises ChildNotFoundError."""
    result: ChildSpec = await _request(sup, "get_childspec", child)
    return result


async def which_children(sup: Ref) -> list[ChildInfo]:
    """Every child with its ref, type, restart type, status and restart history. O(children)."""
    result: list[ChildInfo] = await _request(sup, "which_children")
    return result


async def count_children(sup: Ref) -> ChildCounts:
    """OTP's ``count_children``: specs, active, supervisors, workers."""
    result: ChildCounts = await _request(sup, "count_children")
    return result
