"""``fleet sign`` for fleet installers: a folder of CSRs, a progress bar, a report of rejects, a registry."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning import (
    SoftwareSigner,
    build_csr,
    load_crl,
    load_registry,
    verify_device_chain,
)
from provisioning import (
    csr as csr_mod,
)
from provisioning.certs import load_certificates

pytestmark = pytest.mark.integration

EP = [sys.executable, "-m", "provisioning.cli"]
FLEET = "test.fleet"


def ep(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([*EP, *args], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == expect, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def write_csrs(folder: Path, n: int) -> dict[str, SoftwareSigner]:
    """n CSRs made in-process (fast), as a collection share would hold them; returns id → signer."""
    folder.mkdir(parents=True)
    signers: dict[str, SoftwareSigner] = {}
    for i in range(n):
        device_id = f"node-{i:04d}"
        signer = SoftwareSigner.generate()
        (folder / f"{device_id}.csr").write_bytes(csr_mod.csr_pem(build_csr(signer, device_id, FLEET)))
        signers[device_id] = signer
    return signers


def test_fleet_sign_500_csrs_with_progress_and_registry(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ep("ca", "init", "--fleet", FLEET, "--ca-dir", str(ca_dir), "--intermediate")
    kids = {d: s.kid for d, s in write_csrs(tmp_path / "csrs", 500).items()}
    out = tmp_path / "certs"
    res = ep("fleet", "sign", str(tmp_path / "csrs"), "--ca-dir", str(ca_dir), "--out", str(out), "--json")
    assert "signing [" in res.stderr and "500/500" in res.stderr  # the progress bar, on stderr
    report = json.loads(res.stdout)
    assert len(report["signed"]) == 500 and report["rejected"] == []

    reg_path = tmp_path / "registry.json"
    ep("fleet", "export-registry", "--ca-dir", str(ca_dir), "--out", str(reg_path))
    reg = load_registry(reg_path)
    root = x509.load_pem_x509_certificate((ca_dir / "root.crt").read_bytes())
    assert reg.fleet == FLEET
    assert reg.ca_fingerprint.startswith("sha256:") and len(reg.entries) == 500
    assert {e.device_id: e.kid for e in reg.entries} == kids
    assert all(e.status == "active" and e.alg == -9 for e in reg.entries)
    crl = load_crl(ca_dir / "crl.pem")
    now = datetime.now(timezone.utc)
    for e in reg.entries[:: 50]:
        chain = load_certificates((out / f"{e.device_id}.crt").read_bytes())
        der = [c.public_bytes(serialization.Encoding.DER) for c in chain]
        assert verify_device_chain(der[0], der[1:], [root], crl, now) == e.device_id
        assert chain[0].serial_number == e.serial

    # Re-running over the same folder issues nothing new.
    again = json.loads(ep("fleet", "sign", str(tmp_path / "csrs"), "--ca-dir", str(ca_dir), "--out", str(out),
                          "--json", "--no-progress").stdout)
    assert len(again["skipped"]) == 500 and again["signed"] == []


def test_fleet_sign_reports_rejects_and_signs_the_rest(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ep("ca", "init", "--fleet", FLEET, "--ca-dir", str(ca_dir))
    folder = tmp_path / "csrs"
    signers = write_csrs(folder, 5)
    (folder / "zz-garbage.csr").write_bytes(b"not a csr")
    other = SoftwareSigner.generate()
    (folder / "zz-other-fleet.csr").write_bytes(csr_mod.csr_pem(build_csr(other, "node-9999", "other.fleet")))
    dup = SoftwareSigner.generate()
    (folder / "zz-dup.csr").write_bytes(csr_mod.csr_pem(build_csr(dup, "node-0001", FLEET)))
    # A cloned image: node-0002's key presented again under another id.
    (folder / "zz-clone.csr").write_bytes(csr_mod.csr_pem(build_csr(signers["node-0002"], "node-7777", FLEET)))

    res = ep("fleet", "sign", str(folder), "--ca-dir", str(ca_dir), expect=3)
    assert "signed 5, already signed 0, rejected 4 of 9" in res.stdout
    for name in ("zz-garbage.csr", "zz-other-fleet.csr", "zz-dup.csr", "zz-clone.csr"):
        assert f"REJECTED {name}" in res.stdout
    report = json.loads((folder / "fleet-sign-report.json").read_text())
    assert {r["reason"] for r in report["rejected"]} == {"bad_csr", "wrong_fleet", "duplicate_id", "key_reuse"}
    assert sorted(p.name for p in folder.glob("*.crt")) == [f"node-{i:04d}.crt" for i in range(5)]


def test_a_second_certificate_needs_reissue(tmp_path: Path) -> None:
    """Round 1: ``fleet sign`` silently issued a second certificate to an already certified device."""
    ca_dir = tmp_path / "ca"
    ep("ca", "init", "--fleet", FLEET, "--ca-dir", str(ca_dir))
    first, second = tmp_path / "round1", tmp_path / "round2"
    write_csrs(first, 3)
    report = json.loads(ep("fleet", "sign", str(first), "--ca-dir", str(ca_dir), "--json", "--no-progress").stdout)
    serials = {s["device_id"]: s["serial"] for s in report["signed"]}
    # New keys for node-0000 (a reflashed or cloned image, or a rotation) and node-0001; node-0002 re-sent as is,
    # its certificate file lost.
    signers = write_csrs(second, 2)
    (second / "node-0002.csr").write_bytes((first / "node-0002.csr").read_bytes())
    before = sorted((ca_dir / "issued").iterdir())
    res = ep("fleet", "sign", str(second), "--ca-dir", str(ca_dir), "--json", "--no-progress", expect=3)
    report = json.loads(res.stdout)
    assert report["signed"] == [] and report["reissued"] == []
    assert {r["file"]: r["reason"] for r in report["rejected"]} == {"node-0000.csr": "already_certified",
                                                                     "node-0001.csr": "already_certified"}
    assert all(serials[r["file"][:-4]] in r["error"] for r in report["rejected"])  # names the certificate held
    (skipped,) = report["skipped"]
    assert skipped["device_id"] == "node-0002" and skipped["serial"] == serials["node-0002"]
    assert x509.load_pem_x509_certificate((second / "node-0002.crt").read_bytes()).serial_number == \
        int(serials["node-0002"], 16)  # the certificate it already had, nothing issued
    assert sorted((ca_dir / "issued").iterdir()) == before
    human = ep("fleet", "sign", str(second), "--ca-dir", str(ca_dir), "--no-progress", expect=3).stdout
    assert "REJECTED node-0000.csr: [already_certified]" in human and "--reissue" in human

    report = json.loads(ep("fleet", "sign", str(second), "--ca-dir", str(ca_dir), "--json", "--no-progress",
                           "--reissue").stdout)
    assert {r["device_id"]: r["previous_serials"] for r in report["reissued"]} == {
        "node-0000": [serials["node-0000"]], "node-0001": [serials["node-0001"]]}
    assert {r["device_id"] for r in report["signed"]} == {"node-0000", "node-0001"}
    for d in ("node-0000", "node-0001"):
        leaf = x509.load_pem_x509_certificate((second / f"{d}.crt").read_bytes())
        assert leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.
                                              SubjectPublicKeyInfo) == signers[d].public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    human = ep("fleet", "sign", str(second), "--ca-dir", str(ca_dir), "--no-progress").stdout
    assert "already signed 3" in human  # both keys of a rotated device are valid now: a re-run is quiet

    # ca sign follows the same rule
    third = tmp_path / "round3"
    write_csrs(third, 1)
    res = ep("ca", "sign", str(third / "node-0000.csr"), "--ca-dir", str(ca_dir), "--json", expect=2)
    assert json.loads(res.stdout)["reason"] == "already_certified"
    signed = json.loads(ep("ca", "sign", str(third / "node-0000.csr"), "--ca-dir", str(ca_dir), "--json",
                           "--reissue").stdout)
    assert signed["issued"] and len(signed["previous_serials"]) == 2
    again = json.loads(ep("ca", "sign", str(third / "node-0000.csr"), "--ca-dir", str(ca_dir), "--json").stdout)
    assert not again["issued"] and again["serial"] == signed["serial"]
