"""Reconnect backoff (pure): capped exponential with jitter, so a fleet does not reconnect in lockstep."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before reconnect ``attempt`` (0-based): uniform in [d/2, d] with d = min(cap, base * 2**attempt)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    d = min(cap_s, base_s * (2.0 ** min(attempt, 32)))
    return d * (0.5 + 0.5 * rng.random())
