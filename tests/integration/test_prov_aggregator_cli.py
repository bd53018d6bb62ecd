"""``edge-provision aggregator init | install-cert | status`` and ``ca sign --role aggregator``: real subprocesses,
real files; the identity they make is what the aggregator loads to sign receipts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509

from aggregator.config import IdentitySettings
from aggregator.errors import TrustError
from aggregator.identity import load_identity
from envelope import Receipt, seal_receipt
from provisioning.chain import verify_receipt

pytestmark = pytest.mark.integration
EP = [sys.executable, "-m", "provisioning.cli"]


def ep(*args: str, expect: int = 0) -> dict:
    res = subprocess.run([*EP, *args, "--json"], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == expect, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    doc: dict = json.loads(res.stdout)
    return doc


def test_aggregator_identity_end_to_end(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ep("ca", "init", "--fleet", "test.fleet", "--intermediate", "--ca-dir", str(ca))
    ident = tmp_path / "identity"
    made = ep("aggregator", "init", "--dir", str(ident), "--id", "agg-7", "--ca-cert", str(ca / "root.crt"))
    assert made["fleet"] == "test.fleet" and made["key_tier"] == "file"
    key_file = Path(made["key_uri"].removeprefix("file:"))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    csr = x509.load_pem_x509_csr((ident / "aggregator.csr").read_bytes())
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://test.fleet/aggregator/agg-7"]
    st = ep("aggregator", "status", "--dir", str(ident), expect=1)  # no certificate yet
    assert not st["healthy"] and any("no certificate" in p for p in st["problems"])
    # a device-role signature of an aggregator CSR is refused
    ep("ca", "sign", str(ident / "aggregator.csr"), "--ca-dir", str(ca), "--out", str(tmp_path / "x.crt"), expect=2)
    ep("ca", "sign", str(ident / "aggregator.csr"), "--role", "aggregator", "--ca-dir", str(ca),
       "--out", str(tmp_path / "agg.crt"))
    inst = ep("aggregator", "install-cert", str(tmp_path / "agg.crt"), "--dir", str(ident))
    assert inst["aggregator_id"] == "agg-7"
    st = ep("aggregator", "status", "--dir", str(ident))
    assert st["healthy"] and st["cert"]["spiffe"] == "spiffe://test.fleet/aggregator/agg-7"
    # the aggregator loads it, and a receipt it signs verifies with the root alone
    root = x509.load_pem_x509_certificate((ca / "root.crt").read_bytes())
    now = datetime.now(timezone.utc)
    identity = load_identity(IdentitySettings(made["key_uri"], str(ident / "aggregator.crt")), [root], now)
    assert identity is not None and identity.aggregator_id == "agg-7" and len(identity.chain_der) == 2
    data = seal_receipt(identity.signer, identity.chain_der, Receipt("agg-7", "dev-a", 1, 3, 1))
    assert verify_receipt(data, [root], [], now, "dev-a").settled == 3
    # a key that is not the certificate's is refused at start
    other = tmp_path / "other"
    o = ep("aggregator", "init", "--dir", str(other), "--id", "agg-8", "--fleet", "test.fleet")
    with pytest.raises(TrustError, match="not for the key"):
        load_identity(IdentitySettings(o["key_uri"], str(ident / "aggregator.crt")), [root], now)
    # install-cert refuses another identity's certificate
    ep("aggregator", "install-cert", str(tmp_path / "agg.crt"), "--dir", str(other), "--ca-cert",
       str(ca / "root.crt"), expect=2)
    ep("aggregator", "init", "--dir", str(ident), "--id", "agg-7", "--fleet", "test.fleet", expect=1)  # exists
