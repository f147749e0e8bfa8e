"""The public surface: every public name of ``actors`` comes from a private module, and nothing
private leaks (trio's test_exports, in small)."""

from __future__ import annotations

import importlib
import pkgutil
import types

import anyio

import actors


def _public_names() -> list[str]:
    return [name for name in vars(actors) if not name.startswith("_")]


def test_every_public_name_is_reexported_from_a_private_module() -> None:
    names = _public_names()
    assert names, "actors exports nothing"
    for name in names:
        obj = getattr(actors, name)
        assert not isinstance(obj, types.ModuleType), f"actors.{name} is a module"
        module = getattr(obj, "__module__", None)
        if module is None or isinstance(obj, (str, float, int)):
            continue  # constants: checked below
        if obj is anyio.WouldBlock:  # the field's own name, re-exported through actors._errors
            assert actors._errors.WouldBlock is obj
            continue
        assert module.startswith("actors._"), f"actors.{name} comes from {module}"


def test_every_private_module_is_private() -> None:
    modules = [m.name for m in pkgutil.iter_modules(actors.__path__)]
    assert modules
    assert all(m.startswith("_") for m in modules), modules


def test_constants_are_the_private_modules_own() -> None:
    for name in _public_names():
        obj = getattr(actors, name)
        if not isinstance(obj, (str, float, int)):
            continue
        owners = [
            m.name
            for m in pkgutil.iter_modules(actors.__path__)
            if getattr(importlib.import_module(f"actors.{m.name}"), name, None) is obj
        ]
        assert owners, f"actors.{name} is not defined in a private module"


def test_the_expected_surface() -> None:
    expected = {
        "Actor", "ActorInfo", "ActorsError", "BUDGET", "Call", "CallError", "CallTimeoutError",
        "Context", "DEFAULT_CALL_TIMEOUT", "DEFAULT_MAILBOX_SIZE", "DeadLetter", "Down", "Exit",
        "From", "KILL", "KILLED", "MAILBOX_OVERFLOW", "MailboxStatistics", "MonitorRef",
        "NOPROC", "NORMAL", "NOREPLY", "NameTakenError", "NoProcError", "Node",
        "NodeClosedError", "NodeStatistics", "Overflow", "ReceiveTimeoutError", "Ref",
        "SHUTDOWN", "SpawnError", "Status", "Timer", "TraceEvent", "WouldBlock",
        "is_clean_exit", "open_node",
    }  # fmt: skip
    assert set(_public_names()) - {"annotations"} == expected


def test_errors_share_one_root() -> None:
    for name in _public_names():
        obj = getattr(actors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not actors.WouldBlock:
            assert issubclass(obj, actors.ActorsError), name
