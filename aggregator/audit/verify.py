"""Checking log entries: a device record's signature and certificate chain, or an aggregator's receipt.

Why a separate piece: signature checks are nearly all of an audit's CPU (≈ 60–100 µs per P-256 record), so
an audit of 10^6 entries runs them in worker processes, one bundle per task. ``EntryChecker`` is what each
worker (and the auditor itself, for the last pass) runs: it knows the fleet CA and CRLs, learns device keys
from birth records as it meets them or as it is told about them (``learn``), and answers per entry with a
small picklable outcome. A record whose key no checker knew yet is ``Deferred``; the auditor checks those
again at the end, once every birth record of the log is known.

Keys and chains are checked at the record's signed time (``iat``): the log carries no receipt time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509

from aggregator.errors import Rejected
from aggregator.ledger.compute import RecordFact, record_fact
from aggregator.topics import TopicInfo
from aggregator.trust import TrustStore
from aggregator.verifier import Verifier
from envelope import EnvelopeError, Record, labels, open_receipt, open_record
from provisioning.chain import InvalidReceipt, verify_receipt


@dataclass(frozen=True)
class Verified:
    """A device record that verified; ``birth``: it taught a key (its bytes go to the other checkers)."""

    fact: RecordFact
    birth: bytes | None = None


@dataclass(frozen=True)
class ReceiptOk:
    """A receipt signed by an aggregator of the fleet, and the seqs it names as rejected."""

    index: int
    device_id: str
    rejected: tuple[int, ...]


@dataclass(frozen=True)
class Deferred:
    """A record whose key no birth record seen so far certified: checked again at the end."""

    index: int
    data: bytes


@dataclass(frozen=True)
class Bad:
    """An entry that does not verify: ``kind`` is the finding code."""

    index: int
    kind: str
    detail: str


Outcome = Verified | ReceiptOk | Deferred | Bad


class EntryChecker:
    """Verifies entries against the fleet CA; learns keys from birth records."""

    def __init__(self, cas: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList] = ()) -> None:
        self.cas = list(cas)
        self.crls = list(crls)
        self.verifier = Verifier(TrustStore(self.cas, self.crls))
        self._learned: set[bytes] = set()  # digests of birth records already learned from

    def learn(self, births: Sequence[bytes]) -> None:
        """Learn keys from birth records another checker verified (idempotent)."""
        for data in births:
            digest = hashlib.sha256(data).digest()
            if digest in self._learned:
                continue
            self._learned.add(digest)
            try:
                record = open_record(data, max_bytes=max(len(data), 1))
                self.verifier.verify_record(record, _topic(record), record.iat * 1000)
            except (EnvelopeError, Rejected):  # pragma: no cover - it verified in another checker
                continue

    def check(self, start: int, entries: Sequence[bytes], *, final: bool = False) -> list[Outcome]:
        """Outcomes for entries ``start``, ``start + 1``, ...; ``final``: an unknown key is a finding."""
        return [self.check_one(start + k, data, final=final) for k, data in enumerate(entries)]

    def check_one(self, index: int, data: bytes, *, final: bool = False) -> Outcome:
        try:
            record = open_record(data, max_bytes=max(len(data), 1))
        except EnvelopeError as e:
            return self._receipt(index, data, e)
        try:
            vr = self.verifier.verify_record(record, _topic(record), record.iat * 1000)
        except Rejected as e:
            if e.reason == "unknown_kid" and not final:
                return Deferred(index, data)
            return Bad(index, "record_invalid", f"{record.device_id[:64]} seq {record.seq}: {e.reason}: {e}")
        birth = None
        if vr.learned and record.kind == labels.KIND_STATUS:
            self._learned.add(hashlib.sha256(data).digest())
            birth = data
        return Verified(record_fact(index, record), birth)

    def _receipt(self, index: int, data: bytes, record_error: Exception) -> Outcome:
        try:
            receipt, _ = open_receipt(data, max_bytes=max(len(data), 1))
        except EnvelopeError:
            return Bad(index, "entry_undecodable", f"neither a device record nor a receipt: {record_error}")
        at = datetime.fromtimestamp(receipt.time_ms / 1000, timezone.utc)
        try:
            verify_receipt(data, self.cas, self.crls, at, receipt.dev, max_bytes=max(len(data), 1))
        except InvalidReceipt as e:
            return Bad(index, "receipt_invalid", f"receipt for {receipt.dev}: {e}")
        return ReceiptOk(index, receipt.dev, tuple(seq for seq, _ in receipt.rejected))


def _topic(record: Record) -> TopicInfo:
    """The topic a record would have arrived on (the log keeps no topics; the header names them)."""
    return TopicInfo(record.device_id, record.kind, record.stream)


# ---- worker processes ----------------------------------------------------------------------------------
# Birth records verified anywhere go to one append-only file (uint32 length, bytes); each task names how long
# the file was when it was submitted, and a worker learns what it has not read yet before checking its bundle.

_worker: EntryChecker | None = None
_births_path = ""
_births_read = 0


def worker_init(ca_pem: bytes, crl_ders: Sequence[bytes], births_path: str) -> None:
    """Process-pool initializer: one checker per worker process, reading births from ``births_path``."""
    global _worker, _births_path, _births_read  # noqa: PLW0603 - one per process, as a pool initializer does
    cas = x509.load_pem_x509_certificates(ca_pem) if ca_pem else []
    _worker = EntryChecker(cas, [x509.load_der_x509_crl(d) for d in crl_ders])
    _births_path, _births_read = births_path, 0


def read_births(path: str, start: int, end: int) -> list[bytes]:
    """The birth records stored in ``path`` between byte offsets ``start`` and ``end``."""
    if end <= start:
        return []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    out, pos = [], 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def append_births(path: str, births: Sequence[bytes]) -> int:
    """Append birth records to ``path``; returns its new length."""
    with open(path, "ab") as f:
        for b in births:
            f.write(len(b).to_bytes(4, "big") + b)
        return f.tell()


def worker_check(start: int, entries: Sequence[bytes], births_len: int) -> list[Outcome]:
    """Process-pool task: learn the births recorded so far, then check one bundle."""
    global _births_read  # noqa: PLW0603
    assert _worker is not None, "worker_init did not run"
    _worker.learn(read_births(_births_path, _births_read, births_len))
    _births_read = max(_births_read, births_len)
    return _worker.check(start, entries)
