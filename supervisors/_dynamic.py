"""The dynamic supervisor (OTP's simple_one_for_one): many children from one spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors import Ref

from ._base import SupervisorBase
from ._errors import ChildNotFoundError, NotAllowedError, SpecError, StartChildError, ignored
from ._restarts import Child, ChildCounts, ChildInfo, child_info
from ._shutdown import shutdown_children
from ._spec import ChildSpec, ChildType, SupervisorFlags


class DynamicSupervisor(SupervisorBase):
    """Supervises per-entity children (a connection, a conversation) that all share one spec and
    are started on demand with ``start_child(sup, *extra_args)`` (appended to ``spec.args``).

    Start it with ``await ctx.start_link(DynamicSupervisor, flags, spec)``. Each child restarts on
    its own (one_for_one); ``flags.max_children`` caps their number. Stopping the supervisor
    stops all children in parallel within the spec's ``shutdown``. As in OTP,
    ``restart_child`` and ``delete_child`` are not allowed, and children are named by ref.
    """

    _spec: ChildSpec
    _restarting: set[Child]

    def configure(self, *args: Any) -> tuple[SupervisorFlags, ChildSpec]:
        """Return the flags and the children's spec. The default takes them as the arguments."""
        if len(args) != 2:
            raise TypeError("DynamicSupervisor takes (flags, spec); override configure() otherwise")
        flags, spec = args
        return flags, spec

    def init(self, *args: Any) -> None:
        """Take the flags and the children's spec; no child starts until ``start_child``.

        Raises:
            SpecError: the spec is not a ChildSpec.
        """
        flags, spec = self.configure(*args)
        if not isinstance(spec, ChildSpec):
            raise SpecError(f"a dynamic supervisor takes one ChildSpec, got {spec!r}")
        self._setup(flags)
        self._spec = spec
        self._restarting = set()

    # -- strategy (each child on its own) --

    async def _restart(self, child: Child) -> None:
        child.restarts += 1
        if child.spec.backoff is not None:
            self._restarting.add(child)
            self._schedule((child,), child, retry=False)
        else:
            await self._start_group((child,))

    async def _start_group(self, children: Sequence[Child]) -> None:
        for child in children:
            if self._wait_for_remains((child,)):
                self._restarting.add(child)  # started once its remains are gone
                continue
            try:
                await self._start_child(child)
            except Exception as exc:
                if isinstance(exc, StartChildError) and ignored(exc):
                    self._restarting.discard(child)  # OTP's ignore: no restart, no failure
                    continue
                self._restarting.add(child)
                self._schedule((child,), child, retry=True)
            else:
                self._restarting.discard(child)

    async def _stop_all(self) -> None:
        refs = [child.ref for child in self._by_pid.values() if child.ref is not None]
        for child in self._restarting:
            child.pending = None
        self._restarting.clear()
        self._by_pid.clear()
        await shutdown_children(self.ctx, refs, self._spec.shutdown)  # type: ignore[arg-type]

    def _forget(self, child: Child) -> None:
        self._restarting.discard(child)

    def _owns(self, child: Child) -> bool:
        return child in self._restarting

    def children_records(self) -> list[tuple[Any, Child]]:
        """(ref, record) of every child; (None, record) for those waiting to restart."""
        records = [(child.ref, child) for child in self._by_pid.values()]
        records.extend((None, child) for child in self._restarting)
        return records

    def child_count(self) -> int:
        """Children running or waiting to restart."""
        return len(self._by_pid) + len(self._restarting)

    def format_status(self) -> dict[str, Any]:
        """Intensity, period, number of children, the cap and restarts in the current period."""
        return {
            "strategy": "simple_one_for_one",
            "intensity": self.flags.intensity,
            "period": self.flags.period,
            "children": self.child_count(),
            "max_children": self.flags.max_children,
            "recent_restarts": len(self._intensity),
        }

    # -- operations --

    async def _op_start_child(self, extra: tuple[Any, ...]) -> Ref:
        if not isinstance(extra, tuple):
            raise SpecError(
                "a dynamic supervisor's start_child takes extra arguments for its one spec, "
                f"not {extra!r}"
            )
        cap = self.flags.max_children
        if cap is not None and self.child_count() >= cap:
            raise NotAllowedError(f"max_children ({cap}) reached")
        child = Child(self._spec, tuple(extra))
        await self._start_child(child)
        assert child.ref is not None
        return child.ref

    def _by_ref(self, ref: Any) -> Child:
        if not isinstance(ref, Ref):
            raise ChildNotFoundError(
                f"a dynamic supervisor's children are named by Ref, not {ref!r}"
            )
        child = self._by_pid.get(ref.pid)
        if child is None or child.ref is not ref:
            raise ChildNotFoundError(f"{ref!r} is not a child")
        return child

    async def _op_terminate_child(self, ref: Any) -> None:
        child = self._by_ref(ref)
        await self._stop_child(child)
        self._forget(child)

    async def _op_restart_child(self, _: Any) -> None:
        raise NotAllowedError("restart_child is not allowed on a dynamic supervisor")

    async def _op_delete_child(self, _: Any) -> None:
        raise NotAllowedError("delete_child is not allowed on a dynamic supervisor")

    async def _op_get_childspec(self, ref: Any) -> ChildSpec:
        return self._by_ref(ref).spec

    async def _op_which_children(self, _: object) -> list[ChildInfo]:
        return [child_info(child, ref) for ref, child in self.children_records()]

    async def _op_count_children(self, _: object) -> ChildCounts:
        total = self.child_count()
        is_sup = self._spec.type is ChildType.SUPERVISOR
        return ChildCounts(
            specs=1,
            active=len(self._by_pid),
            supervisors=total if is_sup else 0,
            workers=0 if is_sup else total,
        )
