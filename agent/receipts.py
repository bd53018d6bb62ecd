"""Receipts on the agent: verify before anything is deleted, and keep the latest valid one on disk.

The I/O shell around ``provisioning.chain.verify_receipt`` (signature, x5chain to the fleet CA, aggregator
role, CRL, device id; RECEIPT-SPEC / docs/envelope.md). The ordering rules (stale, duplicate, future epoch)
are the delivery core's (``agent.delivery``). Trust anchors: ``[receipts] ca_file`` (default
``mqtt.ca_file``, the fleet CA that also verifies the broker) and the optional ``[receipts] crl_file``,
re-read when its mtime changes (``edge-provision ca revoke`` rewrites it).

The latest valid receipt is written atomically (``provisioning.atomic_write``) to ``[receipts] path``
(default ``receipt.cose`` next to the outbox): the device's proof that the aggregator took its data, shown
by ``edge-agent status``, and the floor below which a replayed older receipt is stale after a restart.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from typing import Any

from agent.delivery import ReceiptVerified

log = logging.getLogger(__name__)

__all__ = ["MAX_RECEIPT_BYTES", "ReceiptChecker", "ReceiptRefused", "receipt_doc"]

MAX_RECEIPT_BYTES = 64 * 1024  # a receipt with a chain and a log proof is a few KiB


class ReceiptRefused(Exception):
    """A message on the ack topic that is not a valid receipt for this device; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ReceiptChecker:
    """Verifies receipts for ``device_id`` against the fleet CA (and CRL); keeps the latest valid one."""

    def __init__(self, device_id: str, ca_file: str | None, crl_file: str | None, path: str) -> None:
        self.device_id = device_id
        self.ca_file = ca_file
        self.crl_file = crl_file
        self.path = path
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

    def check(self, data: bytes, now: float, wall: float | None = None) -> ReceiptVerified:
        """The verified receipt as a delivery event (``now`` monotonic); raises ``ReceiptRefused``."""
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
        return ReceiptVerified(now=now, epoch=int(r.epoch), settled=int(r.settled), time_ms=int(r.time_ms),
                               rejected=tuple((int(s), str(reason)) for s, reason in r.rejected),
                               birth=bool(r.birth), signer=str(r.agg), data=bytes(data))

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
            return self.check(data, now)
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

