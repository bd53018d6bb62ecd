"""Sequence rules (pure): duplicates, reorder, gaps, epoch going backwards, contiguity over policy gaps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import DeviceBook
from aggregator.sequence import DUPLICATE, EPOCH_REGRESSION, STORE


def commit(book: DeviceBook, seq: int, epoch: int = 1, db: set[int] | None = None) -> str:
    """Admit, then play the store's idempotent insert (``db``: seqs already in the table)."""
    d = book.admit(seq, epoch)
    if d.verdict != STORE:
        return d.verdict
    if db is not None and seq in db:
        book.duplicate(seq)
        return DUPLICATE
    if db is not None:
        db.add(seq)
    book.stored(seq, epoch)
    return STORE


def test_in_order_records_advance_the_contiguous_point() -> None:
    book = DeviceBook()
    for s in range(1, 6):
        assert commit(book, s) == STORE
    assert book.advance() and book.contiguous == 5 and book.missing() == 0


def test_a_gap_holds_the_contiguous_point_until_the_hole_is_filled() -> None:
    book = DeviceBook()
    commit(book, 1)
    d = book.admit(4, 1)
    assert d.verdict == STORE and d.gap_opened == 2
    book.stored(4, 1)
    book.advance()
    assert book.contiguous == 1 and book.missing() == 2
    d = book.admit(3, 1)
    assert d.reorder and d.verdict == STORE
    book.stored(3, 1)
    commit(book, 2)
    book.advance()
    assert book.contiguous == 4 and book.missing() == 0


def test_a_seq_seen_twice_is_a_duplicate() -> None:
    book = DeviceBook()
    commit(book, 1)
    commit(book, 3)
    assert book.admit(3, 1).verdict == DUPLICATE
    assert book.admit(2, 1).verdict == STORE
    assert book.admit(2, 1).verdict == DUPLICATE  # twice in one batch


def test_below_the_contiguous_point_the_store_decides() -> None:
    book = DeviceBook()
    db: set[int] = set()
    commit(book, 1, db=db)
    book.advance()
    assert commit(book, 1, db=db) == DUPLICATE


def test_epoch_going_backwards_above_the_highest_seq_is_rejected() -> None:
    book = DeviceBook()
    commit(book, 1, epoch=5)
    d = book.admit(2, 4)
    assert d.verdict == EPOCH_REGRESSION and "epoch 4" in d.detail
    assert book.admit(2, 5).verdict == STORE
    assert book.admit(3, 6).verdict == STORE  # a restart raises the epoch


def test_hole_filler_must_fit_between_its_neighbours_epochs() -> None:
    book = DeviceBook()
    commit(book, 1, epoch=1)
    commit(book, 5, epoch=2)
    book.advance()
    assert book.admit(3, 3).verdict == EPOCH_REGRESSION
    assert book.admit(3, 0).verdict == EPOCH_REGRESSION
    assert book.admit(3, 2).verdict == STORE


def test_policy_gap_counts_as_accounted_for() -> None:
    book = DeviceBook()
    commit(book, 1)
    commit(book, 12)  # the gap record itself, naming 2..11
    book.cover(2, 11, 1)
    assert book.advance() and book.contiguous == 12


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.just(n), st.permutations(list(range(1, n + 1))), st.lists(st.integers(1, n), max_size=20))))
def test_any_arrival_order_with_duplicates_stores_each_seq_once(case: tuple[int, list[int], list[int]]) -> None:
    n, order, dups = case
    book = DeviceBook()
    db: set[int] = set()
    stored: list[int] = []
    duplicates = 0
    arrivals = list(order)
    for i, d in enumerate(dups):
        arrivals.insert((i * 7) % (len(arrivals) + 1), d)
    for s in arrivals:
        v = commit(book, s, db=db)
        if v == STORE:
            stored.append(s)
        else:
            assert v == DUPLICATE
            duplicates += 1
        book.advance()
        assert all(x in stored for x in range(1, book.contiguous + 1))
    assert sorted(stored) == list(range(1, n + 1))
    assert duplicates == len(dups)
    assert book.contiguous == n and book.missing() == 0


def test_overlapping_policy_gaps_are_merged_and_counted_once() -> None:
    from aggregator.sequence import DeviceBook

    book = DeviceBook()
    # A long outage: each gap record names everything since the last ack (1..N), so ranges overlap.
    assert book.cover(1, 100, 1) == 100
    assert book.cover(1, 250, 1) == 150
    assert book.cover(50, 250, 1) == 0
    assert book.policy == [(1, 250, 1)]
    book.max_seq, book.max_epoch = 260, 1
    book.stored(255, 1)
    assert book.missing() == 260 - 250 - 1  # 251..260 minus the stored 255
    assert book.advance() and book.contiguous == 250
    assert book.cover(10, 20, 1) == 0, "below the contiguous point nothing is new"


def test_missing_is_fast_for_huge_ranges() -> None:
    from aggregator.sequence import DeviceBook

    book = DeviceBook(contiguous=0, max_seq=10**12)
    book.cover(1, 10**12 - 5, 1)
    assert book.missing() == 5
