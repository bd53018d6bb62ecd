"""Per-device sequence rules (DESIGN §4): duplicates, reorder, gaps, epoch going backwards, contiguity.

Pure: a ``DeviceBook`` holds what the store knows about one device (highest contiguous seq, highest seq
and its epoch, stored seqs above the contiguous point, policy-gap ranges) and answers for each verified
record whether to store it. The store decides duplicates finally (its insert is idempotent on (device,
seq)); the book then advances the contiguous point, which is what the durable ack reports. Every record
kind consumes a seq from the same per-device counter, so contiguity is over all kinds; seqs named by a
gap record (evicted by the agent's outbox policy) count as accounted for.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

STORE = "store"
DUPLICATE = "duplicate"
EPOCH_REGRESSION = "epoch_regression"


@dataclass(frozen=True)
class Decision:
    """What to do with one record, plus what it tells about the stream."""

    verdict: str  # STORE, DUPLICATE or EPOCH_REGRESSION
    reorder: bool = False  # arrived below the highest seq already seen
    gap_opened: int = 0  # seqs skipped when this record raised the highest seq (loss or reorder in transit)
    detail: str = ""


@dataclass
class DeviceBook:
    """Sequence state of one device as the store holds it; mutated as a batch is planned and committed."""

    contiguous: int = 0
    contiguous_epoch: int = 0
    max_seq: int = 0
    max_epoch: int = 0
    stored_above: dict[int, int] = field(default_factory=dict)  # seq -> epoch, seqs > contiguous
    policy: list[tuple[int, int, int]] = field(default_factory=list)  # (first, last, epoch), last > contiguous
    _pending: dict[int, int] = field(default_factory=dict)

    def admit(self, seq: int, epoch: int) -> Decision:
        """Classify a verified record; a STORE decision is provisional until ``stored`` confirms it."""
        if seq in self.stored_above or seq in self._pending:
            return Decision(DUPLICATE)
        if seq <= self.contiguous:
            # Accounted for already: a duplicate unless it is a late copy of a seq a gap record named.
            self._pending[seq] = epoch
            return Decision(STORE, reorder=True)
        if seq > self.max_seq:
            if epoch < self.max_epoch:
                return Decision(EPOCH_REGRESSION, detail=f"seq {seq} has epoch {epoch}, below epoch "
                                f"{self.max_epoch} of the highest stored seq {self.max_seq}")
            gap = seq - self.max_seq - 1
            self.max_seq, self.max_epoch = seq, epoch
            self._pending[seq] = epoch
            return Decision(STORE, gap_opened=gap)
        # A hole below the highest seq is being filled: its epoch must sit between its neighbours'.
        lower, upper = self._neighbour_epochs(seq)
        if epoch < lower or epoch > upper:
            return Decision(EPOCH_REGRESSION, detail=f"seq {seq} has epoch {epoch}, its stored neighbours "
                            f"have epochs {lower}..{upper}")
        self._pending[seq] = epoch
        return Decision(STORE, reorder=True)

    def _neighbour_epochs(self, seq: int) -> tuple[int, int]:
        known = {**self.stored_above, **self._pending}
        keys = sorted(known)
        i = bisect.bisect_left(keys, seq)
        lower = known[keys[i - 1]] if i > 0 else self.contiguous_epoch
        upper = known[keys[i]] if i < len(keys) else self.max_epoch
        return lower, upper

    def stored(self, seq: int, epoch: int) -> None:
        """The store committed ``seq`` (it was new)."""
        self._pending.pop(seq, None)
        if seq > self.contiguous:
            self.stored_above[seq] = epoch
        if seq > self.max_seq:
            self.max_seq, self.max_epoch = seq, epoch

    def duplicate(self, seq: int) -> None:
        """The store already held ``seq``."""
        self._pending.pop(seq, None)

    def cover(self, first: int, last: int, epoch: int) -> int:
        """Seqs ``first..last`` were evicted by policy (a gap record said so): accounted for.

        Ranges are kept merged (gap records of a long outage overlap: each names everything since the last
        ack), so work and counts do not grow with overlap. Returns how many seqs this range newly covers.
        """
        first = max(first, self.contiguous + 1)
        if last < first:
            return 0
        merged: list[tuple[int, int, int]] = []
        new = last - first + 1
        lo, hi, ep = first, last, epoch
        for f, la, e in self.policy:
            if la < lo - 1 or f > hi + 1:
                merged.append((f, la, e))
                continue
            new -= max(0, min(la, last) - max(f, first) + 1)  # already covered part of the new range
            lo, hi, ep = min(lo, f), max(hi, la), max(ep, e)
        merged.append((lo, hi, ep))
        merged.sort()
        self.policy = merged
        return new

    def advance(self) -> bool:
        """Move the contiguous point over stored and policy-covered seqs; True if it moved."""
        start = c = self.contiguous
        ce = self.contiguous_epoch
        while True:
            nxt = c + 1
            if nxt in self.stored_above:
                ce = self.stored_above.pop(nxt)
                c = nxt
                continue
            span = next(((f, last, e) for f, last, e in self.policy if f <= nxt <= last), None)
            if span is None:
                break
            c, ce = span[1], span[2]
        if c == start:
            return False
        self.contiguous, self.contiguous_epoch = c, ce
        for s in [s for s in self.stored_above if s <= c]:
            del self.stored_above[s]
        self.policy = [p for p in self.policy if p[1] > c]
        if c > self.max_seq:
            self.max_seq, self.max_epoch = c, ce
        return True

    def missing(self) -> int:
        """Seqs above the contiguous point and below the highest seq that nothing accounts for yet."""
        lo, hi = self.contiguous + 1, self.max_seq
        covered = 0
        starts = []
        for f, last, _ in self.policy:  # merged and sorted: no seq is counted twice
            a, b = max(f, lo), min(last, hi)
            if a <= b:
                covered += b - a + 1
                starts.append((a, b))
        for s in self.stored_above:
            if lo <= s <= hi:
                i = bisect.bisect_right(starts, (s, float("inf"))) - 1
                if i < 0 or not starts[i][0] <= s <= starts[i][1]:
                    covered += 1
        return max(0, hi - lo + 1 - covered)
