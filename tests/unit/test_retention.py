"""Outbox retention policy: oldest first, just enough, down to the low-water mark."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.retention import LOW_WATER, bytes_to_free, plan_eviction


def test_nothing_to_free_when_it_fits() -> None:
    assert bytes_to_free(900, 100, 1000) == 0


def test_frees_down_to_low_water() -> None:
    need = bytes_to_free(1000, 100, 1000)
    assert 1000 - need + 100 <= 1000 * LOW_WATER + 1


@given(st.lists(st.integers(1, 5000), min_size=1, max_size=200), st.integers(1, 5000), st.integers(10_000, 200_000))
def test_plan_is_oldest_first_and_sufficient(sizes: list[int], incoming: int, cap: int) -> None:
    rows = list(enumerate(sizes, start=1))
    stored = sum(sizes)
    need = bytes_to_free(stored, incoming, cap)
    plan = plan_eviction(iter(rows), need)
    if need == 0:
        assert plan.seqs == ()
        return
    # A contiguous prefix of the oldest rows.
    assert plan.seqs == tuple(range(1, len(plan.seqs) + 1))
    assert plan.freed_bytes == sum(sizes[: len(plan.seqs)])
    if plan.freed_bytes < need:
        assert len(plan.seqs) == len(rows)  # everything went and still not enough
    else:
        # Minimal: without the last evicted row it would not have been enough.
        assert plan.freed_bytes - sizes[len(plan.seqs) - 1] < need
        assert stored - plan.freed_bytes + incoming <= cap
