"""Reconnect backoff: capped, growing, jittered."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.backoff import backoff_delay


@given(st.integers(0, 100), st.floats(0.01, 5), st.floats(5, 120), st.integers(0, 2**32))
def test_delay_within_half_to_full_of_capped_exponential(attempt: int, base: float, cap: float, seed: int) -> None:
    d = backoff_delay(attempt, base, cap, random.Random(seed))
    full = min(cap, base * 2.0**attempt)
    assert full / 2 <= d <= full


def test_jitter_spreads_a_fleet() -> None:
    delays = {round(backoff_delay(5, 0.5, 30, random.Random(i)), 3) for i in range(50)}
    assert len(delays) > 40


def test_negative_attempt_rejected() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, 1, 2, random.Random(0))
