"""The contribution ledger, computed from log entries alone (DESIGN §10, docs/ledger.md).

Why from log entries only: a third party who holds nothing but the log's tiles and the fleet CA must be able
to recompute every figure (``edge-aggregator audit`` does). So the input is the sequence of log entries, each
``(index, exact record bytes)``, decoded with the envelope code; nothing of the aggregator's store is read.

Per period (a half-open interval of signed capture times) and device:

- ``records``: distinct (device, seq) records captured in the period; ``results`` and ``stream_results``:
  the result records among them, per stream; ``model_digests``: the model digests those results name.
- ``first_seq``/``last_seq``: lowest and highest seq among them; ``first_index``/``last_index``: the log index
  range that holds them.
- missing seqs: every seq in ``1..max logged seq`` of the device that no logged record carries, attributed to
  the period of the next logged record above it (so each missing seq is counted in exactly one period, and a
  missing tail is counted once a later record arrives). Cause: ``evicted`` when a logged gap record of the
  device (signed by the device) names it; else ``rejected`` when a logged receipt for the device (signed by
  an aggregator) lists it as rejected; else ``lost``.
- ``uptime_s``: the length of the union of ``[capture, capture + uptime_credit_s)`` over the period's records,
  clipped to the period: a device that records at least every ``uptime_credit_s`` is up the whole time.

A (device, seq) carried by two entries counts once (the lower index) and is reported as an anomaly, as are
entries that do not decode. ``LedgerBuilder`` is fed every entry of the log prefix in index order and then
answers for any period; memory is about 40 bytes per record (typed arrays, not Python objects).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aggregator.ledger.errors import LedgerError
from aggregator.ledger.oztree import StandardMerkleTree, value_from_json, value_to_json
from aggregator.ledger.params import LedgerParams
from aggregator.ledger.period import Period
from aggregator.verifier import gap_info
from envelope import EnvelopeError, Receipt, Record, labels, open_receipt, open_record

# The leaf a reward contract checks: field names and their ABI types (docs/ledger.md, the Solidity side).
LEAF_FIELDS: tuple[str, ...] = (
    "period_start", "period_end", "device_id", "records", "results", "streams", "stream_results",
    "first_seq", "last_seq", "missing_evicted", "missing_rejected", "missing_lost", "uptime_s",
    "model_digests", "first_index", "last_index",
)
LEAF_ENCODING: tuple[str, ...] = (
    "uint64", "uint64", "string", "uint64", "uint64", "string[]", "uint64[]",
    "uint64", "uint64", "uint64", "uint64", "uint64", "uint64",
    "bytes32[]", "uint64", "uint64",
)
ZERO_ROOT = bytes(32)  # the root of a period without entries (no tree can be built over zero leaves)

_KIND_CODE = {labels.KIND_RESULT: 0, labels.KIND_READING: 1, labels.KIND_TELEMETRY: 2, labels.KIND_STATUS: 3,
              labels.KIND_GAP: 4}


@dataclass(frozen=True)
class DeviceEntry:
    """One device's contribution in one period."""

    device_id: str
    records: int
    results: int
    stream_results: tuple[tuple[str, int], ...]  # sorted by stream
    first_seq: int
    last_seq: int
    missing_evicted: int
    missing_rejected: int
    missing_lost: int
    uptime_s: int
    model_digests: tuple[bytes, ...]  # sorted
    first_index: int
    last_index: int

    def leaf(self, period: Period) -> tuple[Any, ...]:
        """The ABI value of this entry's leaf (``LEAF_ENCODING`` order)."""
        return (period.start_s, period.end_s, self.device_id, self.records, self.results,
                [s for s, _ in self.stream_results], [n for _, n in self.stream_results], self.first_seq,
                self.last_seq, self.missing_evicted, self.missing_rejected, self.missing_lost, self.uptime_s,
                list(self.model_digests), self.first_index, self.last_index)

    @classmethod
    def from_leaf(cls, value: Sequence[Any]) -> DeviceEntry:
        """Inverse of ``leaf`` (the period fields are dropped)."""
        v = dict(zip(LEAF_FIELDS, value, strict=True))
        return cls(v["device_id"], v["records"], v["results"],
                   tuple(zip(v["streams"], v["stream_results"], strict=True)), v["first_seq"], v["last_seq"],
                   v["missing_evicted"], v["missing_rejected"], v["missing_lost"], v["uptime_s"],
                   tuple(bytes(d) for d in v["model_digests"]), v["first_index"], v["last_index"])

    @property
    def missing(self) -> int:
        return self.missing_evicted + self.missing_rejected + self.missing_lost


@dataclass(frozen=True)
class Anomaly:
    """Something in the log the ledger could not count as given (reported by ``audit``)."""

    index: int
    kind: str  # "undecodable", "duplicate_seq", "bad_gap"
    detail: str


@dataclass(frozen=True)
class Ledger:
    """The entries of one period, computed from the first ``log_size`` log entries."""

    period: Period
    params: LedgerParams
    log_size: int
    entries: tuple[DeviceEntry, ...]  # sorted by device id

    def values(self) -> list[tuple[Any, ...]]:
        return [e.leaf(self.period) for e in self.entries]

    def tree(self) -> StandardMerkleTree | None:
        """The OpenZeppelin tree over the entries (``None`` for a period without entries)."""
        return StandardMerkleTree.of(self.values(), LEAF_ENCODING) if self.entries else None

    def leaf_json(self, entry: DeviceEntry) -> list[Any]:
        return value_to_json(LEAF_ENCODING, entry.leaf(self.period))


def leaf_from_json(value: Any) -> tuple[Any, ...]:
    """A JSON leaf value (dump form) back to its ABI value."""
    return value_from_json(LEAF_ENCODING, value)


@dataclass(frozen=True)
class RecordFact:
    """What the ledger needs of one device record: small and picklable, so audit workers can send it back."""

    index: int
    device_id: str
    seq: int
    capture_ms: int
    kind: str
    stream: str
    model: bytes | None = None
    gap: tuple[int, int] | None = None  # a gap record's evicted range
    gap_error: str | None = None  # a gap record whose payload names no valid range


def record_fact(index: int, record: Record) -> RecordFact:
    """The ledger facts of ``record`` at log index ``index`` (decodes a gap record's payload)."""
    gap = error = None
    if record.kind == labels.KIND_GAP:
        try:
            g = gap_info(record.payload(), record.seq, record.device_id)
            gap = (g.first, g.last)
        except Exception as e:  # Rejected or MalformedRecord: a gap record that explains nothing
            error = str(e)
    return RecordFact(index, record.device_id, record.seq, record.capture_ms, record.kind, record.stream,
                      record.model_sha256, gap, error)


@dataclass
class _Device:
    seq: array[int] = field(default_factory=lambda: array("q"))
    capture: array[int] = field(default_factory=lambda: array("q"))
    index: array[int] = field(default_factory=lambda: array("q"))
    kind_stream: array[int] = field(default_factory=lambda: array("q"))
    model: array[int] = field(default_factory=lambda: array("q"))
    gaps: list[tuple[int, int, int]] = field(default_factory=list)  # (first, last, log index of the gap record)
    rejected: dict[int, int] = field(default_factory=dict)  # seq -> lowest log index of a receipt naming it


class LedgerBuilder:
    """Feed it the log's entries (``add`` in index order, or ``place`` then ``add_record``/``add_receipt``
    with parsed ones), then ask for the ledger of any period over any prefix of the log."""

    def __init__(self, params: LedgerParams | None = None) -> None:
        self.params = params or LedgerParams()
        self.size = 0
        self.anomalies: list[Anomaly] = []
        self._devices: dict[str, _Device] = {}
        self._kind_streams: dict[tuple[int, str], int] = {}
        self._models: dict[bytes, int] = {}

    def add_all(self, entries: Iterable[tuple[int, bytes]]) -> LedgerBuilder:
        for index, data in entries:
            self.add(index, data)
        return self

    def place(self, index: int) -> None:
        """Account for entry ``index`` (the next one) without counting it yet: an auditor places every entry,
        then adds the ones that verified (``add_record``, ``add_receipt``), possibly later."""
        if index != self.size:
            raise LedgerError(f"log entries must come in index order: expected index {self.size}, got {index}")
        self.size += 1

    def add(self, index: int, data: bytes, *, counted: bool = True) -> None:
        """Take entry ``index`` (which must be the next one), decoding it as a device record or a receipt.
        ``counted=False``: the entry holds its place but contributes nothing."""
        self.place(index)
        if not counted:
            return
        try:
            record = open_record(data, max_bytes=max(len(data), 1))
        except EnvelopeError as e:
            try:
                receipt, _ = open_receipt(data, max_bytes=max(len(data), 1))
            except EnvelopeError:
                self.anomalies.append(Anomaly(index, "undecodable", f"neither a device record nor a receipt: {e}"))
                return
            self.add_receipt(index, receipt)
            return
        self.add_record(index, record)

    def _device(self, device_id: str) -> _Device:
        dev = self._devices.get(device_id)
        if dev is None:
            dev = self._devices[device_id] = _Device()
        return dev

    def add_record(self, index: int, record: Record) -> None:
        """Count a parsed device record at ``index`` (already placed; each index at most once)."""
        self.add_fact(record_fact(index, record))

    def add_fact(self, fact: RecordFact) -> None:
        """Count the ledger facts of one device record (what ``record_fact`` extracts)."""
        if not 0 <= fact.index < self.size:
            raise LedgerError(f"entry {fact.index} was not placed (log size so far {self.size})")
        dev = self._device(fact.device_id)
        kind = _KIND_CODE[fact.kind]
        ks = self._kind_streams.setdefault((kind, fact.stream), len(self._kind_streams))
        model = -1
        if fact.model is not None and kind == 0:
            model = self._models.setdefault(fact.model, len(self._models))
        dev.seq.append(fact.seq)
        dev.capture.append(fact.capture_ms)
        dev.index.append(fact.index)
        dev.kind_stream.append(ks)
        dev.model.append(model)
        if fact.gap_error is not None:
            self.anomalies.append(Anomaly(fact.index, "bad_gap", f"gap record of {fact.device_id} seq {fact.seq}: "
                                          f"{fact.gap_error}"))
        elif fact.gap is not None:
            dev.gaps.append((fact.gap[0], fact.gap[1], fact.index))

    def add_receipt(self, index: int, receipt: Receipt) -> None:
        """Count a parsed receipt at ``index``: the seqs it lists as rejected explain missing seqs."""
        self.add_rejected(index, receipt.dev, [seq for seq, _ in receipt.rejected])

    def add_rejected(self, index: int, device_id: str, seqs: Iterable[int]) -> None:
        """Seqs of ``device_id`` that the receipt at ``index`` names as rejected."""
        if not 0 <= index < self.size:
            raise LedgerError(f"entry {index} was not placed (log size so far {self.size})")
        seqs = list(seqs)
        if seqs:
            rejected = self._device(device_id).rejected
            for seq in seqs:
                rejected[seq] = min(rejected.get(seq, index), index)

    # ---- answering -------------------------------------------------------------------------------------

    def devices(self) -> list[str]:
        return sorted(d for d, dev in self._devices.items() if len(dev.seq))

    def days(self, upto: int | None = None) -> list[str]:
        """The UTC days (YYYY-MM-DD) in which some record of the first ``upto`` entries was captured."""
        found: set[int] = set()
        for dev in self._devices.values():
            if len(dev.capture):
                cap = np.frombuffer(dev.capture, dtype=np.int64)
                if upto is not None:
                    cap = cap[np.frombuffer(dev.index, dtype=np.int64) < upto]
                found.update(np.unique(cap // 86_400_000).tolist())
        return [Period.iso(d * 86_400_000)[:10] for d in sorted(found) if d >= 0]

    def ledger(self, period: Period, *, upto: int | None = None, params: LedgerParams | None = None) -> Ledger:
        """The period's ledger over the first ``upto`` entries (default: every entry placed so far)."""
        upto = self.size if upto is None else upto
        if not 0 <= upto <= self.size:
            raise LedgerError(f"a ledger over {upto} entries needs that many; {self.size} were added")
        params = params or self.params
        names = {v: k for k, v in self._kind_streams.items()}
        models = sorted(self._models, key=self._models.__getitem__)
        entries = []
        for device_id in sorted(self._devices):
            entry = self._entry(device_id, self._devices[device_id], period, names, models, upto, params)
            if entry is not None:
                entries.append(entry)
        return Ledger(period, params, upto, tuple(entries))

    def duplicates(self) -> list[Anomaly]:
        """Entries that repeat a (device, seq) already carried by a lower index."""
        out = []
        for device_id, dev in sorted(self._devices.items()):
            seq = np.frombuffer(dev.seq, dtype=np.int64)
            if not len(seq):
                continue
            idx = np.frombuffer(dev.index, dtype=np.int64)
            order = np.lexsort((idx, seq))
            s = seq[order]
            dup = np.nonzero(s[1:] == s[:-1])[0] + 1
            for k in dup.tolist():
                out.append(Anomaly(int(idx[order[k]]), "duplicate_seq", f"{device_id} seq {int(s[k])} is also "
                                   f"at index {int(idx[order[k - 1]])}"))
        return sorted(out, key=lambda a: a.index)

    def _entry(self, device_id: str, dev: _Device, period: Period, names: dict[int, tuple[int, str]],
               models: list[bytes], upto: int, params: LedgerParams) -> DeviceEntry | None:
        if not len(dev.seq):
            return None
        seq_all = np.frombuffer(dev.seq, dtype=np.int64)
        idx_all = np.frombuffer(dev.index, dtype=np.int64)
        keep = np.nonzero(idx_all < upto)[0]
        order = keep[np.lexsort((idx_all[keep], seq_all[keep]))]
        if not len(order):
            return None
        first = np.ones(len(order), dtype=bool)
        first[1:] = seq_all[order][1:] != seq_all[order][:-1]
        u = order[first]  # one position per distinct seq (its lowest index), ascending seq
        seq = seq_all[u]
        cap = np.frombuffer(dev.capture, dtype=np.int64)[u]
        inside = (cap >= period.start_ms) & (cap < period.end_ms)
        if not inside.any():
            return None
        pos = u[inside]
        iseq, icap, iidx = seq[inside], cap[inside], idx_all[pos]
        ks = np.frombuffer(dev.kind_stream, dtype=np.int64)[pos]
        mdl = np.frombuffer(dev.model, dtype=np.int64)[pos]
        per_stream: dict[str, int] = {}
        for code, n in zip(*np.unique(ks, return_counts=True), strict=True):
            kind, stream = names[int(code)]
            if kind == 0:
                per_stream[stream] = per_stream.get(stream, 0) + int(n)
        digests = tuple(sorted(models[int(m)] for m in np.unique(mdl) if m >= 0))
        counted = set(idx_all[u].tolist())  # a duplicate (device, seq) explains nothing either
        gaps = [(a, b) for a, b, i in dev.gaps if i in counted]
        rejected = sorted(s for s, i in dev.rejected.items() if i < upto)
        evicted, rej, lost = _missing(gaps, rejected, seq, inside)
        return DeviceEntry(
            device_id=device_id, records=int(inside.sum()), results=sum(per_stream.values()),
            stream_results=tuple(sorted(per_stream.items())), first_seq=int(iseq.min()), last_seq=int(iseq.max()),
            missing_evicted=evicted, missing_rejected=rej, missing_lost=lost,
            uptime_s=_uptime_ms(icap, period.end_ms, params.uptime_credit_s * 1000) // 1000,
            model_digests=digests, first_index=int(iidx.min()), last_index=int(iidx.max()),
        )


def _missing(gap_ranges: list[tuple[int, int]], rejected: list[int], seq: np.ndarray,
             inside: np.ndarray) -> tuple[int, int, int]:
    """Missing seqs attributed to the period (runs below an in-period record), split by cause."""
    prev = np.concatenate(([0], seq[:-1]))
    runs = np.nonzero(((seq - prev) > 1) & inside)[0]
    if not len(runs):
        return 0, 0, 0
    gaps = _merge(gap_ranges)
    starts = [a for a, _ in gaps]
    evicted = rej = total = 0
    for k in runs.tolist():
        lo, hi = int(prev[k]) + 1, int(seq[k]) - 1
        total += hi - lo + 1
        evicted += _covered(gaps, starts, lo, hi)
        a, b = bisect.bisect_left(rejected, lo), bisect.bisect_right(rejected, hi)
        rej += sum(1 for s in rejected[a:b] if not _covered(gaps, starts, s, s))
    return evicted, rej, total - evicted - rej


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _covered(merged: list[tuple[int, int]], starts: list[int], lo: int, hi: int) -> int:
    """How many seqs of ``lo..hi`` the merged, disjoint ranges cover."""
    n = 0
    k = max(0, bisect.bisect_right(starts, lo) - 1)
    while k < len(merged) and merged[k][0] <= hi:
        a, b = merged[k]
        n += max(0, min(b, hi) - max(a, lo) + 1)
        k += 1
    return n


def _uptime_ms(captures: np.ndarray, end_ms: int, credit_ms: int) -> int:
    """Length of the union of ``[c, c + credit)`` over ``captures``, clipped at ``end_ms``."""
    c = np.sort(captures)
    span = np.minimum(np.diff(c), credit_ms).sum() if len(c) > 1 else 0
    return int(span) + int(min(credit_ms, end_ms - int(c[-1])))
