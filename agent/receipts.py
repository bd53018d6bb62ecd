"""Receipts on the agent: verify before anything is deleted, and keep the latest valid one on disk.

The I/O shell around ``provisioning.chain.verify_receipt`` (signature, x5chain to the fleet CA, aggregator
role, CRL, device id; RECEIPT-SPEC / docs/envelope.md). The ordering rules (stale, duplicate, future epoch)
are the delivery core's (``agent.delivery``). Trust anchors: ``[receipts] ca_file`` (default
``mqtt.ca_file``, the fleet CA that also verifies the broker) and the optional ``[receipts] crl_file``,
re-read when its mtime changes (``edge-provision ca revoke`` rewrites it).

The latest valid receipt is written atomically (``provisioning.atomic_write``) to ``[receipts] path``
(default ``receipt.cose`` next to the outbox): the device's proof that the aggregator took its data, shown
by ``edge-agent status``, and the floor below which a replayed older receipt is stale after a restart.

With ``[receipts] log_vkey`` (the transparency log's verifier key) the device also witnesses the log
(``agent.log_witness``): a receipt whose log position does not check against the record bytes the outbox
still holds and the newest checkpoint verified before deletes nothing. The newest verified checkpoint is
kept beside the receipt (``<path>.checkpoint``); when a proof fails, both signed checkpoints and the receipt
are written to ``<dir>/log-evidence/`` and the state "log inconsistent" stays in status and telemetry for
as long as evidence is there (the operator takes it away once the log operator has answered for it).
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from agent.delivery import ReceiptVerified
from agent.log_witness import INCONSISTENT, OK, Held, Verdict, check_log
from envelope.limits import DEFAULT_LIMITS

log = logging.getLogger(__name__)

__all__ = ["MAX_RECEIPT_BYTES", "Held", "LogWitness", "ReceiptChecker", "ReceiptRefused", "receipt_doc"]

MAX_RECEIPT_BYTES = DEFAULT_LIMITS.max_receipt_bytes  # a receipt with a chain and a log proof is a few KiB


class ReceiptRefused(Exception):
    """A message on the ack topic that is not a valid receipt for this device; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class LogWitness:
    """The shell around ``check_log``: the newest verified checkpoint on disk, evidence files, the state."""

    def __init__(self, vkey: str, receipt_path: str) -> None:
        from envelope import NoteVerifier  # noqa: PLC0415

        self.verifier = NoteVerifier.from_vkey(vkey)
        self.origin = self.verifier.name
        self.checkpoint_path = receipt_path + ".checkpoint"
        self.evidence_dir = os.path.join(os.path.dirname(receipt_path) or ".", "log-evidence")
        self.newest: Any = None  # envelope.Checkpoint
        self.newest_note = ""
        self.counters: dict[str, int] = {}
        self._load()

    def _load(self) -> None:
        from envelope import EnvelopeError  # noqa: PLC0415
        from envelope.note import open_checkpoint  # noqa: PLC0415

        try:
            with open(self.checkpoint_path, encoding="utf-8") as f:
                note = f.read(64 * 1024)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("cannot read the kept checkpoint %s: %s", self.checkpoint_path, e)
            return
        try:
            self.newest, _ = open_checkpoint(note, [self.verifier], origin=self.origin)
            self.newest_note = note
        except EnvelopeError as e:
            log.error("the kept checkpoint %s does not verify under the log key (%s): starting over from the next "
                      "receipt", self.checkpoint_path, e)

    def evidence(self) -> list[str]:
        """Evidence files of a log that failed a proof (newest last)."""
        try:
            return sorted(str(p) for p in Path(self.evidence_dir).glob("log-evidence-*.json"))
        except OSError:
            return []

    def check(self, position: Any, settled: int, held: Held, receipt: bytes) -> Verdict:
        verdict = check_log(position, settled, self.verifier, self.origin, self.newest, held)
        self.counters[verdict.reason or verdict.kind] = self.counters.get(verdict.reason or verdict.kind, 0) + 1
        if verdict.kind == INCONSISTENT:
            self._keep_evidence(verdict, receipt)
        return verdict

    def accept(self, verdict: Verdict) -> None:
        """Keep the receipt's checkpoint as the newest verified one (before the delete it allows)."""
        cp = verdict.checkpoint
        if verdict.kind != OK or cp is None or (self.newest is not None and cp.size <= self.newest.size
                                                and cp.root == self.newest.root):
            return
        from provisioning import atomic_write  # noqa: PLC0415

        atomic_write(self.checkpoint_path, verdict.note.encode(), mode=0o644, durable=True)
        self.newest, self.newest_note = cp, verdict.note

    def _keep_evidence(self, verdict: Verdict, receipt: bytes) -> None:
        from provisioning import atomic_write  # noqa: PLC0415

        ms = int(time.time() * 1000)
        doc = {"time_ms": ms, "reason": verdict.reason, "detail": verdict.detail,
               "previous_checkpoint": self.newest_note, "receipt_checkpoint": verdict.note,
               "receipt_cose_b64": base64.b64encode(receipt).decode(), "log_vkey": self.verifier.vkey()}
        path = os.path.join(self.evidence_dir, f"log-evidence-{ms}.json")
        try:
            os.makedirs(self.evidence_dir, exist_ok=True)
            atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644, durable=True)
        except OSError as e:
            log.error("cannot write log evidence %s: %s", path, e)
        log.error("LOG INCONSISTENT: %s (%s); nothing deleted, evidence in %s", verdict.reason, verdict.detail, path)

    def doc(self) -> dict[str, Any]:
        """The log block of status and telemetry."""
        evidence = self.evidence()
        return {"state": "inconsistent" if evidence else "ok", "size": self.newest.size if self.newest else None,
                "origin": self.origin, "evidence": evidence[-1] if evidence else None,
                "evidence_files": len(evidence), "checks": dict(self.counters)}


class ReceiptChecker:
    """Verifies receipts for ``device_id`` against the fleet CA (and CRL); keeps the latest valid one."""

    def __init__(self, device_id: str, ca_file: str | None, crl_file: str | None, path: str,
                 log_vkey: str | None = None) -> None:
        self.device_id = device_id
        self.ca_file = ca_file
        self.crl_file = crl_file
        self.path = path
        self.witness = LogWitness(log_vkey, path) if log_vkey else None
        self._pending: list[ReceiptVerified] = []
        self._cas: list[Any] = []
        self._crls: list[Any] = []
        self._crl_mtime: float | None = None
        if ca_file:
            from cryptography import x509  # noqa: PLC0415 - only agents that verify receipts pay for it

            with open(ca_file, "rb") as f:
                self._cas = list(x509.load_pem_x509_certificates(f.read()))
        self._reload_crl()

    @property
    def enabled(self) -> bool:
        return bool(self._cas)

    def _reload_crl(self) -> None:
        if not self.crl_file:
            return
        try:
            mtime = os.stat(self.crl_file).st_mtime
        except OSError as e:
            log.error("cannot read receipts CRL %s: %s (keeping the previous one)", self.crl_file, e)
            return
        if mtime == self._crl_mtime:
            return
        from cryptography import x509  # noqa: PLC0415

        with open(self.crl_file, "rb") as f:
            data = f.read()
        try:
            crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
        except ValueError as e:
            log.error("receipts CRL %s is not a CRL: %s (keeping the previous one)", self.crl_file, e)
            return
        self._crls = [crl]
        self._crl_mtime = mtime

    def check(self, data: bytes, now: float, wall: float | None = None, held: Held | None = None) -> ReceiptVerified:
        """The verified receipt as a delivery event (``now`` monotonic); raises ``ReceiptRefused``.

        ``held``: what the outbox holds, for the log check (None: nothing to delete, e.g. at start).
        """
        if not self._cas:
            raise ReceiptRefused("no_trust_anchor", "set [receipts] ca_file or mqtt.ca_file")
        if len(data) > MAX_RECEIPT_BYTES:
            raise ReceiptRefused("oversize", f"{len(data)} bytes > {MAX_RECEIPT_BYTES}")
        from provisioning.chain import InvalidReceipt, verify_receipt  # noqa: PLC0415

        self._reload_crl()
        at = datetime.datetime.fromtimestamp(wall if wall is not None else time.time(), datetime.timezone.utc)
        try:
            r = verify_receipt(data, self._cas, self._crls, at, self.device_id)
        except InvalidReceipt as e:
            raise ReceiptRefused(str(getattr(e, "reason", "invalid")), str(e)) from e
        except Exception as e:  # the verifier promises its typed error only; a bug must not delete anything
            log.exception("receipt verifier raised")
            raise ReceiptRefused("internal_error", type(e).__name__) from e
        verified = ReceiptVerified(now=now, epoch=int(r.epoch), settled=int(r.settled), time_ms=int(r.time_ms),
                                   rejected=tuple((int(s), str(reason)) for s, reason in r.rejected),
                                   birth=bool(r.birth), signer=str(r.agg), data=bytes(data))
        if self.witness is not None:
            verdict = self.witness.check(r.log, int(r.settled), held or Held(None, 0, lambda _s: None), bytes(data))
            if verdict.kind != OK:
                if verdict.reason == "log_unverifiable" and r.log is not None and len(self._pending) < 4:
                    self._pending.append(verified)  # maybe just out of order: tried again after the next one
                raise ReceiptRefused("log_inconsistent" if verdict.kind == INCONSISTENT else verdict.reason,
                                     verdict.detail)
            self.witness.accept(verdict)
        return verified

    def retry_pending(self, now: float, held: Held) -> list[ReceiptVerified]:
        """Receipts refused as unverifiable that check now (the newest checkpoint moved): at most a few."""
        out, pending, self._pending = [], self._pending, []
        for p in pending:
            try:
                out.append(self.check(p.data, now, held=held))
            except ReceiptRefused:
                pass
        return out

    def keep(self, receipt: ReceiptVerified) -> None:
        """Write the receipt's exact bytes atomically and durably (before the delete it allows)."""
        from provisioning import atomic_write  # noqa: PLC0415

        atomic_write(self.path, receipt.data, mode=0o644, durable=True)

    def load_kept(self, now: float) -> ReceiptVerified | None:
        """The receipt kept by an earlier run, re-verified (None when absent or no longer valid)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_RECEIPT_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("cannot read the kept receipt %s: %s", self.path, e)
            return None
        try:
            return self.check(data, now, held=Held(None, 0, lambda _s: None))
        except ReceiptRefused as e:
            log.warning("the kept receipt %s no longer verifies (%s): ignoring it", self.path, e)
            return None


def receipt_doc(r: ReceiptVerified | None) -> dict[str, Any]:
    """What ``edge-agent status`` shows about the latest valid receipt."""
    if r is None:
        return {"signer": None, "epoch": None, "settled": None, "time": None}
    return {"signer": r.signer, "epoch": r.epoch, "settled": r.settled,
            "time": datetime.datetime.fromtimestamp(r.time_ms / 1000, datetime.timezone.utc)
            .isoformat(timespec="seconds")}

