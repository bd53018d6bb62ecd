"""``edge-provision`` as a technician and an operator run it: real subprocesses, real files.

Bad input must give one clear message, a non-zero exit, no traceback, and leave every file as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from envelope import PublicKey, spki_der
from provisioning import SoftwareSigner, load_registry, open_signer

pytestmark = pytest.mark.integration

EP = [sys.executable, "-m", "provisioning.cli"]
FLEET = "test.fleet"


def ep(*args: str, expect: int | None = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([*EP, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert "Traceback" not in res.stderr, res.stderr
    if expect is not None:
        assert res.returncode == expect, f"exit {res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return res


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``roots`` with size, mtime and mode: equal snapshots mean nothing was written."""
    snap: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        if not root.exists():
            continue
        for p in sorted(root.rglob("*")):
            st = p.stat()
            snap[str(p)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return snap


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ca"
    ep("ca", "init", "--fleet", FLEET, "--ca-dir", str(d))
    return d


def device_init(state: Path, ca_dir: Path, device_id: str) -> dict:
    res = ep("device", "init", "--state-dir", str(state), "--device-id", device_id,
             "--ca-cert", str(ca_dir / "root.crt"), "--json")
    return json.loads(res.stdout)


def test_technician_flow_init_sign_install_status(tmp_path: Path, ca_dir: Path) -> None:
    state = tmp_path / "state"
    init = device_init(state, ca_dir, "pump-0042")
    assert init["device_id"] == "pump-0042" and init["fleet"] == FLEET
    key_file = state / "keys" / "device.key"
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert (key_file.parent.stat().st_mode & 0o777) == 0o700
    assert len(init["claim_code"]) == 9 and init["claim_code"][4] == "-"

    signed = json.loads(ep("ca", "sign", str(state / "device.csr"), "--ca-dir", str(ca_dir), "--json").stdout)
    assert signed["claim_code"] == init["claim_code"]  # the operator sees the code the technician read
    cert = Path(signed["cert"])
    assert cert == state / "device.crt"

    ep("device", "install-cert", str(cert), "--state-dir", str(state))
    leaf = x509.load_pem_x509_certificate((state / "keys" / "device.crt").read_bytes())
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pump-0042"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{FLEET}/device/pump-0042"]

    config = tmp_path / "agent.toml"
    config.write_text(
        f'device_id = "pump-0042"\nkey_uri = "file:{key_file}"\n[mqtt]\n'
        f'ca_file = "{state / "fleet-ca.pem"}"\ncert_file = "{state / "keys" / "device.crt"}"\n'
        f'key_file = "{key_file}"\n'
    )
    status = json.loads(ep("device", "status", "--state-dir", str(state), "--config", str(config), "--json").stdout)
    assert status["key_tier"] == "file" and status["key"] == "ok"
    assert status["cert"]["cn"] == "pump-0042" and status["cert"]["matches_key"]
    assert status["ca_fingerprint"].startswith("sha256:")
    agent = status["agent_config"]
    assert {k: agent[k] for k in ("readable", "key_uri", "device_id", "cert_file", "key_file", "ca_file",
                                  "receipts_ca")} == dict.fromkeys(("readable", "key_uri", "device_id", "cert_file",
                                                                    "key_file", "ca_file", "receipts_ca"), True)
    assert status["healthy"], status["problems"]
    signer = open_signer(init["key_uri"])
    assert signer.kid.hex() == init["kid"]


def test_rotate_keeps_old_key_until_new_cert_installed(tmp_path: Path, ca_dir: Path) -> None:
    state = tmp_path / "state"
    init = device_init(state, ca_dir, "dev-rot")
    ep("ca", "sign", str(state / "device.csr"), "--ca-dir", str(ca_dir))
    ep("device", "install-cert", str(state / "device.crt"), "--state-dir", str(state))
    rot = json.loads(ep("device", "rotate", "--state-dir", str(state), "--json").stdout)
    assert open_signer(init["key_uri"]).kid.hex() == init["kid"]  # still the old key
    ep("device", "rotate", "--state-dir", str(state), expect=1)  # one rotation at a time
    ep("ca", "sign", str(state / "device.next.csr"), "--ca-dir", str(ca_dir), "--out", str(tmp_path / "new.crt"))
    res = json.loads(ep("device", "install-cert", str(tmp_path / "new.crt"), "--state-dir", str(state),
                        "--json").stdout)
    assert res["rotated"] is True
    assert open_signer(init["key_uri"]).kid.hex() == rot["kid"]
    assert not (state / "keys" / "device.next.key").exists()


def test_revoke_and_crl(tmp_path: Path, ca_dir: Path) -> None:
    state = tmp_path / "state"
    device_init(state, ca_dir, "dev-rev")
    signed = json.loads(ep("ca", "sign", str(state / "device.csr"), "--ca-dir", str(ca_dir), "--json").stdout)
    rev = json.loads(ep("ca", "revoke", "dev-rev", "--ca-dir", str(ca_dir), "--json").stdout)
    assert rev["revoked"] == [{"device_id": "dev-rev", "serial": signed["serial"]}]
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(signed["serial"], 16)) is not None
    res = ep("ca", "revoke", "dev-rev", "--ca-dir", str(ca_dir), expect=2)
    assert "already revoked" in res.stderr
    short = ep("ca", "crl", "--days", "3", "--ca-dir", str(ca_dir), "--json")
    assert "warning" in short.stderr and "next update is in" in short.stderr
    assert json.loads(short.stdout)["warnings"]
    long = ep("ca", "crl", "--days", "30", "--ca-dir", str(ca_dir))
    assert "warning" not in long.stderr
    reg = tmp_path / "reg.json"
    ep("fleet", "export-registry", "--ca-dir", str(ca_dir), "--out", str(reg))
    [entry] = load_registry(reg).entries
    assert entry.status == "revoked" and entry.serial == int(signed["serial"], 16)


# --- bad input: clear message, non-zero exit, nothing written ---------------------------------------


class _Mismatched:
    """A signer whose CSR signature is made by a different key than the one it names (bad proof)."""

    def __init__(self) -> None:
        self.named, self.other = SoftwareSigner.generate(), SoftwareSigner.generate()
        self.alg, self.kid = self.named.alg, self.named.kid

    def public_key(self) -> PublicKey:
        return self.named.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.other.sign(data)


def _csr_bypassing_checks(signer: _Mismatched, device_id: str) -> bytes:
    """build_csr refuses a CSR whose signature fails, so assemble one with the same DER helpers."""
    from provisioning import csr as csr_mod

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]).public_bytes()
    info = csr_mod._seq(b"\x02\x01\x00", name, spki_der(signer.public_key()), csr_mod._tlv(0xA0, b""))
    raw = signer.sign(info)
    sig = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    der = csr_mod._seq(info, csr_mod._seq(csr_mod._oid("1.2.840.10045.4.3.2")), csr_mod._tlv(0x03, b"\x00" + sig))
    csr = x509.load_der_x509_csr(der)
    assert not csr.is_signature_valid
    return csr.public_bytes(serialization.Encoding.PEM)


def test_csr_with_bad_signature_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    bad = tmp_path / "bad.csr"
    bad.write_bytes(_csr_bypassing_checks(_Mismatched(), "dev-forged"))
    before = snapshot(ca_dir, tmp_path / "out")
    res = ep("ca", "sign", str(bad), "--ca-dir", str(ca_dir), expect=2)
    assert "signature does not verify" in res.stderr
    assert res.stderr.count("\n") == 1
    assert snapshot(ca_dir) == before and not (tmp_path / "bad.crt").exists()


def _raw_csr(device_id: str, fleet: str = FLEET) -> bytes:
    """A CSR made with cryptography directly, with no id checks (CN length limit off)."""
    key = ec.generate_private_key(ec.SECP256R1())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id, _validate=False)]))
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier(f"spiffe://{fleet}/device/{device_id}")]), critical=False)
               .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("bad_id", ["Pump_7", "ab", "-lead", "x" * 65, "dev/../../etc"])
def test_csr_with_malformed_id_is_refused(tmp_path: Path, ca_dir: Path, bad_id: str) -> None:
    f = tmp_path / "bad.csr"
    f.write_bytes(_raw_csr(bad_id))
    before = snapshot(ca_dir)
    res = ep("ca", "sign", str(f), "--ca-dir", str(ca_dir), "--json", expect=2)
    assert "device id must be 3-64 characters" in res.stderr
    assert json.loads(res.stdout)["reason"] == "bad_id"
    assert snapshot(ca_dir) == before and not (tmp_path / "bad.crt").exists()


def test_device_init_with_malformed_id_writes_nothing(tmp_path: Path, ca_dir: Path) -> None:
    state = tmp_path / "state"
    res = ep("device", "init", "--state-dir", str(state), "--device-id", "Bad ID", "--ca-cert",
             str(ca_dir / "root.crt"), expect=2)
    assert "device id must be" in res.stderr and "'Bad ID'" in res.stderr
    assert not state.exists()


def test_csr_for_another_fleet_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    f = tmp_path / "other.csr"
    f.write_bytes(_raw_csr("dev-x", fleet="other.fleet"))
    before = snapshot(ca_dir)
    res = ep("ca", "sign", str(f), "--ca-dir", str(ca_dir), expect=2)
    assert "wrong CA?" in res.stderr and "'other.fleet'" in res.stderr
    assert snapshot(ca_dir) == before


def test_garbage_csr_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    f = tmp_path / "junk.csr"
    f.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n")
    before = snapshot(ca_dir)
    res = ep("ca", "sign", str(f), "--ca-dir", str(ca_dir), expect=2)
    assert "is not a PEM or DER certificate signing request" in res.stderr
    assert snapshot(ca_dir) == before


def test_cert_not_matching_key_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    device_init(a, ca_dir, "dev-a")
    device_init(b, ca_dir, "dev-b")
    ep("ca", "sign", str(b / "device.csr"), "--ca-dir", str(ca_dir))
    before = snapshot(a)
    res = ep("device", "install-cert", str(b / "device.crt"), "--state-dir", str(a), "--json", expect=2)
    assert "but this device's key is" in res.stderr
    assert json.loads(res.stdout)["reason"] == "key_mismatch"
    assert snapshot(a) == before


def test_cert_from_wrong_ca_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    other_ca = tmp_path / "other-ca"
    ep("ca", "init", "--fleet", FLEET, "--ca-dir", str(other_ca))  # same fleet name, different keys
    state = tmp_path / "state"
    device_init(state, ca_dir, "dev-w")
    ep("ca", "sign", str(state / "device.csr"), "--ca-dir", str(other_ca), "--out", str(tmp_path / "w.crt"))
    before = snapshot(state)
    res = ep("device", "install-cert", str(tmp_path / "w.crt"), "--state-dir", str(state), "--json", expect=2)
    assert "does not chain to the fleet CA" in res.stderr
    assert json.loads(res.stdout)["reason"] == "untrusted"
    assert snapshot(state) == before


def test_second_device_init_refused_and_if_missing_is_idempotent(tmp_path: Path, ca_dir: Path) -> None:
    state = tmp_path / "state"
    device_init(state, ca_dir, "dev-once")
    before = snapshot(state)
    res = ep("device", "init", "--state-dir", str(state), "--ca-cert", str(ca_dir / "root.crt"), expect=1)
    assert "already holds a provisioned device" in res.stderr
    ep("device", "init", "--state-dir", str(state), "--if-missing")
    assert snapshot(state) == before


def test_ca_init_refuses_to_overwrite(ca_dir: Path) -> None:
    before = snapshot(ca_dir)
    res = ep("ca", "init", "--fleet", FLEET, "--ca-dir", str(ca_dir), expect=1)
    assert "refusing to overwrite" in res.stderr
    assert snapshot(ca_dir) == before


def test_unusable_inputs_and_usage_errors(tmp_path: Path, ca_dir: Path) -> None:
    res = ep("ca", "sign", str(tmp_path / "missing.csr"), "--ca-dir", str(ca_dir), expect=2)
    assert "cannot read CSR file" in res.stderr
    res = ep("ca", "init", "--fleet", "Bad Fleet!", "--ca-dir", str(tmp_path / "x"), expect=2)
    assert "fleet name must be" in res.stderr and not (tmp_path / "x").exists()
    res = ep("device", "status", "--state-dir", str(tmp_path / "nothing"), expect=2)
    assert "not provisioned yet" in res.stderr
    ep("ca", "frobnicate", expect=2)


def test_device_id_from_board_serial(tmp_path: Path, ca_dir: Path) -> None:
    root = tmp_path / "sysroot"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    (root / "proc/device-tree/serial-number").write_bytes(b"d5f2a1b7c0e93f11\x00")
    state = tmp_path / "state"
    res = json.loads(ep("device", "init", "--state-dir", str(state), "--sysroot", str(root), "--ca-cert",
                        str(ca_dir / "root.crt"), "--json").stdout)
    assert res["device_id"] == "rpi-d5f2a1b7c0e93f11" and res["id_source"] == "raspberry-pi"
    assert (state / "device-id").read_text().strip() == "rpi-d5f2a1b7c0e93f11"


def test_key_file_readable_by_others_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    state = tmp_path / "state"
    init = device_init(state, ca_dir, "dev-perm")
    key = state / "keys" / "device.key"
    key.chmod(0o644)
    from provisioning import UnsafeKeyPermissions

    with pytest.raises(UnsafeKeyPermissions, match=r"mode 0644.*chmod 600"):
        open_signer(init["key_uri"])
    status = json.loads(ep("device", "status", "--state-dir", str(state), "--json", expect=1).stdout)
    assert status["key"] == "unusable" and any("chmod 600" in p for p in status["problems"])
    key.chmod(0o600)
    os.chown(key, 65534, -1)
    with pytest.raises(UnsafeKeyPermissions, match="owned by uid 65534"):
        open_signer(init["key_uri"])
