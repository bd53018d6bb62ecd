"""The audit, without I/O: a verified checkpoint, the served tiles and entries in, every discrepancy out.

Trusts nothing of the aggregator but the log's public verifier key and the fleet CA (plus CRLs if given):

1. the checkpoint is a signed note by the log key, in C2SP tlog-checkpoint form;
2. every entry bundle's entries hash (RFC 6962) to the served level-0 tile, every higher tile hash is the
   root of the full tile below, and the recomputed root at the checkpoint's size is the checkpoint's root;
3. every entry is a device record whose signature verifies with a key certified by the fleet CA (learned
   from birth records in the log, as the aggregator learns them; valid at the record's signed time), or a
   receipt signed by an aggregator identity of the fleet; no (device, seq) appears twice;
4. every checkpoint seen before (the state file) is consistent: its root is the recomputed root at its size,
   and the log never shrank;
5. every published ledger is signed by the log key, bound to the log (its stated root is the recomputed root
   at its size) and equal, field by field, to the ledger recomputed from the entries (``LedgerBuilder``).

Records whose key is not known when met (a birth record later in the log) are verified at the end. The
shell (``aggregator.audit.run``) fetches what ``bundles`` and ``upper_tiles_ready`` name, feeds ``bundle`` and
``tile``, has the entries checked (``aggregator.audit.verify``, in worker processes for big logs) and feeds the
outcomes back (``outcomes``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from aggregator.audit.tiles import TILE_WIDTH, Tile, levels_for, parse_bundle, split_hashes, tiles_for
from aggregator.audit.tree import StreamingTree, leaf_hash
from aggregator.audit.verify import Deferred, EntryChecker, Outcome, ReceiptOk, Verified
from aggregator.errors import AggregatorError
from aggregator.ledger.compute import DeviceEntry, LedgerBuilder
from aggregator.ledger.errors import LedgerError
from aggregator.ledger.export import check_document, ledger_root
from envelope.errors import InvalidNote, MalformedNote
from envelope.note import NoteVerifier, open_checkpoint, open_note

MAX_FINDINGS_PER_KIND = 1000  # a broken log would otherwise produce a million lines; the count stays exact


class AuditError(AggregatorError):
    """The audit cannot start: no valid checkpoint, an unusable verifier key or state file."""


@dataclass(frozen=True)
class Finding:
    """One discrepancy. ``kind`` is a stable code (docs/ledger.md lists them)."""

    kind: str
    detail: str
    index: int | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "detail": self.detail}
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass(frozen=True)
class Checkpoint:
    """A verified C2SP checkpoint."""

    origin: str
    size: int
    root: bytes
    note: str  # the signed note as served
    extensions: tuple[str, ...] = ()


def log_verifier(vkey: str) -> NoteVerifier:
    """The log's note verifier from its verifier key string; raises ``AuditError``."""
    try:
        return NoteVerifier.from_vkey(vkey)
    except MalformedNote as e:
        raise AuditError(f"log verifier key: {e}") from e


def parse_checkpoint(signed: str, vkey: str) -> Checkpoint:
    """Verify ``signed`` with the log's verifier key (origin = key name) and parse it; raises ``AuditError``."""
    verifier = log_verifier(vkey)
    try:
        cp, _ = open_checkpoint(signed, [verifier], origin=verifier.name)
    except (MalformedNote, InvalidNote) as e:
        raise AuditError(f"checkpoint: {e}") from e
    return Checkpoint(cp.origin, cp.size, cp.root, signed, cp.extensions)


@dataclass(frozen=True)
class SeenCheckpoint:
    """A checkpoint verified by an earlier audit (kept in the state file)."""

    size: int
    root: bytes


@dataclass
class Report:
    """What the audit found."""

    origin: str
    size: int
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # findings by kind (exact, even when truncated)
    records: int = 0
    receipts: int = 0
    devices: int = 0
    ledgers_checked: int = 0
    days: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.counts

    def as_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "size": self.size, "clean": self.clean, "counts": dict(sorted(
            self.counts.items())), "records": self.records, "receipts": self.receipts, "devices": self.devices,
            "ledgers_checked": self.ledgers_checked, "days": self.days,
            "findings": [f.as_json() for f in self.findings]}


@dataclass(frozen=True)
class PublishedLedger:
    """A ledger document to check, and where it came from (a file name or URL, for the report)."""

    source: str
    document: Any


class Auditor:
    """One audit of one checkpoint. Feed every bundle in order, then the remaining tiles, then ``finish``."""

    def __init__(self, checkpoint: Checkpoint, vkey: str, cas: Sequence[x509.Certificate],
                 crls: Sequence[x509.CertificateRevocationList] = (), seen: Sequence[SeenCheckpoint] = (),
                 ledgers: Sequence[PublishedLedger] = ()) -> None:
        self.checkpoint = checkpoint
        self.vkey = vkey
        self.verifier = log_verifier(vkey)
        self.cas = list(cas)
        self.crls = list(crls)
        self.checker = EntryChecker(cas, crls)  # learns every birth; re-checks the deferred records at the end
        self.builder = LedgerBuilder()
        self.report = Report(checkpoint.origin, checkpoint.size)
        self.seen = list(seen)
        self.ledgers: list[tuple[PublishedLedger, Any]] = []  # (ledger, its NoteFields) once pre-checked
        self._deferred: list[Deferred] = []
        self._next_bundle = 0
        self._broken = False  # some entries could not be read: no root can be recomputed
        sizes = {checkpoint.size} | {s.size for s in seen if s.size <= checkpoint.size}
        for pl in ledgers:
            fields = self._precheck_ledger(pl)
            if fields is not None:
                self.ledgers.append((pl, fields))
                sizes.add(fields.log_size)
        self.tree = StreamingTree(sizes)
        self._bundles = list(tiles_for(checkpoint.size, -1))
        self._checked_upper: set[tuple[int, int]] = set()
        self._upper = {lv: list(tiles_for(checkpoint.size, lv)) for lv in levels_for(checkpoint.size)[1:]}
        self._upper_next = dict.fromkeys(self._upper, 0)  # per level: the next tile not handed out yet

    # ---- findings --------------------------------------------------------------------------------------

    def find(self, kind: str, detail: str, index: int | None = None) -> None:
        n = self.report.counts.get(kind, 0)
        self.report.counts[kind] = n + 1
        if n < MAX_FINDINGS_PER_KIND:
            self.report.findings.append(Finding(kind, detail, index))

    # ---- what to fetch ---------------------------------------------------------------------------------

    def bundles(self) -> list[Tile]:
        """Entry bundles of the checkpoint's tree, in order; fetch each with the level-0 tile of the same index."""
        return list(self._bundles)

    def upper_tiles_ready(self) -> list[Tile]:
        """Higher-level tiles whose every hash is recomputed by now, each handed out once (fetch, then ``tile``).
        Tiles of a level complete in order, so only the next one of each level is looked at."""
        out = []
        for level, tiles in self._upper.items():
            k = self._upper_next[level]
            while k < len(tiles) and self.tree.tile_hash(level, tiles[k].start + tiles[k].width - 1) is not None:
                out.append(tiles[k])
                k += 1
            self._upper_next[level] = k
        return out

    # ---- feeding ---------------------------------------------------------------------------------------

    def bundle(self, tile: Tile, entries_data: bytes | None, hashes_data: bytes | None,
               error: str | None = None) -> list[bytes]:
        """One entry bundle and the level-0 tile of the same index (``None`` when it could not be fetched).
        Returns the bundle's entries, to be checked (``EntryChecker``) and their outcomes fed to ``outcomes``."""
        if tile != self._bundles[self._next_bundle]:
            raise AuditError(f"bundles must be fed in order: expected {self._bundles[self._next_bundle].path}")
        self._next_bundle += 1
        start = tile.start
        try:
            if entries_data is None:
                raise ValueError(error or "not served")
            entries = parse_bundle(entries_data, tile.width)
        except ValueError as e:
            self.find("bundle_unavailable", f"{tile.path}: {e}", start)
            self._lost(start, tile.width)
            return []
        served: list[bytes] | None = None
        try:
            if hashes_data is None:
                raise ValueError(error or "not served")
            served = split_hashes(hashes_data, tile.width)
        except ValueError as e:
            self.find("tile_unavailable", f"tile/0/{tile.path.split('/', 2)[2]}: {e}", start)
        for k, entry in enumerate(entries):
            index = start + k
            h = leaf_hash(entry)
            if served is not None and served[k] != h:
                self.find("tile_mismatch", f"level-0 tile hash {k} of {tile.path} is not the hash of entry {index}",
                          index)
            self.tree.append(h)
            self.builder.place(index)
        return entries

    def _lost(self, start: int, width: int) -> None:
        """Entries that could not be read: the tree cannot be recomputed past them."""
        for k in range(width):
            self.builder.place(start + k)
        self._broken = True

    def tile(self, tile: Tile, data: bytes | None, error: str | None = None) -> None:
        """A tile at level >= 1, checked against the recomputed subtree roots."""
        self._checked_upper.add((tile.level, tile.index))
        if self._broken:
            return
        try:
            if data is None:
                raise ValueError(error or "not served")
            hashes = split_hashes(data, tile.width)
        except ValueError as e:
            self.find("tile_unavailable", f"{tile.path}: {e}")
            return
        for k, served in enumerate(hashes):
            want = self.tree.tile_hash(tile.level, tile.start + k)
            if want != served:
                self.find("tile_mismatch", f"hash {k} of {tile.path} is not the root of the entries below it")
        if not tile.partial:
            self.tree.forget_below(tile.level, tile.start + TILE_WIDTH)

    # ---- entry outcomes ---------------------------------------------------------------------------------

    def outcomes(self, results: Sequence[Outcome]) -> None:
        """What the checkers said about entries already fed with ``bundle`` (any order)."""
        for r in results:
            if isinstance(r, Verified):
                if r.birth is not None:
                    self.checker.learn([r.birth])
                self.report.records += 1
                self.builder.add_fact(r.fact)
            elif isinstance(r, ReceiptOk):
                self.report.receipts += 1
                self.builder.add_rejected(r.index, r.device_id, r.rejected)
            elif isinstance(r, Deferred):
                self._deferred.append(r)
            else:
                self.find(r.kind, r.detail, r.index)

    # ---- the end ---------------------------------------------------------------------------------------

    def finish(self) -> Report:
        """Check what needs the whole log; returns the report."""
        if self._next_bundle != len(self._bundles):
            raise AuditError(f"{len(self._bundles) - self._next_bundle} bundles were not fed")
        deferred, self._deferred = sorted(self._deferred, key=lambda d: d.index), []
        self.outcomes([self.checker.check_one(d.index, d.data, final=True) for d in deferred])
        for a in self.builder.duplicates():
            self.find(a.kind, a.detail, a.index)
        for a in self.builder.anomalies:
            if a.kind == "bad_gap":  # a verified gap record with an invalid range: signed by the device
                self.find("bad_gap", a.detail, a.index)
        if not self._broken:
            root = self.tree.root()
            if root != self.checkpoint.root:
                self.find("root_mismatch", f"the entries hash to root {base64.b64encode(root).decode()}, the "
                          f"checkpoint says {base64.b64encode(self.checkpoint.root).decode()}")
            for s in self.seen:
                if s.size > self.checkpoint.size:
                    self.find("log_shrank", f"a checkpoint of size {s.size} was seen before; this one has "
                              f"{self.checkpoint.size}")
                elif self.tree.snapshots.get(s.size) != s.root:
                    self.find("inconsistent", f"the checkpoint of size {s.size} seen before has root "
                              f"{base64.b64encode(s.root).decode()}; the log's entries give another")
            for tiles in self._upper.values():  # every upper tile must have been fed
                for t in tiles:
                    if (t.level, t.index) not in self._checked_upper:
                        self.find("tile_unavailable", f"{t.path} was not checked")
        for pl, fields in self.ledgers:
            self._check_ledger(pl, fields)
        self.report.devices = len(self.builder.devices())
        self.report.days = self.builder.days()
        return self.report

    # ---- ledgers ---------------------------------------------------------------------------------------

    def _precheck_ledger(self, pl: PublishedLedger) -> Any:
        try:
            fields, _ = check_document(pl.document)
            open_note(pl.document["note"], [self.verifier])
        except (LedgerError, MalformedNote, InvalidNote) as e:
            self.find("ledger_invalid", f"{pl.source}: {e}")
            return None
        if fields.origin != self.checkpoint.origin:
            self.find("ledger_invalid", f"{pl.source}: origin {fields.origin!r} is not this log's")
            return None
        if fields.log_size > self.checkpoint.size:
            self.find("ledger_beyond_log", f"{pl.source}: computed from {fields.log_size} entries, the checkpoint "
                      f"has {self.checkpoint.size}")
            return None
        return fields

    def _check_ledger(self, pl: PublishedLedger, fields: Any) -> None:
        self.report.ledgers_checked += 1
        label = f"{pl.source} ({fields.period.label})"
        if fields.log_root is None:
            self.find("ledger_unbound", f"{label}: not bound to a log root (computed before the log existed)")
        elif not self._broken and self.tree.snapshots.get(fields.log_size) != fields.log_root:
            self.find("ledger_log_root", f"{label}: states a log root at size {fields.log_size} that the "
                      "entries do not give")
        ledger = self.builder.ledger(fields.period, upto=fields.log_size, params=fields.params)
        _, published = check_document(pl.document)
        mine = {e.device_id: e for e in ledger.entries}
        theirs = {e.device_id: e for e in published}
        for device in sorted(mine.keys() | theirs.keys()):
            a, b = mine.get(device), theirs.get(device)
            if a is None:
                self.find("ledger_entry", f"{label}: {device} is in the ledger but has no records in the log")
            elif b is None:
                self.find("ledger_entry", f"{label}: {device} has records in the log but no ledger entry")
            elif a != b:
                self.find("ledger_entry", f"{label}: {device}: {_differences(a, b)}")
        if ledger_root(ledger) != fields.root:
            self.find("ledger_root", f"{label}: root 0x{fields.root.hex()} is not the recomputed "
                      f"0x{ledger_root(ledger).hex()}")


def _differences(mine: DeviceEntry, theirs: DeviceEntry) -> str:
    names = [f for f in mine.__dataclass_fields__ if getattr(mine, f) != getattr(theirs, f)]
    return ", ".join(f"{n} is {_short(getattr(theirs, n))}, the log gives {_short(getattr(mine, n))}" for n in names)


def _short(v: Any) -> str:
    if isinstance(v, tuple) and v and isinstance(v[0], bytes):
        return "[" + ", ".join(b.hex()[:12] for b in v) + "]"
    return repr(v)[:80]
