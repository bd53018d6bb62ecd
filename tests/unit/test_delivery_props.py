"""The delivery core under random interleavings: disconnects, duplicate and reordered PUBACKs, stale, forged,
replayed and future receipts, evictions, restarts.

A small simulated world plays the shell: an outbox (a set of seqs), MQTT (message ids), an aggregator that
issues genuine receipts, and an attacker. Properties checked after every step:

* aggregator mode: no row is deleted unless a genuine receipt for this device's epochs settled it, and never
  by a PUBACK; broker mode: only PUBACKed rows are deleted;
* ``settled`` never goes backwards, across restarts too;
* within one connection no seq is published twice except after a resend timeout;
* after any (re)connect, every committed row still in the outbox is published again.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agent.delivery import (
    BirthCommitted,
    Connected,
    DeleteSeqs,
    DeleteThrough,
    DeliveryCore,
    Disconnected,
    Event,
    Inbound,
    KeepReceipt,
    NewRows,
    PubAck,
    PublishNext,
    ReceiptInvalid,
    ReceiptVerified,
    Reconnect,
    RepublishBirth,
    Scanned,
    Sent,
    Tick,
)

KEEPALIVE = 10.0
RESEND = 30.0


class DeliveryWorld(RuleBasedStateMachine):
    mode = "aggregator"

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.epoch = 1
        self.outbox: set[int] = set()
        self.last_seq = 0
        self.persisted_settled = 0  # outbox meta acked_seq: what DeleteThrough applied
        self.kept: ReceiptVerified | None = None  # receipt on disk
        self.mid = 0
        self.connected = False
        self.sent_this_conn: set[int] = set()
        self.resends_seen = 0
        self.max_sent = 0
        self.genuine_max = 0  # highest settled of any genuine receipt for an epoch <= the device's
        self.issued: list[ReceiptVerified] = []
        self.agg_time = 0
        self.pubacked_ok: set[int] = set()
        self.settled_seen = 0
        self.core = self._new_core()

    def _new_core(self) -> DeliveryCore:
        best = (self.kept.epoch, self.kept.settled, self.kept.time_ms) if self.kept else None
        return DeliveryCore(self.mode, epoch=self.epoch, settled=self.persisted_settled, last_seq=self.last_seq,
                            inflight_max=3, resend_after_s=RESEND, keepalive_s=KEEPALIVE, now=self.now,
                            best_receipt=best)

    # ----- the shell ---------------------------------------------------------------------------------
    def feed(self, ev: Event) -> None:
        pending = list(self.core.handle(ev))
        while pending:
            act = pending.pop(0)
            pending.extend(self.execute(act))

    def execute(self, act: Any) -> list[Any]:
        out: list[Any] = []
        if isinstance(act, PublishNext):
            assert self.connected, "published while disconnected"
            rows = sorted(s for s in self.outbox if act.after < s <= act.upto)[: act.limit]
            for seq in rows:
                if self.core.counters.resends != self.resends_seen:
                    self.resends_seen = self.core.counters.resends
                    self.sent_this_conn.clear()
                assert seq not in self.sent_this_conn, f"seq {seq} published twice in one connection"
                self.sent_this_conn.add(seq)
                self.max_sent = max(self.max_sent, seq)
                self.mid = self.mid % 65535 + 1
                out += self.core.handle(Sent(seq, self.mid))
            out += self.core.handle(Scanned(act.upto, len(rows) < act.limit))
        elif isinstance(act, DeleteThrough):
            assert self.mode == "aggregator"
            assert act.seq <= self.genuine_max, f"deleted through {act.seq}, genuine max {self.genuine_max}"
            self.outbox = {s for s in self.outbox if s > act.seq}
            self.persisted_settled = max(self.persisted_settled, act.seq)
            self.last_seq = max(self.last_seq, act.seq)
        elif isinstance(act, DeleteSeqs):
            assert self.mode == "broker", "a PUBACK deleted a row in aggregator mode"
            for s in act.seqs:
                assert s in self.pubacked_ok, f"seq {s} deleted without a PUBACK"
            self.outbox -= set(act.seqs)
        elif isinstance(act, KeepReceipt):
            self.kept = act.receipt
        elif isinstance(act, Reconnect):
            self.connected = False
            out += self.core.handle(Disconnected(self.now))
        elif isinstance(act, RepublishBirth):
            assert self.connected
        return out

    def connect(self) -> None:
        self.connected = True
        self.sent_this_conn = set()
        self.resends_seen = self.core.counters.resends
        self.feed(Connected(self.now, min(self.outbox) if self.outbox else None))

    # ----- rules -------------------------------------------------------------------------------------
    @rule(n=st.integers(1, 6))
    def commit(self, n: int) -> None:
        for _ in range(n):
            self.last_seq += 1
            self.outbox.add(self.last_seq)
        self.feed(NewRows(self.last_seq))

    @rule()
    def commit_birth(self) -> None:
        self.last_seq += 1
        self.outbox.add(self.last_seq)
        self.feed(NewRows(self.last_seq))
        self.feed(BirthCommitted(self.last_seq))

    @rule(k=st.integers(1, 3))
    def evict_oldest(self, k: int) -> None:
        for s in sorted(self.outbox)[:k]:
            self.outbox.discard(s)

    @precondition(lambda self: not self.connected)
    @rule()
    def reconnect_and_drain(self) -> None:
        """Connect, then answer every PUBACK until nothing is left to publish: every row went out again."""
        present = set(self.outbox)
        self.connect()
        sent: set[int] = set(self.sent_this_conn)
        for _ in range(10_000):
            if not self.core.inflight:
                break
            mid = next(iter(self.core.inflight))
            seq = self.core.inflight[mid]
            self.pubacked_ok.add(seq)
            self.feed(PubAck(mid))
            sent |= self.sent_this_conn
        floor = self.core.settled if self.mode == "aggregator" else 0
        missing = {s for s in present if s > floor} - sent
        assert not missing, f"rows {sorted(missing)[:5]} not published again after reconnect"

    @precondition(lambda self: not self.connected)
    @rule()
    def connect_only(self) -> None:
        self.connect()

    @precondition(lambda self: self.connected)
    @rule()
    def disconnect(self) -> None:
        self.connected = False
        self.feed(Disconnected(self.now))

    @precondition(lambda self: self.connected and bool(self.core.inflight))
    @rule(i=st.integers(0, 10), dup=st.booleans(), ok=st.booleans())
    def puback(self, i: int, dup: bool, ok: bool) -> None:
        mids = list(self.core.inflight)
        mid = mids[i % len(mids)]  # any order: reordered PUBACKs
        if ok:
            self.pubacked_ok.add(self.core.inflight[mid])
        ev = PubAck(mid, ok, "" if ok else "Not authorized")
        self.feed(ev)
        if dup:
            self.feed(ev)

    @rule(dt=st.sampled_from([0.5, 1.0, 5.0, 14.0, 31.0]), inbound=st.booleans())
    def tick(self, dt: float, inbound: bool) -> None:
        self.now += dt
        if inbound and self.connected:
            self.feed(Inbound(self.now))
        self.feed(Tick(self.now))

    @rule(frac=st.floats(0, 1), birth=st.booleans(), rejects=st.integers(0, 2))
    def genuine_receipt(self, frac: float, birth: bool, rejects: int) -> None:
        settled = int(frac * self.max_sent)
        self.agg_time += 1
        r = ReceiptVerified(self.now, self.epoch, settled, self.agg_time,
                            tuple((settled - i, "bad_signature") for i in range(min(rejects, settled))), birth,
                            "agg-1", b"r%d" % self.agg_time)
        self.issued.append(r)
        self.genuine_max = max(self.genuine_max, settled)
        self.feed(r)

    @precondition(lambda self: bool(self.issued))
    @rule(i=st.integers(0, 1000))
    def replayed_receipt(self, i: int) -> None:
        old = self.issued[i % len(self.issued)]
        self.feed(ReceiptVerified(self.now, old.epoch, old.settled, old.time_ms, old.rejected, old.birth, old.signer,
                                  old.data))

    @rule(extra=st.integers(1, 1000))
    def future_epoch_receipt(self, extra: int) -> None:
        """Signed, but for an epoch this device has not reached: not evidence of anything it sent."""
        self.agg_time += 1
        self.feed(ReceiptVerified(self.now, self.epoch + 1, self.max_sent + extra, self.agg_time))

    @rule(reason=st.sampled_from(["bad_signature", "untrusted_chain", "wrong_role", "wrong_device", "malformed"]))
    def forged_receipt(self, reason: str) -> None:
        """What the shell's verifier makes of a receipt without a valid aggregator signature."""
        before = self.core.counters.receipts_invalid.get(reason, 0)
        self.feed(ReceiptInvalid(reason, self.now))
        assert self.core.counters.receipts_invalid[reason] == before + 1

    @rule()
    def restart(self) -> None:
        """kill -9 and start again: only the outbox, its acked_seq and the kept receipt survive."""
        self.epoch += 1
        self.connected = False
        self.now += 1.0
        self.core = self._new_core()

    # ----- invariants --------------------------------------------------------------------------------
    @invariant()
    def settled_monotonic(self) -> None:
        assert self.core.settled >= self.settled_seen
        self.settled_seen = self.core.settled
        if self.mode == "broker":
            assert self.core.settled == 0

    @invariant()
    def window_bounded(self) -> None:
        assert len(self.core.inflight) <= self.core.inflight_max


class BrokerWorld(DeliveryWorld):
    mode = "broker"

    @initialize()
    def nothing(self) -> None:
        pass


SETTINGS = settings(max_examples=300, stateful_step_count=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
TestAggregatorDelivery = DeliveryWorld.TestCase
TestAggregatorDelivery.settings = SETTINGS
TestBrokerDelivery = BrokerWorld.TestCase
TestBrokerDelivery.settings = SETTINGS


# ----- examples --------------------------------------------------------------------------------------------
def _core(mode: str = "aggregator", **kw: Any) -> DeliveryCore:
    args: dict[str, Any] = {"epoch": 1, "settled": 0, "last_seq": 0, "inflight_max": 10, "resend_after_s": RESEND,
                            "keepalive_s": KEEPALIVE, "now": 0.0}
    args.update(kw)
    return DeliveryCore(mode, **args)


def test_stale_receipt_is_ignored_and_counted() -> None:
    core = _core(last_seq=10)
    assert DeleteThrough(7) in core.handle(ReceiptVerified(1.0, 1, 7, 100))
    assert core.handle(ReceiptVerified(2.0, 1, 5, 101)) == []
    assert core.counters.receipts_stale == 1
    assert core.handle(ReceiptVerified(3.0, 1, 7, 100)) == []  # the retained one again
    assert core.counters.receipts_duplicate == 1
    assert core.settled == 7


def test_rejects_reported_by_receipts_are_counted_once() -> None:
    core = _core(last_seq=10)
    r = ReceiptVerified(1.0, 1, 4, 1, ((3, "bad_signature"), (4, "oversize")))
    core.handle(r)
    core.handle(r)
    assert core.counters.records_rejected == {"bad_signature": 1, "oversize": 1}


def test_future_epoch_receipt_deletes_nothing() -> None:
    core = _core(last_seq=10)
    assert core.handle(ReceiptVerified(1.0, 2, 10, 1)) == []
    assert core.counters.receipts_invalid == {"future_epoch": 1}


def test_broker_mode_ignores_receipts_and_deletes_on_puback() -> None:
    core = _core("broker", last_seq=2)
    acts = core.handle(Connected(0.0, 1))
    assert acts == [PublishNext(0, 2, 10)]
    core.handle(Sent(1, 11))
    core.handle(Sent(2, 12))
    core.handle(Scanned(2, True))
    assert core.handle(ReceiptVerified(1.0, 1, 2, 1)) == []
    assert core.handle(PubAck(12)) == [DeleteSeqs((2,))]
    assert core.handle(PubAck(12)) == []  # duplicate


def test_receipt_asking_for_birth_republishes_it_at_a_bounded_pace() -> None:
    core = _core(last_seq=1)
    core.handle(BirthCommitted(1))
    assert RepublishBirth(1) in core.handle(Connected(0.0))
    assert RepublishBirth(1) in core.handle(ReceiptVerified(10.0, 1, 0, 1, birth=True))
    assert RepublishBirth(1) not in core.handle(ReceiptVerified(10.5, 1, 0, 2, birth=True))
    assert RepublishBirth(1) in core.handle(ReceiptVerified(13.0, 1, 0, 3, birth=True))


def test_resend_after_timeout_and_dead_link() -> None:
    core = _core(last_seq=3, inflight_max=10)
    core.handle(Connected(0.0))
    for s in (1, 2, 3):
        core.handle(Sent(s, s))
    core.handle(Scanned(3, True))
    core.handle(ReceiptVerified(1.0, 1, 1, 1))
    for mid in (1, 2, 3):
        core.handle(PubAck(mid))
    core.handle(Inbound(RESEND + 1.0))
    assert core.handle(Tick(RESEND + 0.5)) == []
    acts = core.handle(Tick(RESEND + 1.5))
    assert acts == [PublishNext(1, 3, 10)] and core.counters.resends == 2
    assert core.handle(Tick(RESEND + 1.0 + DEAD_LINK))[0] == Reconnect(
        f"no traffic from the broker for {DEAD_LINK:.0f}s (keepalive {KEEPALIVE:g}s)")
    assert core.counters.dead_link_detected == 1


DEAD_LINK = 1.5 * KEEPALIVE + 1


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="delivery mode"):
        _core("sometimes")
