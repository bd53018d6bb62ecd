"""When to publish which receipt (DESIGN §8): batching of settled points, pure like ``aggregator.acks``.

The store thread notes each device's settled point after every commit, the seqs it rejected for good and
whether the device should re-publish its birth record. Every ``interval_ms`` (the time is passed in) the
batcher hands back at most one ``Receipt`` per device, never with a settled point lower than one this
worker already published (seqs are one counter across epochs). A duplicate forces a re-send (the device
may have missed the retained receipt). Permanent rejects are reported once, in the next receipt after
they happened, sorted, at most ``MAX_REJECTED`` per receipt (the rest go in the next one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envelope import Receipt
from envelope.receipt import MAX_REJECTED


@dataclass
class _Pending:
    settled: int
    epoch: int
    rejected: dict[int, str] = field(default_factory=dict)
    birth: bool = False


@dataclass
class ReceiptBatcher:
    """Collects settled points per device and releases receipts at most every ``interval_ms``."""

    aggregator_id: str
    interval_ms: int = 100
    published: dict[str, tuple[int, int]] = field(default_factory=dict)  # device -> (settled, epoch)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _last_flush_ms: int = -(2**62)

    def note(self, device_id: str, settled: int, epoch: int, *, rejected: dict[int, str] | None = None,
             birth: bool = False, force: bool = False) -> None:
        """Record the committed settled point of ``device_id`` (``force``: publish even if unchanged)."""
        last = self.published.get(device_id)
        pending = self._pending.get(device_id)
        base = (pending.settled, pending.epoch) if pending else last
        higher = base is None or (settled, epoch) > base  # seqs are one counter across epochs
        if not (higher or force or rejected or birth):
            return
        if pending is None:
            s, e = (settled, epoch) if base is None or higher else base
            pending = self._pending[device_id] = _Pending(s, e)
        elif higher:
            pending.settled, pending.epoch = settled, epoch
        if rejected:
            pending.rejected.update(rejected)
        pending.birth = pending.birth or birth

    def due(self, now_ms: int) -> list[Receipt]:
        """Receipts to publish now (empty until the interval has passed since the last release)."""
        if not self._pending or now_ms - self._last_flush_ms < self.interval_ms:
            return []
        return self.flush(now_ms)

    def flush(self, now_ms: int) -> list[Receipt]:
        """Release every pending receipt regardless of the interval (shutdown)."""
        out = []
        for device_id in sorted(self._pending):
            p = self._pending.pop(device_id)
            rejected = sorted(p.rejected.items())
            now, later = rejected[:MAX_REJECTED], rejected[MAX_REJECTED:]
            out.append(Receipt(self.aggregator_id, device_id, p.epoch, p.settled, now_ms, tuple(now), p.birth))
            self.published[device_id] = (p.settled, p.epoch)
            if later:
                self._pending[device_id] = _Pending(p.settled, p.epoch, dict(later))
        self._last_flush_ms = now_ms
        return out

    def next_due_ms(self) -> int | None:
        """When the next release may happen, if anything is pending."""
        return self._last_flush_ms + self.interval_ms if self._pending else None
