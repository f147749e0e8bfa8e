"""The per-node name registry."""

from __future__ import annotations

import pytest

from actors import NameTakenError, NoProcError, open_node

from ._support import Recorder, settle

pytestmark = pytest.mark.anyio


async def test_register_whereis_unregister() -> None:
    async with open_node() as node:
        ref = node.spawn(Recorder)
        node.register("svc", ref)
        assert node.whereis("svc") == ref
        assert ref.name == "svc"
        assert node.registered() == ["svc"]
        assert node.context("svc").ref == ref
        node.unregister("svc")
        assert node.whereis("svc") is None
        assert ref.name is None
        with pytest.raises(KeyError):
            node.unregister("svc")
        with pytest.raises(NoProcError):
            node.context("svc")


async def test_names_are_unique_and_one_per_actor() -> None:
    async with open_node() as node:
        a = node.spawn(Recorder, name="a")
        b = node.spawn(Recorder)
        with pytest.raises(NameTakenError):
            node.register("a", b)
        with pytest.raises(NameTakenError):
            node.spawn(Recorder, name="a")
        with pytest.raises(NameTakenError):
            node.register("other", a)
        with pytest.raises(ValueError, match="non-empty"):
            node.register("", b)


async def test_names_are_released_on_exit() -> None:
    async with open_node() as node:
        a = node.spawn(Recorder, name="a")
        a.cast(("crash", "x"))
        await settle()
        assert node.whereis("a") is None
        b = node.spawn(Recorder, name="a")
        assert node.whereis("a") == b


async def test_register_a_dead_actor_raises() -> None:
    async with open_node() as node:
        a = node.spawn(Recorder)
        node.exit(a, "kill")
        with pytest.raises(NoProcError):
            node.register("late", a)
        assert node.whereis("late") is None


async def test_an_actor_registers_itself() -> None:
    class SelfNaming(Recorder):
        def init(self) -> None:
            super().init()
            self.ctx.register("me")

    async with open_node() as node:
        ref = node.spawn(SelfNaming)
        assert node.whereis("me") == ref
        assert node.context(ref).name == "me"


async def test_registries_are_per_node() -> None:
    async with open_node() as one, open_node() as two:
        one.spawn(Recorder, name="x")
        assert two.whereis("x") is None
        two.spawn(Recorder, name="x")
