"""Durable acknowledgements (DESIGN §4): what to publish on ``<prefix>/<device>/ack``, and when.

Pure: the store thread notes each device's committed contiguous point, and every ``interval_ms`` (passed
the time) the batcher hands back the acks to publish, at most one per device, never lower than one this
worker already published. A duplicate forces a re-send (the agent may have missed the retained ack).
Payload: deterministic CBOR ``{"seq": <highest contiguous stored seq>, "epoch": <its epoch>}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cbor2

from envelope import encode_payload


def encode_ack(seq: int, epoch: int) -> bytes:
    """The ack payload: a two-entry CBOR map, about 20 bytes."""
    return encode_payload({"seq": seq, "epoch": epoch})


def decode_ack(data: bytes) -> tuple[int, int]:
    """(seq, epoch) from an ack payload; raises ``ValueError`` on anything else."""
    try:
        doc = cbor2.loads(data)
    except Exception as e:
        raise ValueError(f"ack is not CBOR: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("seq"), int) or not isinstance(doc.get("epoch"), int):
        raise ValueError(f"ack must be a map with integer seq and epoch, got {doc!r:.80}")
    return doc["seq"], doc["epoch"]


@dataclass
class AckBatcher:
    """Collects committed contiguous points; releases them at most every ``interval_ms``."""

    interval_ms: int = 100
    published: dict[str, tuple[int, int]] = field(default_factory=dict)
    _pending: dict[str, tuple[int, int]] = field(default_factory=dict)
    _last_flush_ms: int = -(2**62)

    def note(self, device_id: str, seq: int, epoch: int, *, force: bool = False) -> None:
        """Record that ``seq`` is committed for ``device_id`` (``force``: publish even if not higher)."""
        last = self.published.get(device_id, (0, 0))[0]
        current = self._pending.get(device_id, (0, 0))[0]
        if seq > max(last, current) or (force and seq >= max(last, current) and seq > 0):
            self._pending[device_id] = (seq, epoch)

    def due(self, now_ms: int) -> list[tuple[str, int, int]]:
        """Acks to publish now (empty until the interval has passed since the last release)."""
        if not self._pending or now_ms - self._last_flush_ms < self.interval_ms:
            return []
        return self.flush(now_ms)

    def flush(self, now_ms: int) -> list[tuple[str, int, int]]:
        """Release every pending ack regardless of the interval (shutdown)."""
        out = [(d, s, e) for d, (s, e) in sorted(self._pending.items())]
        for d, s, e in out:
            self.published[d] = (s, e)
        self._pending.clear()
        self._last_flush_ms = now_ms
        return out

    def next_due_ms(self) -> int | None:
        """When the next release may happen, if anything is pending."""
        return self._last_flush_ms + self.interval_ms if self._pending else None
