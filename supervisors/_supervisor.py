"""The static supervisor: an ordered list of child specs and a restart strategy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import SupervisorBase
from ._errors import (
    AlreadyPresentError,
    ChildNotFoundError,
    ChildRunningError,
    SpecError,
    StartChildError,
    ignored,
)
from ._restarts import Child, ChildCounts, ChildInfo, child_info
from ._spec import ChildSpec, ChildType, Restart, Strategy, SupervisorFlags


def is_supervisor(behaviour: object) -> bool:
    """Whether ``behaviour`` is a supervisor class (static or dynamic)."""
    return isinstance(behaviour, type) and issubclass(behaviour, SupervisorBase)


class Supervisor(SupervisorBase):
    """A supervisor of a fixed, ordered set of children (OTP's one_for_one, one_for_all and
    rest_for_one supervisors).

    Start it with ``await ctx.start_link(Supervisor, flags, specs)`` (or ``node.start``), or
    subclass it and override :meth:`configure` to build the flags and specs from other
    arguments. Children start in order; if one fails to start, those already started are
    stopped in reverse order and the start raises ``SpawnError`` (from ``StartChildError``).
    It traps exits; stopping it stops its children in reverse order, each within its
    ``shutdown``.
    """

    _children: list[Child]
    _ids: dict[Any, Child]

    def configure(self, *args: Any) -> tuple[SupervisorFlags, Sequence[ChildSpec]]:
        """Return the flags and child specs. The default takes them as the two arguments."""
        if len(args) != 2:
            raise TypeError("Supervisor takes (flags, specs); override configure() otherwise")
        flags, specs = args
        return flags, specs

    async def init(self, *args: Any) -> None:
        """Validate the specs and start the children in order (see the class docstring).

        Raises:
            SpecError: a spec is not a ChildSpec, or two share an id.
            StartChildError: a child failed to start (the started ones were stopped).
        """
        flags, specs = self.configure(*args)
        self._setup(flags)
        self._children = []
        self._ids = {}
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise SpecError(f"expected a ChildSpec, got {spec!r}")
            if spec.id in self._ids:
                raise SpecError(f"duplicate child id {spec.id!r}")
            child = Child(spec)
            self._children.append(child)
            self._ids[spec.id] = child
        started: list[Child] = []
        for child in self._children:
            try:
                await self._start_child(child)
            except StartChildError as exc:
                if ignored(exc):  # OTP's ignore: the child stays, not running; no retry
                    continue
                for done in reversed(started):
                    await self._stop_child(done)
                raise
            started.append(child)

    # -- strategy --

    async def _restart(self, child: Child) -> None:
        strategy = self.flags.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif strategy is Strategy.ONE_FOR_ALL:
            group = list(self._children)
        else:
            group = self._children[self._children.index(child) :]
        for other in reversed(group):
            if other is not child and other.ref is not None:
                await self._stop_child(other)
            if other.spec.restart is Restart.TEMPORARY:  # stopped for good, as OTP does
                self._forget(other)
        group = [member for member in group if member.spec.restart is not Restart.TEMPORARY]
        for member in group:
            member.restarts += 1
        if child.spec.backoff is not None:
            self._schedule(group, child, retry=False)
        else:
            await self._start_group(group)

    async def _start_group(self, children: Sequence[Child]) -> None:
        if self._wait_for_remains([c for c in children if c.ref is None and self._owns(c)]):
            return  # started once the remains of their previous incarnations are gone
        for child in children:
            if child.ref is not None or not self._owns(child):
                continue
            try:
                await self._start_child(child)
            except StartChildError as exc:
                if ignored(exc):  # OTP's ignore: the child stays, not running; no retry
                    continue
                # OTP's try_again_restart: one_for_all restarts the whole group again; for
                # rest_for_one the failed child and those after it (none of which started).
                retry = list(children)
                if self.flags.strategy is Strategy.ONE_FOR_ALL:
                    for other in reversed(children):
                        if other.ref is not None:
                            await self._stop_child(other)
                else:
                    retry = retry[retry.index(child) :]
                self._schedule(retry, child, retry=True)
                return

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            await self._stop_child(child)

    def _forget(self, child: Child) -> None:
        if self._ids.get(child.spec.id) is child:
            del self._ids[child.spec.id]
            self._children.remove(child)

    def _owns(self, child: Child) -> bool:
        return self._ids.get(child.spec.id) is child

    def children_records(self) -> list[tuple[Any, Child]]:
        """(id, record) of every child, in start order: for introspection."""
        return [(child.spec.id, child) for child in self._children]

    def format_status(self) -> dict[str, Any]:
        """Strategy, intensity, period, number of children and restarts in the current period."""
        return {
            "strategy": self.flags.strategy.value,
            "intensity": self.flags.intensity,
            "period": self.flags.period,
            "children": len(self._children),
            "recent_restarts": len(self._intensity),
        }

    # -- operations (the client API in supervisors._api) --

    def _get(self, child_id: Any) -> Child:
        try:
            child = self._ids.get(child_id)
        except TypeError:  # unhashable: no child has it (and the supervisor must not crash)
            child = None
        if child is None:
            raise ChildNotFoundError(f"no child {child_id!r}")
        return child

    async def _op_which_children(self, _: object) -> list[ChildInfo]:
        return [child_info(child, child.spec.id) for child in self._children]

    async def _op_count_children(self, _: object) -> ChildCounts:
        return ChildCounts(
            specs=len(self._children),
            active=sum(1 for c in self._children if c.ref is not None),
            supervisors=sum(1 for c in self._children if c.spec.type is ChildType.SUPERVISOR),
            workers=sum(1 for c in self._children if c.spec.type is ChildType.WORKER),
        )

    async def _op_start_child(self, spec: ChildSpec) -> Any:
        if not isinstance(spec, ChildSpec):
            raise SpecError(f"start_child on a static supervisor takes a ChildSpec, got {spec!r}")
        if spec.id in self._ids:
            existing = self._ids[spec.id]
            state = "started" if existing.ref is not None else "present"
            raise AlreadyPresentError(f"child {spec.id!r} is already {state}")
        child = Child(spec)
        await self._start_child(child)  # a failed start adds nothing (OTP)
        self._children.append(child)
        self._ids[spec.id] = child
        return child.ref

    async def _op_terminate_child(self, child_id: Any) -> None:
        child = self._get(child_id)
        await self._stop_child(child)
        if child.spec.restart is Restart.TEMPORARY:
            self._forget(child)

    async def _op_restart_child(self, child_id: Any) -> Any:
        child = self._get(child_id)
        if child.ref is not None:
            raise ChildRunningError(f"child {child_id!r} is running")
        await self._start_child(child)
        return child.ref

    async def _op_delete_child(self, child_id: Any) -> None:
        child = self._get(child_id)
        if child.ref is not None:
            raise ChildRunningError(f"child {child_id!r} is running")
        self._forget(child)

    async def _op_get_childspec(self, child_id: Any) -> ChildSpec:
        return self._get(child_id).spec
