"""The delivery core: which outbox rows to publish, when to re-send, and what may be deleted (sans-I/O).

In the style of h11: the shell (``agent.publisher``) feeds events in (``Connected``, ``Disconnected``,
``Inbound``, ``Sent``, ``PubAck``, ``ReceiptVerified``, ``ReceiptInvalid``, ``NewRows``, ``BirthCommitted``,
``Scanned``, ``Tick``) and carries out the actions that come back (``PublishNext``, ``DeleteThrough``,
``DeleteSeqs``, ``Reconnect``, ``RepublishBirth``, ``KeepReceipt``). The core owns the cursor, the in-flight
window, the resend timer, the dead-link clock, the birth re-publish and receipt handling; it never touches a
socket, a file or the clock (time comes in with the events), so property tests drive it through every
interleaving (tests/unit/test_delivery_props.py).

It holds seqs, not rows: the outbox is the only store of record bytes. ``PublishNext(after, upto, limit)``
asks the shell for the committed rows with ``after < seq <= upto``, in order; the shell reports each row it
hands to MQTT with ``Sent``, then ``Scanned(upto, exhausted)``; ``exhausted`` says no further row exists up to
``upto`` (rows deleted or evicted in between are simply not there). One request is outstanding at a time.

Delivery modes (DESIGN §4, §8):

* ``aggregator``: a row is deleted only when a *verified* receipt settles it (``settled`` covers it). The
  shell verifies the receipt's signature, chain, role and device id before it reaches the core as
  ``ReceiptVerified``; the core adds the ordering rules: a receipt for a future epoch is invalid, one that
  goes backwards (``(epoch, settled, time_ms)`` lower than the best so far) is stale, ignored and counted, an
  equal one (the retained receipt re-delivered at every subscribe) is a duplicate. After a reconnect, or when
  ``settled`` has not moved for ``resend_after_s`` while rows are out, publishing restarts after ``settled``.
* ``broker``: a row is deleted when its PUBACK arrives (unchanged round-1 behaviour, for third-party
  aggregators); after a reconnect publishing restarts at the oldest row the outbox still holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BIRTH_REPUBLISH_MIN_S", "DEAD_LINK_KEEPALIVES", "MODES", "Action", "BirthCommitted", "Connected",
    "DeleteSeqs", "DeleteThrough", "DeliveryCore", "DeliveryCounters", "Disconnected", "Event", "Inbound",
    "KeepReceipt", "NewRows", "PubAck", "PublishNext", "ReceiptInvalid", "ReceiptVerified",
    "Reconnect", "RepublishBirth", "Scanned", "Sent", "Tick",
]

MODES = ("aggregator", "broker")
DEAD_LINK_KEEPALIVES = 1.5  # silence from the broker longer than this many keepalives means a dead link
BIRTH_REPUBLISH_MIN_S = 2.0  # receipts asking for the birth record come every ack interval: answer at this pace


# ----- events (shell -> core) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connected:
    """CONNACK success. ``first_seq``: oldest row in the outbox (broker mode resumes there), None if empty."""

    now: float
    first_seq: int | None = None


@dataclass(frozen=True)
class Disconnected:
    """The session ended (any cause); in-flight publishes of it are void."""

    now: float


@dataclass(frozen=True)
class Inbound:
    """Bytes arrived from the broker (feeds the dead-link clock)."""

    now: float


@dataclass(frozen=True)
class Sent:
    """The shell handed row ``seq`` to MQTT as message id ``mid``."""

    seq: int
    mid: int


@dataclass(frozen=True)
class Scanned:
    """The shell has carried out a ``PublishNext``; ``exhausted``: no committed row is left up to ``upto``."""

    upto: int
    exhausted: bool


@dataclass(frozen=True)
class PubAck:
    """The broker acknowledged ``mid``; ``ok`` False with ``reason`` when it refused it (MQTT 5 reason code)."""

    mid: int
    ok: bool = True
    reason: str = ""


@dataclass(frozen=True)
class ReceiptVerified:
    """A receipt whose signature, chain, role and device id the shell has verified (at ``now``)."""

    now: float
    epoch: int
    settled: int
    time_ms: int
    rejected: tuple[tuple[int, str], ...] = ()
    birth: bool = False
    signer: str = ""
    data: bytes = b""  # the exact receipt bytes, kept on disk as proof


@dataclass(frozen=True)
class ReceiptInvalid:
    """Something on the ack topic that is not a valid receipt (``reason`` from the verifier)."""

    reason: str
    now: float = 0.0


@dataclass(frozen=True)
class NewRows:
    """Rows up to ``last_seq`` are committed."""

    last_seq: int


@dataclass(frozen=True)
class BirthCommitted:
    """The birth record of this boot is committed (re-published, retained, after every connect)."""

    seq: int


@dataclass(frozen=True)
class Tick:
    """Time passes (the shell sends one per loop turn)."""

    now: float


Event = (Connected | Disconnected | Inbound | Sent | Scanned | PubAck | ReceiptVerified | ReceiptInvalid
         | NewRows | BirthCommitted | Tick)


# ----- actions (core -> shell) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishNext:
    """Publish the committed rows with ``after < seq <= upto``, in seq order, at most ``limit`` of them."""

    after: int
    upto: int
    limit: int


@dataclass(frozen=True)
class DeleteThrough:
    """Delete every row with seq <= ``seq`` (settled by a verified receipt)."""

    seq: int


@dataclass(frozen=True)
class DeleteSeqs:
    """Delete these rows (broker mode: PUBACKed)."""

    seqs: tuple[int, ...]


@dataclass(frozen=True)
class Reconnect:
    """Drop the connection and connect again (dead link)."""

    reason: str


@dataclass(frozen=True)
class RepublishBirth:
    """Publish the birth record (seq ``seq``) again, retained."""

    seq: int


@dataclass(frozen=True)
class KeepReceipt:
    """Persist this receipt as the latest valid one (before the delete it allows)."""

    receipt: ReceiptVerified


Action = PublishNext | DeleteThrough | DeleteSeqs | Reconnect | RepublishBirth | KeepReceipt


@dataclass
class DeliveryCounters:
    """Monotonic counters of delivery, for telemetry and `edge-agent status`."""

    published: int = 0
    pubacks: int = 0
    publish_rejected: int = 0
    resends: int = 0
    dead_link_detected: int = 0
    receipts: int = 0
    receipts_stale: int = 0
    receipts_duplicate: int = 0
    births_republished: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)  # PUBACK refusals by MQTT reason
    receipts_invalid: dict[str, int] = field(default_factory=dict)  # by verifier reason
    records_rejected: dict[str, int] = field(default_factory=dict)  # rejects reported by receipts, by reason


def _bump(d: dict[str, int], key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


class DeliveryCore:
    """The delivery state machine; see the module docstring."""

    def __init__(self, mode: str, *, epoch: int, settled: int, last_seq: int, inflight_max: int,
                 resend_after_s: float, keepalive_s: float, now: float,
                 best_receipt: tuple[int, int, int] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"delivery mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.epoch = epoch  # this boot's epoch: a receipt for a later one is not ours
        self.settled = settled  # highest seq a verified receipt settled (aggregator mode)
        self.last_seq = last_seq  # highest committed seq known
        self.inflight_max = inflight_max
        self.resend_after_s = resend_after_s
        self.keepalive_s = keepalive_s
        self.counters = DeliveryCounters()
        self.connected = False
        self.cursor = settled if mode == "aggregator" else 0  # highest seq handed to MQTT in this connection
        self.inflight: dict[int, int] = {}  # mid -> seq
        self.birth_seq: int | None = None
        self.best_receipt = best_receipt  # (epoch, settled, time_ms) of the latest accepted receipt
        self.last_receipt: ReceiptVerified | None = None
        self._last_progress = now
        self._last_in = now
        self._last_birth = -1e18
        self._asked: PublishNext | None = None  # the outstanding request (one at a time)

    # ----- queries -----------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing committed left to publish in this connection."""
        return not self.inflight and self.cursor >= self.last_seq

    @property
    def outstanding(self) -> int:
        """Rows published in this connection and not yet settled (aggregator) / PUBACKed (broker)."""
        return max(0, self.cursor - self.settled) if self.mode == "aggregator" else len(self.inflight)

    # ----- the one entry point -----------------------------------------------------------------------
    def handle(self, ev: Event) -> list[Action]:
        """Apply one event; return what the shell must do, in order."""
        out: list[Action] = []
        if isinstance(ev, Connected):
            self._on_connected(ev, out)
        elif isinstance(ev, Disconnected):
            self.connected = False
            self.inflight.clear()
            self._asked = None
        elif isinstance(ev, Inbound):
            self._last_in = max(self._last_in, ev.now)
        elif isinstance(ev, Sent):
            self._on_sent(ev)
        elif isinstance(ev, Scanned):
            if ev.exhausted and self._asked is not None and ev.upto == self._asked.upto:
                self.cursor = max(self.cursor, ev.upto)
            self._asked = None
        elif isinstance(ev, PubAck):
            self._on_puback(ev, out)
        elif isinstance(ev, ReceiptVerified):
            self._on_receipt(ev, out)
        elif isinstance(ev, ReceiptInvalid):
            _bump(self.counters.receipts_invalid, ev.reason)
        elif isinstance(ev, NewRows):
            self.last_seq = max(self.last_seq, ev.last_seq)
        elif isinstance(ev, BirthCommitted):
            self.birth_seq = ev.seq
            if self.connected:
                self._birth(out, None)
        elif isinstance(ev, Tick):
            self._on_tick(ev.now, out)
        self._pump(out)
        return out

    # ----- event handlers ----------------------------------------------------------------------------
    def _on_connected(self, ev: Connected, out: list[Action]) -> None:
        self.connected = True
        self.inflight.clear()
        self._asked = None
        self._last_in = max(self._last_in, ev.now)
        self._last_progress = ev.now
        if self.mode == "aggregator":
            self.cursor = self.settled
        else:
            self.cursor = (ev.first_seq - 1) if ev.first_seq is not None else self.last_seq
        if self.birth_seq is not None:
            self._birth(out, None)

    def _on_sent(self, ev: Sent) -> None:
        self.inflight[ev.mid] = ev.seq
        self.cursor = max(self.cursor, ev.seq)
        self.counters.published += 1

    def _on_puback(self, ev: PubAck, out: list[Action]) -> None:
        seq = self.inflight.pop(ev.mid, None)
        if seq is None:
            return  # a duplicate PUBACK, or one from before a reconnect: nothing to do
        if not ev.ok:
            self.counters.publish_rejected += 1
            _bump(self.counters.rejected_reasons, ev.reason or "unknown")
            return
        self.counters.pubacks += 1
        if self.mode == "broker":
            out.append(DeleteSeqs((seq,)))

    def _on_receipt(self, r: ReceiptVerified, out: list[Action]) -> None:
        if self.mode != "aggregator":
            return
        if r.epoch > self.epoch or r.epoch < 0 or r.settled < 0:
            _bump(self.counters.receipts_invalid, "future_epoch" if r.epoch > self.epoch else "bad_range")
            return
        key = (r.epoch, r.settled, r.time_ms)
        if self.best_receipt is not None:
            if key == self.best_receipt:
                self.counters.receipts_duplicate += 1
                return
            if key < self.best_receipt:
                self.counters.receipts_stale += 1
                return
        self.best_receipt = key
        self.last_receipt = r
        self.counters.receipts += 1
        for _seq, reason in r.rejected:
            _bump(self.counters.records_rejected, reason)
        out.append(KeepReceipt(r))
        if r.settled > self.settled:
            self.settled = r.settled
            self.last_seq = max(self.last_seq, r.settled)  # an outbox replaced under a running fleet
            self.cursor = max(self.cursor, r.settled)
            self._last_progress = max(self._last_progress, r.now)
            out.append(DeleteThrough(r.settled))
        if r.birth and self.connected:
            self._birth(out, r.now)

    def _on_tick(self, now: float, out: list[Action]) -> None:
        if not self.connected:
            return
        silent = now - self._last_in
        if silent > DEAD_LINK_KEEPALIVES * self.keepalive_s:
            self.counters.dead_link_detected += 1
            self.connected = False
            self.inflight.clear()
            self._asked = None
            out.append(Reconnect(f"no traffic from the broker for {silent:.0f}s (keepalive {self.keepalive_s:g}s)"))
            return
        if self.mode != "aggregator" or self.cursor <= self.settled:
            self._last_progress = now
            return
        if now - self._last_progress > self.resend_after_s:
            self.counters.resends += self.cursor - self.settled
            self.cursor = self.settled
            self._asked = None
            self._last_progress = now

    # ----- helpers -----------------------------------------------------------------------------------
    def _birth(self, out: list[Action], now: float | None) -> None:
        if self.birth_seq is None:
            return
        if now is not None:
            if now - self._last_birth < BIRTH_REPUBLISH_MIN_S:
                return
            self._last_birth = now
        self.counters.births_republished += 1
        out.append(RepublishBirth(self.birth_seq))

    def _pump(self, out: list[Action]) -> None:
        if not self.connected or self._asked is not None or self.cursor >= self.last_seq:
            return
        room = self.inflight_max - len(self.inflight)
        if room <= 0:
            return
        self._asked = PublishNext(self.cursor, self.last_seq, room)
        out.append(self._asked)
