"""ChildSpec, SupervisorFlags and Backoff: OTP's defaults, and bad fields rejected by name."""

from __future__ import annotations

import math
from typing import Any

import pytest

from actors import Actor
from supervisors import (
    BRUTAL_KILL,
    INFINITY,
    Backoff,
    ChildSpec,
    ChildType,
    DynamicSupervisor,
    Restart,
    SpecError,
    Strategy,
    Supervisor,
    SupervisorFlags,
)

from ._support import Worker


async def fn_actor(ctx: Any) -> None:
    pass


def plain_function(ctx: Any) -> None:
    pass


def test_worker_defaults_are_otps() -> None:
    spec = ChildSpec(id="w", start=Worker)
    assert spec.restart is Restart.PERMANENT
    assert spec.type is ChildType.WORKER
    assert spec.shutdown == 5.0
    assert spec.args == ()
    assert spec.backoff is None


@pytest.mark.parametrize("start", [Supervisor, DynamicSupervisor])
def test_supervisor_children_default_to_infinity(start: Any) -> None:
    spec = ChildSpec(id="s", start=start)
    assert spec.type is ChildType.SUPERVISOR
    assert spec.shutdown == INFINITY == math.inf


def test_function_actor_is_a_worker() -> None:
    assert ChildSpec(id="f", start=fn_actor).type is ChildType.WORKER


def test_explicit_fields_are_kept() -> None:
    spec = ChildSpec(
        id=("tuple", 1),
        start=Worker,
        args=(1,),
        restart=Restart.TRANSIENT,
        shutdown=BRUTAL_KILL,
        type=ChildType.SUPERVISOR,
        backoff=Backoff(),
        options={"mailbox_size": 10},
    )
    assert spec.shutdown is BRUTAL_KILL
    assert spec.type is ChildType.SUPERVISOR
    assert ChildSpec(id="w", start=Worker, shutdown=INFINITY).shutdown == math.inf
    assert ChildSpec(id="w", start=Worker, shutdown=0.25).shutdown == 0.25


def test_flags_defaults_are_otps() -> None:
    flags = SupervisorFlags()
    assert flags.strategy is Strategy.ONE_FOR_ONE
    assert (flags.intensity, flags.period) == (1, 5.0)
    assert flags.max_children is None
    assert SupervisorFlags(intensity=0).intensity == 0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": ["unhashable"]}, "id"),
        ({"start": Actor.__init__}, "start"),
        ({"start": plain_function}, "start"),
        ({"start": "Worker"}, "start"),
        ({"start": int}, "start"),
        ({"args": [1, 2]}, "args"),
        ({"restart": "permanent"}, "restart"),
        ({"shutdown": 0}, "shutdown"),
        ({"shutdown": -1}, "shutdown"),
        ({"shutdown": math.nan}, "shutdown"),
        ({"shutdown": True}, "shutdown"),
        ({"shutdown": "infinity"}, "shutdown"),
        ({"type": "worker"}, "type"),
        ({"backoff": 1.0}, "backoff"),
        ({"options": {"name": "x"}}, "options"),
    ],
)
def test_bad_child_spec_field_is_named(fields: dict[str, Any], named: str) -> None:
    values: dict[str, Any] = {"id": "child", "start": Worker}
    values.update(fields)
    with pytest.raises(SpecError, match=named):
        ChildSpec(**values)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"strategy": "one_for_one"}, "strategy"),
        ({"intensity": -1}, "intensity"),
        ({"intensity": 1.5}, "intensity"),
        ({"intensity": True}, "intensity"),
        ({"period": 0}, "period"),
        ({"period": -5}, "period"),
        ({"period": "5"}, "period"),
        ({"period": math.nan}, "period"),
        ({"period": True}, "period"),
        ({"max_children": 0}, "max_children"),
        ({"max_children": 2.5}, "max_children"),
        ({"max_children": True}, "max_children"),
    ],
)
def test_bad_flag_is_named(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(SpecError, match=named):
        SupervisorFlags(**fields)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"min": -1}, "min"),
        ({"min": math.inf}, "min"),
        ({"min": 2, "max": 1}, "max"),
        ({"max": math.inf}, "max"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"reset_after": 0}, "reset_after"),
    ],
)
def test_bad_backoff_is_named(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(SpecError, match=named):
        Backoff(**fields)


def test_backoff_delay_grows_and_is_capped() -> None:
    backoff = Backoff(min=1, max=10, factor=2, jitter=0.5)
    assert [backoff.delay(n, 0.5) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff.delay(2, 0.0) == 1.0  # 2 s scaled by 0.5
    assert backoff.delay(2, 0.999) == pytest.approx(2.998)


def test_backoff_jitter_stays_within_min_and_max() -> None:
    """Regression: the jitter used to push a delay below ``min`` and above ``max``."""
    backoff = Backoff(min=1, max=10, factor=2, jitter=0.5)
    assert backoff.delay(1, 0.0) == 1.0
    assert backoff.delay(1, 0.999) == pytest.approx(1.499)
    assert backoff.delay(5, 0.999) == 10.0
    assert backoff.delay(5, 0.0) == 5.0


def test_specs_are_frozen() -> None:
    spec = ChildSpec(id="w", start=Worker)
    with pytest.raises(AttributeError):
        spec.id = "other"  # type: ignore[misc]
