"""Signed receipts for tests: what an aggregator with (or an attacker without) a fleet certificate publishes."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from envelope import LogPosition, Receipt
from envelope.receipt import seal_receipt
from tests.support.pki import DeviceFiles


def chain_der(cert: Path) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(cert.read_bytes())]


def make_receipt(signer_files: DeviceFiles, device_id: str, epoch: int, settled: int, *, agg: str | None = None,
                 time_ms: int | None = None, birth: bool = False,
                 rejected: tuple[tuple[int, str], ...] = (), log: LogPosition | None = None) -> bytes:
    """A receipt sealed with ``signer_files``' key and chain (an aggregator's, or anyone's for a forgery)."""
    r = Receipt(agg or signer_files.device_id, device_id, epoch, settled,
                time_ms if time_ms is not None else int(time.time() * 1000), rejected, birth, log)
    return seal_receipt(signer_files.signer(), chain_der(signer_files.cert), r)
