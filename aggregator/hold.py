"""Records whose key is not known yet wait here for the device's birth record (DESIGN §8).

With a shared subscription, a worker may get a device's result before it has seen that device's birth
record (which every worker receives on ``status``). Rejecting it would leave a hole until the device
re-sends; holding it and retrying once the birth record taught us the key stores it at once. The hold is
bounded in count, bytes and age (``[hold]`` in the config): whatever does not fit or waits too long is
dropped and counted (``hold_full``, ``hold_expired``), never settled, so the device sends it again. Pure:
the time is passed in; the service owns one ``Hold`` on its store thread.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class HoldLimits:
    """Bounds of the hold (config ``[hold]``)."""

    max_records: int = 10_000
    max_bytes: int = 16 * 2**20
    max_age_s: float = 60.0


@dataclass
class _Held(Generic[T]):
    device_id: str
    item: T
    size: int
    since: float


@dataclass
class Hold(Generic[T]):
    """Held items by device, oldest first; ``add`` and ``expire`` return what was dropped."""

    limits: HoldLimits = field(default_factory=HoldLimits)
    _items: OrderedDict[int, _Held[T]] = field(default_factory=OrderedDict)
    _next: int = 0
    bytes: int = 0

    def __len__(self) -> int:
        return len(self._items)

    def devices(self) -> set[str]:
        """Devices with something held (their receipts ask for the birth record)."""
        return {h.device_id for h in self._items.values()}

    def add(self, device_id: str, item: T, size: int, now: float) -> bool:
        """Hold ``item``; False (not held) when it alone exceeds the bounds or the hold is full."""
        lim = self.limits
        if size > lim.max_bytes or len(self._items) >= lim.max_records or self.bytes + size > lim.max_bytes:
            return False
        self._items[self._next] = _Held(device_id, item, size, now)
        self._next += 1
        self.bytes += size
        return True

    def release(self, device_id: str) -> list[T]:
        """Everything held for ``device_id``, oldest first (its key is now known: verify them again)."""
        keys = [k for k, h in self._items.items() if h.device_id == device_id]
        return [self._pop(k) for k in keys]

    def expire(self, now: float) -> list[tuple[str, T]]:
        """Drop and return what has waited longer than ``max_age_s``."""
        out = []
        while self._items:
            k, h = next(iter(self._items.items()))
            if now - h.since <= self.limits.max_age_s:
                break
            out.append((h.device_id, self._pop(k)))
        return out

    def next_expiry(self) -> float | None:
        """When the oldest held item expires, if anything is held."""
        if not self._items:
            return None
        return next(iter(self._items.values())).since + self.limits.max_age_s

    def _pop(self, key: int) -> T:
        h = self._items.pop(key)
        self.bytes -= h.size
        return h.item
