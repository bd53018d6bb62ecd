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


# Exact values at the boundaries (the property above allows some slack; a mutation run showed which).
def test_bytes_to_free_exact_amount() -> None:
    assert bytes_to_free(1000, 100, 1000) == 1000 - (int(1000 * LOW_WATER) - 100)  # 150: down to 950 with it
    assert bytes_to_free(900, 101, 1000) == 900 - (950 - 101)  # one byte over the cap
    assert bytes_to_free(900, 100, 1000) == 0  # exactly at the cap fits
    assert bytes_to_free(1000, 100, 1000, low_water=1.0) == 100  # no hysteresis: just enough


def test_bytes_to_free_when_the_incoming_record_alone_fills_the_low_water_mark() -> None:
    assert bytes_to_free(500, 960, 1000) == 500  # target below zero: everything stored goes, not one byte less
    assert bytes_to_free(500, 950, 1000) == 500  # target exactly zero
    assert bytes_to_free(0, 2000, 1000) == 0  # nothing stored: nothing to free (the caller refuses the record)


def test_plan_eviction_boundaries() -> None:
    rows = [(1, 100), (2, 100), (3, 100)]
    assert plan_eviction(iter(rows), 0) == plan_eviction(iter(rows), -5)
    empty = plan_eviction(iter(rows), 0)
    assert empty.seqs == () and empty.freed_bytes == 0
    one = plan_eviction(iter(rows), 1)
    assert one.seqs == (1,) and one.freed_bytes == 100 and (one.first, one.last) == (1, 1)
    exact = plan_eviction(iter(rows), 100)
    assert exact.seqs == (1,)  # freeing exactly the need is enough: no second row
    two = plan_eviction(iter(rows), 101)
    assert two.seqs == (1, 2) and (two.first, two.last) == (1, 2) and two.freed_bytes == 200
    all_rows = plan_eviction(iter(rows), 10_000)
    assert all_rows.seqs == (1, 2, 3) and all_rows.freed_bytes == 300
