"""Settling (aggregator.settle, DeviceBook.cover), the hold and the receipt batcher: pure, property-tested."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.hold import Hold, HoldLimits
from aggregator.receipts import ReceiptBatcher
from aggregator.sequence import DeviceBook
from aggregator.settle import PERMANENT, REJECT_REASONS, TRANSIENT, is_permanent, low_water_of, settled_point
from envelope.receipt import MAX_REJECTED

REPO = Path(__file__).resolve().parents[2]


def _emitted_reasons() -> set[str]:
    found: set[str] = set()
    for path in [*(REPO / "aggregator").glob("*.py"), REPO / "envelope" / "errors.py", REPO / "envelope" / "record.py"]:
        src = path.read_text()
        found |= set(re.findall(r'Rejected\(\s*"([a-z0-9_]+)"', src))
        found |= set(re.findall(r'RejectEvent\([^()]*?,\s*"([a-z0-9_]+)"', src))
        found |= set(re.findall(r'reason\s*=\s*"([a-z0-9_]+)"', src))
        found |= set(re.findall(r'_reject\([^()]*?"([a-z0-9_]+)"', src))
    trust = (REPO / "aggregator" / "trust.py").read_text()
    mapping = re.search(r"_CHAIN_REASONS = \{(.*?)\}", trust, re.S)
    assert mapping is not None
    found |= set(re.findall(r':\s*"([a-z0-9_]+)"', mapping.group(1)))
    # envelope errors about receipts, proofs and notes are the agent's and the auditor's, never a record's reject
    from envelope.errors import InvalidNote, InvalidProof, MalformedNote

    return found - {InvalidProof.reason, MalformedNote.reason, InvalidNote.reason}


def test_every_reason_the_code_emits_is_classified() -> None:
    emitted = _emitted_reasons()
    assert {"unknown_kid", "bad_signature", "epoch_regression", "internal_error", "stale_crl"} <= emitted
    assert emitted <= set(REJECT_REASONS), sorted(emitted - set(REJECT_REASONS))
    assert all(d in (PERMANENT, TRANSIENT) for d, _ in REJECT_REASONS.values())
    assert not is_permanent("unknown_kid") and is_permanent("bad_signature") and not is_permanent("no-such")


def test_docs_table_matches_the_code() -> None:
    text = (REPO / "docs" / "aggregator.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (permanent|transient) \|", text, re.M))
    assert rows == {r: d for r, (d, _) in REJECT_REASONS.items()}


def test_low_water_of() -> None:
    assert low_water_of({"low_water": 7}) == 7
    for bad in ({}, {"low_water": True}, {"low_water": 0}, {"low_water": -1}, {"low_water": 1.0}, [], None):
        assert low_water_of(bad) is None


seqs = st.integers(1, 60)


@settings(max_examples=400, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["store", "reject", "low", "gap"]), seqs, seqs), max_size=40))
def test_device_book_settles_as_the_definition_says(events: list[tuple[str, int, int]]) -> None:
    """DeviceBook with cover() for rejects and the low-water mark reaches exactly ``settled_point``."""
    book = DeviceBook()
    stored: set[int] = set()
    rejected: set[int] = set()
    low = 0
    for op, a, b in events:
        if op == "store":
            if book.admit(a, 1).verdict == "store":
                book.stored(a, 1)
                stored.add(a)
        elif op == "reject":
            book.cover(a, a, 1)
            rejected.add(a)
        elif op == "low":
            low = max(low, a)
            book.cover(1, a - 1, 1)
        else:
            lo, hi = min(a, b), max(a, b)
            book.cover(lo, hi, 1)
            rejected |= set(range(lo, hi + 1))
        book.advance()
        assert book.contiguous == settled_point(stored, rejected, low)


@given(st.sets(seqs), st.sets(seqs), st.integers(0, 70))
def test_settled_point_is_the_highest_fully_settled_prefix(stored: set[int], rejected: set[int], low: int) -> None:
    s = settled_point(stored, rejected, low)
    assert all(q in stored or q in rejected or q < low for q in range(1, s + 1))
    assert not (s + 1 in stored or s + 1 in rejected or s + 1 < low)


def test_a_fresh_store_honours_low_water() -> None:
    book = DeviceBook()  # nothing stored: a replaced database
    book.cover(1, 7850, 3)  # the device's birth says its outbox starts at 7851
    book.admit(7851, 3)
    book.stored(7851, 3)
    book.advance()
    assert book.contiguous == 7851


# ---- hold -------------------------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 50), st.floats(0, 5)), max_size=60))
def test_hold_respects_every_bound(adds: list[tuple[str, int, float]]) -> None:
    hold: Hold[int] = Hold(HoldLimits(max_records=10, max_bytes=200, max_age_s=3.0))
    now = 0.0
    kept = 0
    for i, (dev, size, dt) in enumerate(adds):
        now += dt
        hold.expire(now)
        if hold.add(dev, i, size, now):
            kept += 1
        assert len(hold) <= 10 and hold.bytes <= 200
        assert hold.bytes == sum(h.size for h in hold._items.values())
        nxt = hold.next_expiry()
        assert nxt is None or nxt >= now - 0.0
    before = len(hold)
    released = sum(len(hold.release(d)) for d in ("a", "b", "c"))
    assert released == before and len(hold) == 0 and hold.bytes == 0


def test_hold_releases_by_device_in_order_and_expires() -> None:
    hold: Hold[str] = Hold(HoldLimits(max_records=5, max_bytes=100, max_age_s=10))
    assert hold.add("a", "a1", 10, 0) and hold.add("b", "b1", 10, 1) and hold.add("a", "a2", 10, 2)
    assert not hold.add("a", "big", 101, 2)
    assert hold.devices() == {"a", "b"}
    assert hold.release("a") == ["a1", "a2"]
    assert hold.expire(10.5) == [] and hold.expire(11.5) == [("b", "b1")]


# ---- receipt batcher -------------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from(["d1", "d2"]), st.integers(0, 100), st.integers(0, 3), st.booleans(),
                          st.integers(0, 250)), max_size=50))
def test_batcher_never_publishes_lower_and_at_most_once_per_interval(
        notes: list[tuple[str, int, int, bool, int]]) -> None:
    b = ReceiptBatcher("agg-1", interval_ms=100)
    now = 0
    last_flush = None
    best: dict[str, tuple[int, int]] = {}
    for dev, settled, epoch, force, dt in notes:
        now += dt
        b.note(dev, settled, epoch, force=force)
        out = b.due(now)
        if out:
            assert last_flush is None or now - last_flush >= 100
            last_flush = now
            assert len({r.dev for r in out}) == len(out)
        for r in out:
            assert (r.settled, r.epoch) >= best.get(r.dev, (0, 0))
            best[r.dev] = (r.settled, r.epoch)
            assert r.time_ms == now and r.agg == "agg-1"


def test_batcher_reports_rejects_once_and_splits_long_lists() -> None:
    b = ReceiptBatcher("agg-1", interval_ms=1)
    b.note("d", 5, 1, rejected={3: "bad_signature"}, birth=True)
    (r,) = b.flush(10)
    assert r.rejected == ((3, "bad_signature"),) and r.birth and r.settled == 5
    b.note("d", 5, 1)
    assert b.flush(20) == []  # unchanged, nothing new to say
    b.note("d", 4, 1, force=True)
    (r,) = b.flush(30)
    assert r.settled == 5 and r.rejected == () and not r.birth  # forced, never lower
    b.note("d", 6, 1, rejected={i: "oversize" for i in range(1, MAX_REJECTED + 11)})
    first, = b.flush(40)
    second, = b.flush(50)
    assert len(first.rejected) == MAX_REJECTED and len(second.rejected) == 10
    assert second.rejected[0][0] > first.rejected[-1][0]
