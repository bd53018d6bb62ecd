"""The schema migration rules (``aggregator.schema.migration_plan``), pure: every case of current vs target."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.schema import SCHEMA_VERSION, SchemaVersionError, migration_plan

STEPS = {2: ["ALTER 2"], 3: ["ALTER 3"], 4: ["ALTER 4"]}


@pytest.mark.parametrize(("current", "target", "steps", "plan"), [
    (None, 4, STEPS, []),          # fresh store: ddl() is already the latest layout
    (4, 4, STEPS, []),             # up to date
    (1, 4, STEPS, [2, 3, 4]),      # every step, in order
    (3, 4, STEPS, [4]),
    (1, 1, {}, []),
    (None, SCHEMA_VERSION, None, []),
    (SCHEMA_VERSION, SCHEMA_VERSION, None, []),
])
def test_plan(current: int | None, target: int, steps: dict[int, list[str]] | None, plan: list[int]) -> None:
    assert migration_plan(current, target, steps) == plan


@pytest.mark.parametrize(("current", "target", "steps", "message"), [
    (5, 4, STEPS, "newer than this aggregator's"),   # an old worker never writes a layout it does not know
    (0, 4, STEPS, "not a version this aggregator wrote"),
    (-3, 4, STEPS, "not a version this aggregator wrote"),
    (1, 4, {2: [], 4: []}, "missing [3]"),
])
def test_refused(current: int, target: int, steps: dict[int, list[str]], message: str) -> None:
    with pytest.raises(SchemaVersionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        migration_plan(current, target, steps)


@given(st.integers(1, 50), st.integers(1, 50))
def test_plan_is_the_versions_above_current(current: int, target: int) -> None:
    steps = {v: [f"ALTER {v}"] for v in range(2, 51)}
    if current > target:
        with pytest.raises(SchemaVersionError):
            migration_plan(current, target, steps)
    else:
        assert migration_plan(current, target, steps) == list(range(current + 1, target + 1))
