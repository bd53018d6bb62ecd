"""Outbox retention policy (pure): which oldest records to evict when the byte cap would be exceeded.

Eviction frees down to a low-water mark below the cap (hysteresis), so a full outbox evicts in chunks and
emits one gap record per chunk instead of one per incoming record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LOW_WATER = 0.95


@dataclass(frozen=True)
class EvictionPlan:
    """Seqs to evict (oldest first) and the bytes that frees."""

    seqs: tuple[int, ...]
    freed_bytes: int

    @property
    def first(self) -> int:
        return self.seqs[0]

    @property
    def last(self) -> int:
        return self.seqs[-1]


def bytes_to_free(stored_bytes: int, incoming_bytes: int, cap: int, low_water: float = LOW_WATER) -> int:
    """How many stored bytes must go so that ``incoming_bytes`` fit; 0 when they already fit under ``cap``."""
    if stored_bytes + incoming_bytes <= cap:
        return 0
    target = int(cap * low_water) - incoming_bytes
    return max(0, stored_bytes - max(target, 0))


def plan_eviction(oldest_first: Iterable[tuple[int, int]], need: int) -> EvictionPlan:
    """Take rows ``(seq, size)`` oldest first until at least ``need`` bytes are freed."""
    seqs: list[int] = []
    freed = 0
    if need <= 0:
        return EvictionPlan((), 0)
    for seq, size in oldest_first:
        seqs.append(seq)
        freed += size
        if freed >= need:
            break
    return EvictionPlan(tuple(seqs), freed)
