"""Device presence from the retained status topic: online after a birth record, offline after the will.

Presence follows the status topic, not the record store: a birth record the agent re-publishes after every
reconnect is a duplicate for the sequence rules (same seq, already stored) but still says the device is
back. So every verified status record and every will message is a presence event, whatever dedup decides,
and the latest by arrival time wins (a held record released later never overrides a newer event). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Presence", "PresenceEvent", "apply_presence"]


@dataclass(frozen=True)
class PresenceEvent:
    """One message on ``<prefix>/<device>/status``: a verified birth record (online) or the will (offline)."""

    device_id: str
    online: bool
    received_ms: int


@dataclass(frozen=True)
class Presence:
    """What the store keeps per device: ``online`` 1 / 0 / None (never seen), and when that was learned."""

    online: int | None = None
    status_ms: int | None = None


def apply_presence(current: Presence, events: Iterable[PresenceEvent]) -> Presence:
    """``current`` after ``events`` (one device's, in arrival order): an event at or after the current
    ``status_ms`` replaces it; equal times go to the later message (a will and a birth in the same ms)."""
    state = current
    for e in events:
        if state.status_ms is None or e.received_ms >= state.status_ms:
            state = Presence(1 if e.online else 0, e.received_ms)
    return state
