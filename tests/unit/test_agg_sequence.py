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


# ---- exact boundaries (each of these killed mutants a mutation run left alive: docs/mutation.md) ----------


def test_a_late_copy_below_the_contiguous_point_is_a_reorder_for_the_store_to_judge() -> None:
    book = DeviceBook()
    for s in (1, 2, 3):
        commit(book, s)
    book.advance()
    d = book.admit(2, 1)
    assert (d.verdict, d.reorder, d.gap_opened) == (STORE, True, 0)
    book.stored(2, 1)  # the store found it new after all (a seq a gap record named)
    assert book.admit(2, 1).verdict == STORE  # nothing pending is left behind
    book.stored(3, 1)  # stored at exactly the contiguous point
    assert 3 not in book.stored_above and book.admit(3, 1).verdict == STORE


def test_a_seq_the_store_called_a_duplicate_can_come_again() -> None:
    book = DeviceBook()
    d = book.admit(5, 1)
    assert (d.verdict, d.gap_opened) == (STORE, 4)
    book.duplicate(5)
    d = book.admit(5, 1)  # max_seq is 5 now, but 5 is neither stored nor pending
    assert (d.verdict, d.gap_opened) == (STORE, 0)
    book.duplicate(99)  # not pending: nothing to forget, no error


def test_stored_without_admit_raises_the_highest_seq() -> None:
    book = DeviceBook()
    book.stored(7, 2)
    assert (book.max_seq, book.max_epoch, book.stored_above) == (7, 2, {7: 2})


def test_hole_epochs_are_bounded_by_the_nearest_neighbours() -> None:
    book = DeviceBook()
    for seq, epoch in ((3, 1), (6, 3), (9, 5)):
        commit(book, seq, epoch)
    # hole 4..5: between 3 (epoch 1) and 6 (epoch 3)
    assert book.admit(4, 0).verdict == EPOCH_REGRESSION
    d = book.admit(4, 4)
    assert d.verdict == EPOCH_REGRESSION and "1..3" in d.detail and "seq 4" in d.detail
    assert book.admit(5, 3).verdict == STORE
    # hole 7..8: between 6 (epoch 3) and 9 (epoch 5)
    assert book.admit(7, 2).verdict == EPOCH_REGRESSION
    assert book.admit(8, 5).verdict == STORE
    # hole 1..2: below the first known seq, the lower bound is the contiguous epoch (0)
    assert book.admit(2, 2).verdict == EPOCH_REGRESSION  # above 3's epoch 1
    assert book.admit(1, 0).verdict == STORE


def test_pending_records_bound_the_holes_of_the_same_batch() -> None:
    book = DeviceBook()
    commit(book, 1, 1)
    assert book.admit(10, 3).verdict == STORE  # pending, not yet stored
    assert book.admit(5, 3).verdict == STORE  # a hole, pending
    d = book.admit(7, 2)  # between pending 5 (epoch 3) and pending 10 (epoch 3)
    assert d.verdict == EPOCH_REGRESSION and "3..3" in d.detail
    assert book.admit(3, 2).verdict == STORE  # between 1 (epoch 1) and pending 5 (epoch 3)


def test_hole_above_every_known_seq_is_bounded_by_the_highest_epoch() -> None:
    book = DeviceBook()
    commit(book, 2, 1)
    d = book.admit(8, 4)
    assert d.gap_opened == 5
    book.duplicate(8)  # 8 stays the highest seq seen, but nothing above 2 is stored or pending
    assert book.admit(5, 5).verdict == EPOCH_REGRESSION  # above max_epoch 4
    assert book.admit(5, 4).verdict == STORE


def test_cover_counts_new_seqs_exactly() -> None:
    book = DeviceBook()
    assert book.cover(4, 4, 1) == 1  # a single seq
    assert book.cover(5, 6, 1) == 2  # adjacent: merged, nothing counted twice
    assert book.policy == [(4, 6, 1)]
    assert book.cover(8, 9, 2) == 2  # one seq apart: not merged
    assert book.policy == [(4, 6, 1), (8, 9, 2)]
    assert book.cover(1, 2, 1) == 2 and book.policy == [(1, 2, 1), (4, 6, 1), (8, 9, 2)]
    assert book.cover(5, 8, 3) == 1  # only 7 is new; bridges the two ranges on its right
    assert book.policy == [(1, 2, 1), (4, 9, 3)]
    assert book.cover(3, 3, 1) == 1 and book.policy == [(1, 9, 3)]
    assert book.cover(2, 1, 1) == 0  # empty range


def test_cover_starts_above_the_contiguous_point() -> None:
    book = DeviceBook()
    for s in (1, 2, 3):
        commit(book, s)
    book.advance()
    assert book.cover(1, 5, 1) == 2  # only 4 and 5 are new
    assert book.cover(1, 3, 1) == 0
    assert book.cover(4, 4, 1) == 0


def test_advance_over_policy_ranges() -> None:
    book = DeviceBook()
    assert book.advance() is False  # nothing to move over
    book.cover(1, 1, 2)  # a range of one seq: nxt == last
    assert book.advance() is True and (book.contiguous, book.contiguous_epoch) == (1, 2)
    assert book.advance() is False
    book.cover(2, 10, 3)
    assert book.advance() and (book.contiguous, book.contiguous_epoch, book.max_seq, book.max_epoch) == (10, 3, 10, 3)
    assert book.policy == []  # a range wholly passed is dropped


def test_advance_drops_stored_seqs_it_passed_via_a_policy_range() -> None:
    book = DeviceBook()
    book.cover(1, 5, 1)
    commit(book, 5, 1)  # a late copy of the last evicted seq arrived and was stored
    assert book.advance() and book.contiguous == 5
    assert book.stored_above == {}
    assert book.admit(5, 1).verdict == STORE  # below the contiguous point: the store decides


def test_missing_counts_each_unaccounted_seq_once() -> None:
    book = DeviceBook()
    book.cover(2, 4, 1)
    book.cover(7, 9, 1)
    book.cover(11, 11, 1)  # a range of one seq
    for s in (2, 3, 4, 6, 7, 9, 10, 12):  # inside, at both ends of, and between the ranges
        book.stored(s, 1)
    # 1..12: covered 2-4, 7-9, 11; stored outside them: 6, 10, 12; nothing accounts for 1 and 5
    assert book.missing() == 2  # 1 and 5
    book.stored(1, 1)  # at the low end, before advance()
    assert book.missing() == 1
    assert book.advance() and book.contiguous == 4 and book.missing() == 1  # 5
    book.stored(5, 1)
    assert book.advance() and book.contiguous == 12 and book.missing() == 0


def test_the_contiguous_point_itself_is_for_the_store_to_judge() -> None:
    book = DeviceBook()
    for s in (1, 2, 3):
        commit(book, s, 1)
    book.advance()
    d = book.admit(3, 0)  # at the contiguous point, any epoch: not an epoch check, a reorder
    assert (d.verdict, d.reorder) == (STORE, True)


def test_a_late_copy_below_the_contiguous_point_bounds_a_hole_above_it() -> None:
    book = DeviceBook()
    for s in (1, 2, 3):
        commit(book, s, 1)
    book.advance()
    commit(book, 6, 2)
    assert book.admit(2, 1).verdict == STORE  # pending, below the contiguous point
    assert book.admit(5, 2).verdict == STORE  # its lower neighbour is that pending copy (epoch 1)
    assert book.admit(4, 0).verdict == EPOCH_REGRESSION
