"""The contribution ledger (aggregator.ledger): pure, checked against a plain definition and by properties."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.ledger import (
    LEAF_ENCODING,
    ZERO_ROOT,
    LedgerBuilder,
    LedgerError,
    LedgerParams,
    LogBinding,
    Period,
    StandardMerkleTree,
    check_document,
    dump_for,
    leaf_hash,
    ledger_document,
    ledger_root,
    note_text,
    parse_note_text,
    process_proof,
    verify_proof,
)
from envelope import Receipt, RecordHeader, seal, seal_receipt
from provisioning import SoftwareSigner

DAY0 = Period.parse("2026-12-01")
DAY_MS = 86_400_000
SIGNER = SoftwareSigner.generate("ed25519")
MODEL_A, MODEL_B = b"\xaa" * 32, b"\xbb" * 32


@dataclass(frozen=True)
class Rec:
    """One logged device record, as the test describes it."""

    device: str
    seq: int
    capture_ms: int
    kind: str = "result"
    stream: str = "vib"
    model: bytes | None = MODEL_A
    gap: tuple[int, int] | None = None

    def seal(self) -> bytes:
        payload: dict[str, object] = {"label": "ok"}
        if self.kind == "gap":
            assert self.gap is not None
            first, last = self.gap
            payload = {"first": first, "last": last, "count": last - first + 1, "bytes": 100, "reason": "full"}
        header = RecordHeader(self.kind, self.device, self.stream if self.kind in ("result", "reading") else self.kind,
                              1, self.seq, self.capture_ms // 1000, self.capture_ms, 1,
                              model_sha256=self.model if self.kind == "result" else None)
        return seal(SIGNER, header, payload)


def receipt(device: str, rejected: list[tuple[int, str]]) -> bytes:
    r = Receipt(agg="agg-1", dev=device, epoch=1, settled=0, time_ms=1, rejected=tuple(rejected))
    return seal_receipt(SIGNER, [b"\x30\x03\x02\x01\x00"], r)


def build(entries: list[bytes], params: LedgerParams | None = None) -> LedgerBuilder:
    return LedgerBuilder(params).add_all(enumerate(entries))


# ---- the definition, written plainly (sets and loops) -------------------------------------------------


def reference(recs: list[Rec], rejected: dict[str, dict[int, str]], period: Period, credit_s: int) -> dict:
    """Every figure of docs/ledger.md computed the obvious way, for comparison with the builder."""
    out = {}
    first_by_seq: dict[tuple[str, int], tuple[int, Rec]] = {}
    for i, r in enumerate(recs):
        first_by_seq.setdefault((r.device, r.seq), (i, r))
    for device in sorted({r.device for r in recs}):
        mine = {seq: (i, r) for (d, seq), (i, r) in first_by_seq.items() if d == device}
        inside = {seq: (i, r) for seq, (i, r) in mine.items() if period.contains(r.capture_ms)}
        if not inside:
            continue
        present = sorted(mine)
        covered = set()
        for _, r in mine.values():
            if r.kind == "gap" and r.gap is not None:
                covered |= set(range(r.gap[0], r.gap[1] + 1))
        evicted = rej = lost = 0
        for seq in inside:
            prev = max([p for p in present if p < seq], default=0)
            for m in range(prev + 1, seq):
                if m in covered:
                    evicted += 1
                elif m in rejected.get(device, {}):
                    rej += 1
                else:
                    lost += 1
        results = Counter(r.stream for _, r in inside.values() if r.kind == "result")
        covered_ms: set[int] = set()
        for _, r in inside.values():  # seconds-resolution union of [c, c + credit) within the period
            start = r.capture_ms // 1000
            covered_ms |= set(range(start, min(start + credit_s, period.end_ms // 1000)))
        out[device] = {
            "records": len(inside), "results": sum(results.values()), "stream_results": tuple(sorted(results.items())),
            "first_seq": min(inside), "last_seq": max(inside), "missing_evicted": evicted,
            "missing_rejected": rej, "missing_lost": lost, "uptime_s": len(covered_ms),
            "model_digests": tuple(sorted({r.model for _, r in inside.values() if r.kind == "result" and r.model})),
            "first_index": min(i for i, _ in inside.values()), "last_index": max(i for i, _ in inside.values()),
        }
    return out


def as_dict(entry) -> dict:
    return {k: getattr(entry, k) for k in ("records", "results", "stream_results", "first_seq", "last_seq",
                                           "missing_evicted", "missing_rejected", "missing_lost", "uptime_s",
                                           "model_digests", "first_index", "last_index")}


# ---- examples ------------------------------------------------------------------------------------------


def test_a_day_of_one_device() -> None:
    t = DAY0.start_ms
    recs = [Rec("dev-a", 1, t + 60_000), Rec("dev-a", 2, t + 120_000, stream="temp", model=MODEL_B),
            Rec("dev-a", 3, t + 180_000, kind="telemetry"), Rec("dev-a", 5, t + 300_000),
            Rec("dev-a", 8, t + 480_000, kind="gap", gap=(6, 7)), Rec("dev-a", 9, t + 540_000)]
    ledger = build([r.seal() for r in recs]).ledger(DAY0)
    (e,) = ledger.entries
    assert (e.records, e.results, e.stream_results) == (6, 4, (("temp", 1), ("vib", 3)))
    assert (e.first_seq, e.last_seq, e.first_index, e.last_index) == (1, 9, 0, 5)
    assert (e.missing_evicted, e.missing_rejected, e.missing_lost) == (2, 0, 1)  # 6-7 by the gap record, 4 lost
    assert e.model_digests == (MODEL_A, MODEL_B)
    assert e.uptime_s == 60 + 60 + 120 + 120 + 60 + 120  # gaps capped at the 120 s credit, plus the last credit


def test_missing_seqs_go_to_the_period_of_the_next_logged_record() -> None:
    t = DAY0.start_ms
    recs = [Rec("dev-a", 1, t + 1000), Rec("dev-a", 5, t + DAY_MS + 1000), Rec("dev-a", 6, t + DAY_MS + 2000)]
    b = build([r.seal() for r in recs])
    day1 = Period.parse("2026-12-02")
    assert b.ledger(DAY0).entries[0].missing == 0
    assert b.ledger(day1).entries[0].missing_lost == 3
    assert b.days() == ["2026-12-01", "2026-12-02"]


def test_rejected_seqs_come_from_logged_receipts() -> None:
    t = DAY0.start_ms
    entries = [Rec("dev-a", 1, t).seal(), receipt("dev-a", [(2, "bad_signature"), (3, "malformed")]),
               Rec("dev-a", 5, t + 10_000).seal()]
    (e,) = build(entries).ledger(DAY0).entries
    assert (e.missing_evicted, e.missing_rejected, e.missing_lost) == (0, 2, 1)
    assert (e.first_index, e.last_index) == (0, 2)


def test_duplicates_count_once_and_bad_entries_are_anomalies() -> None:
    t = DAY0.start_ms
    a = Rec("dev-a", 1, t).seal()
    b = build([a, b"\x00garbage", a, Rec("dev-a", 2, t + 1).seal()])
    (e,) = b.ledger(DAY0).entries
    assert (e.records, e.first_index, e.last_index) == (2, 0, 3)
    assert [(x.index, x.kind) for x in b.anomalies] == [(1, "undecodable")]
    assert [(x.index, x.kind) for x in b.duplicates()] == [(2, "duplicate_seq")]
    assert b.size == 4


def test_a_duplicate_gap_record_explains_nothing() -> None:
    t = DAY0.start_ms
    entries = [Rec("dev-b", 2, t).seal(), Rec("dev-b", 2, t, "gap", gap=(1, 1)).seal()]
    (e,) = build(entries).ledger(DAY0).entries
    assert (e.records, e.missing_evicted, e.missing_lost) == (1, 0, 1)


def test_entries_must_come_in_index_order() -> None:
    b = LedgerBuilder()
    b.add(0, Rec("dev-a", 1, DAY0.start_ms).seal())
    with pytest.raises(LedgerError, match="expected index 1, got 2"):
        b.add(2, Rec("dev-a", 2, DAY0.start_ms).seal())


def test_uncounted_entries_hold_their_place() -> None:
    b = LedgerBuilder()
    b.add(0, Rec("dev-a", 1, DAY0.start_ms).seal(), counted=False)
    b.add(1, Rec("dev-a", 2, DAY0.start_ms).seal())
    (e,) = b.ledger(DAY0).entries
    assert (e.records, e.first_index, e.missing_lost) == (1, 1, 1)


def test_a_period_without_records_has_the_zero_root() -> None:
    ledger = build([Rec("dev-a", 1, DAY0.start_ms).seal()]).ledger(Period.parse("2026-11-30"))
    assert ledger.entries == () and ledger.tree() is None and ledger_root(ledger) == ZERO_ROOT
    assert dump_for(ledger) is None


def test_periods() -> None:
    assert Period.parse("2026-12").end_ms - Period.parse("2026-12").start_ms == 31 * DAY_MS
    assert Period.parse("2026-12").end_ms == Period.parse("2027-01-01").start_ms
    p = Period.parse("2026-12-01T06:00:00Z/2026-12-01T07:00:00+00:00")
    assert p.label == "2026-12-01T06:00:00Z/2026-12-01T07:00:00Z" and p.end_ms - p.start_ms == 3_600_000
    for bad in ("2026-13-01", "yesterday", "2026-12-02/2026-12-01"):
        with pytest.raises(LedgerError):
            Period.parse(bad)


# ---- against the definition --------------------------------------------------------------------------

devices = st.sampled_from(["dev-a", "dev-b", "dev-c"])


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[Rec], dict[str, dict[int, str]]]:
    recs = []
    for _ in range(draw(st.integers(0, 25))):
        device = draw(devices)
        seq = draw(st.integers(1, 30))
        capture = DAY0.start_ms + draw(st.integers(-2, 2)) * DAY_MS // 2 + draw(st.integers(0, 600)) * 1000
        kind = draw(st.sampled_from(["result", "result", "telemetry", "gap"]))
        if kind == "gap" and seq > 1:
            first = draw(st.integers(1, seq - 1))
            recs.append(Rec(device, seq, capture, "gap", gap=(first, draw(st.integers(first, seq - 1)))))
        else:
            recs.append(Rec(device, seq, capture, "result" if kind == "gap" else kind,
                            draw(st.sampled_from(["vib", "temp"])), draw(st.sampled_from([MODEL_A, MODEL_B]))))
    rejected = draw(st.dictionaries(devices, st.dictionaries(st.integers(1, 30), st.just("bad_signature"),
                                                             max_size=4), max_size=2))
    return recs, rejected


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.sampled_from([1, 60, 120, 900]))
def test_builder_agrees_with_the_definition(log: tuple[list[Rec], dict[str, dict[int, str]]], credit: int) -> None:
    recs, rejected = log
    entries = [r.seal() for r in recs]
    for device, seqs in sorted(rejected.items()):
        entries.insert(len(entries) // 2, receipt(device, sorted(seqs.items())))
    # receipt entries shift indices: compute the reference over the device records at their real indices
    positions = [i for i, data in enumerate(entries) if data in {r.seal() for r in recs}]
    builder = build(entries, LedgerParams(credit))
    for label in ("2026-11-30", "2026-12-01", "2026-12-02"):
        period = Period.parse(label)
        got = {e.device_id: as_dict(e) for e in builder.ledger(period).entries}
        want = reference(recs, rejected, period, credit)
        if recs:
            index_of = dict(enumerate(positions))
            for w in want.values():
                w["first_index"], w["last_index"] = index_of[w["first_index"]], index_of[w["last_index"]]
        assert got == want


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_every_missing_seq_is_counted_once_over_all_periods(log: tuple[list[Rec], dict]) -> None:
    recs, _ = log
    builder = build([r.seal() for r in recs])
    months = builder.ledger(Period.parse("2026-01-01T00:00:00Z/2027-12-31T00:00:00Z"))
    per_day = [builder.ledger(Period.parse(d)) for d in builder.days()]
    for e in months.entries:
        days = [x for ledger in per_day for x in ledger.entries if x.device_id == e.device_id]
        assert sum(x.missing for x in days) == e.missing
        assert sum(x.records for x in days) == e.records
        distinct = {r.seq for r in recs if r.device == e.device_id}
        assert e.missing + len(distinct) == max(distinct)


# ---- the OpenZeppelin tree --------------------------------------------------------------------------

leaf_values = st.tuples(st.integers(0, 2**64 - 1), st.text(max_size=8), st.lists(st.integers(0, 2**64 - 1),
                                                                                   max_size=3))
ENC = ("uint64", "string", "uint64[]")


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(leaf_values, min_size=1, max_size=12, unique_by=repr))
def test_every_value_proves_against_the_root(values: list[tuple]) -> None:
    tree = StandardMerkleTree.of(values, ENC)
    for i, v in enumerate(values):
        verify_proof(tree.root, ENC, v, tree.proof(i))
    again = StandardMerkleTree.load(json.loads(json.dumps(tree.dump())))
    assert again == tree
    changed = (values[0][0] ^ 1, *values[0][1:])
    if changed not in values:
        with pytest.raises(LedgerError):
            verify_proof(tree.root, ENC, changed, tree.proof(0))


def test_tree_layout_is_openzeppelins() -> None:
    values = [(1, "a", []), (2, "b", [3]), (3, "c", [4, 5])]
    tree = StandardMerkleTree.of(values, ENC)
    leaves = sorted(leaf_hash(ENC, v) for v in values)
    assert list(tree.tree[-3:]) == leaves[::-1]  # sorted leaves fill the array from its end
    assert tree.tree[1] == process_proof(tree.tree[3], [tree.tree[4]])
    dump = tree.dump()
    assert dump["format"] == "standard-v1" and dump["values"][0]["value"] == ["1", "a", []]
    assert all(h.startswith("0x") and len(h) == 66 for h in dump["tree"])


def test_a_tampered_dump_is_refused() -> None:
    tree = StandardMerkleTree.of([(1, "a", []), (2, "b", [])], ENC)
    dump = tree.dump()
    dump["values"][0]["value"][0] = "7"
    with pytest.raises(LedgerError, match="does not hash"):
        StandardMerkleTree.load(dump)
    dump = tree.dump()
    dump["tree"][0] = "0x" + "00" * 32
    with pytest.raises(LedgerError, match="not the hash of its children"):
        StandardMerkleTree.load(dump)


# ---- the published document --------------------------------------------------------------------------


def _document() -> dict:
    t = DAY0.start_ms
    recs = [Rec("dev-a", 1, t), Rec("dev-b", 1, t + 5), Rec("dev-b", 3, t + 9), Rec("dev-c", 2, t + 9)]
    ledger = build([r.seal() for r in recs]).ledger(DAY0)
    log = LogBinding("test.fleet/log", ledger.log_size, b"\x07" * 32)
    return ledger_document(ledger, log, note_text(ledger, log) + "\n— test.fleet/log AAAA\n")


def test_document_checks_and_its_note_parses() -> None:
    doc = _document()
    fields, entries = check_document(doc)
    assert [e.device_id for e in entries] == ["dev-a", "dev-b", "dev-c"]
    assert fields.log_size == 4 and fields.log_root == b"\x07" * 32 and fields.entries == 3
    assert doc["entries"][1]["missing"] == {"evicted": 0, "rejected": 0, "lost": 1}
    assert "0x" + fields.root.hex() == doc["root"]
    assert parse_note_text(doc["note"].split("\n\n")[0] + "\n") == fields
    assert len(doc["entries"][0]["value"]) == len(LEAF_ENCODING)


@pytest.mark.parametrize("tamper", [
    lambda d: d["entries"][0].update(records=d["entries"][0]["records"] + 1),
    lambda d: d["entries"][1]["value"].__setitem__(3, "99"),
    lambda d: d["entries"][2]["proof"].reverse() if len(d["entries"][2]["proof"]) > 1 else
    d["entries"][2]["proof"].append("0x" + "11" * 32),
    lambda d: d.update(root="0x" + "22" * 32),
    lambda d: d["entries"].pop(),
])
def test_a_changed_document_fails_its_check(tamper) -> None:
    doc = _document()
    tamper(doc)
    with pytest.raises(LedgerError):
        check_document(doc)


def test_a_ledger_over_a_prefix_of_the_log_ignores_later_entries() -> None:
    t = DAY0.start_ms
    entries = [Rec("dev-a", 1, t).seal(), Rec("dev-a", 3, t + 1).seal(), receipt("dev-a", [(2, "malformed")]),
               Rec("dev-a", 4, t + DAY_MS).seal(), Rec("dev-a", 2, t + 2).seal()]
    b = build(entries)
    (early,) = b.ledger(DAY0, upto=2).entries
    assert (early.records, early.missing_lost, early.missing_rejected, early.last_index) == (2, 1, 0, 1)
    (mid,) = b.ledger(DAY0, upto=3).entries
    assert (mid.missing_lost, mid.missing_rejected) == (0, 1)
    (full,) = b.ledger(DAY0).entries
    assert (full.records, full.missing, full.last_index) == (3, 0, 4)
    assert b.days(upto=3) == ["2026-12-01"] and b.days() == ["2026-12-01", "2026-12-02"]
    assert b.ledger(DAY0, upto=0).entries == ()
    with pytest.raises(LedgerError):
        b.ledger(DAY0, upto=6)
    assert b.ledger(DAY0, params=LedgerParams(1)).entries[0].uptime_s == 1  # captures 1 ms apart, 1 s credit
