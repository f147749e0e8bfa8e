"""The public surfaces of gateway and config: re-exported from private modules, documented."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import config
import gateway


@pytest.mark.parametrize("package", [gateway, config])
def test_public_names_come_from_private_modules(package: ModuleType) -> None:
    names = [n for n in vars(package) if not n.startswith("_")]
    assert names
    for name in names:
        value = getattr(package, name)
        if inspect.ismodule(value):
            assert value.__name__.rsplit(".", 1)[-1].startswith("_"), name
            continue
        module = getattr(value, "__module__", None)
        if module is not None and (inspect.isclass(value) or inspect.isfunction(value)):
            assert module.startswith(package.__name__ + "._"), name
            assert value.__doc__, f"{name} has no docstring"
