"""PKCS#11 keys in a real SoftHSM2 token: generated inside, never extractable, signing verifiable records.

One SoftHSM2 token directory per test session (``SOFTHSM2_CONF`` is read when the module is initialised);
each test initialises its own token with ``softhsm2-util``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from envelope import RecordHeader, kid_for, labels, open_record, seal
from provisioning import FleetCa, KeyStoreError, build_csr, check_csr, load_registry, open_signer
from provisioning.key_uri import Pkcs11KeyUri, parse_key_uri
from provisioning.pkcs11_key import Pkcs11Signer, generate_pkcs11_key

pytestmark = pytest.mark.integration

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "123456"
EP = [sys.executable, "-m", "provisioning.cli"]

if not os.path.exists(MODULE) or shutil.which("softhsm2-util") is None:
    pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)", allow_module_level=True)


@pytest.fixture(scope="module")
def softhsm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        yield conf
    finally:
        if old is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = old


@pytest.fixture
def token(softhsm_conf: Path) -> str:
    """A freshly initialised token; returns its label."""
    label = "edge-" + uuid.uuid4().hex[:8]
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "654321"],
                   check=True, capture_output=True, env={**os.environ})
    return label


def uri(token: str, obj: str = "device-key") -> str:
    return f"pkcs11:token={token};object={obj}?module-path={MODULE}&pin-value={PIN}"


def header(device: str, seq: int) -> RecordHeader:
    return RecordHeader(kind=labels.KIND_RESULT, device_id=device, stream="vibration", epoch=1, seq=seq,
                        iat=1_700_000_000, capture_ms=1_700_000_000_000, clock_state=1)


def test_key_generated_in_token_signs_records_that_verify_with_exported_key(token: str) -> None:
    parsed = parse_key_uri(uri(token))
    assert isinstance(parsed, Pkcs11KeyUri)
    signer = generate_pkcs11_key(parsed)
    try:
        exported_pem = signer.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
        assert signer.alg == labels.ALG_ESP256
        assert signer.kid == kid_for(signer.public_key())
        records = [seal(signer, header("dev-hsm", seq), {"label": "normal", "score": 0.9}) for seq in (1, 2, 3)]
    finally:
        signer.close()
    public = serialization.load_pem_public_key(exported_pem)
    for i, data in enumerate(records, start=1):
        rec = open_record(data)
        assert rec.seq == i and rec.device_id == "dev-hsm" and rec.kid == kid_for(public)  # type: ignore[arg-type]
        rec.verify(public)  # type: ignore[arg-type]


def test_token_key_cannot_be_extracted(token: str) -> None:
    parsed = parse_key_uri(uri(token))
    assert isinstance(parsed, Pkcs11KeyUri)
    generate_pkcs11_key(parsed).close()
    signer = open_signer(uri(token))
    assert isinstance(signer, Pkcs11Signer)
    try:
        attrs = signer.key_attributes()
        assert attrs == {"extractable": False, "sensitive": True, "never_extractable": True,
                         "always_sensitive": True}
        with pytest.raises(KeyStoreError, match="refused to export"):
            signer.export_private_value()
    finally:
        signer.close()


def test_csr_from_token_key_is_accepted_by_the_ca(token: str, tmp_path: Path) -> None:
    from datetime import datetime, timezone

    parsed = parse_key_uri(uri(token))
    assert isinstance(parsed, Pkcs11KeyUri)
    with generate_pkcs11_key(parsed) as signer:
        csr = build_csr(signer, "dev-hsm", "test.fleet")
        device_id, pub = check_csr(csr, "test.fleet")
        assert device_id == "dev-hsm" and kid_for(pub) == signer.kid
        with FleetCa.init(tmp_path / "ca", "test.fleet", now=datetime.now(timezone.utc)) as ca:
            row, _cert = ca.sign_csr(csr, now=datetime.now(timezone.utc))
            assert row.kid == signer.kid.hex()


def test_refuses_wrong_pin_and_missing_object(token: str) -> None:
    with pytest.raises(KeyStoreError, match="PIN"):
        open_signer(f"pkcs11:token={token};object=device-key?module-path={MODULE}&pin-value=000000")
    with pytest.raises(KeyStoreError, match="expected exactly one"):
        open_signer(uri(token, "nothing-here"))
    with pytest.raises(KeyStoreError, match="no PKCS#11 token labelled"):
        open_signer(uri("no-such-token"))


def test_cli_device_lifecycle_with_pkcs11_key(token: str, tmp_path: Path, softhsm_conf: Path) -> None:
    """device init in the token → fleet CA signs → install-cert → rotate → install → registry kid."""
    env = {**os.environ, "SOFTHSM2_CONF": str(softhsm_conf)}

    def ep(*args: str, expect: int = 0) -> dict:
        res = subprocess.run([*EP, *args, "--json"], capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == expect, res.stderr
        assert "Traceback" not in res.stderr
        return json.loads(res.stdout)

    ca_dir, state = tmp_path / "ca", tmp_path / "state"
    ep("ca", "init", "--fleet", "test.fleet", "--ca-dir", str(ca_dir))
    init = ep("device", "init", "--state-dir", str(state), "--key", uri(token), "--device-id", "dev-hsm",
              "--ca-cert", str(ca_dir / "root.crt"))
    assert init["key_tier"] == "pkcs11"
    ep("ca", "sign", str(state / "device.csr"), "--ca-dir", str(ca_dir), "--out", str(tmp_path / "d.crt"))
    ep("device", "install-cert", str(tmp_path / "d.crt"), "--state-dir", str(state))
    rot = ep("device", "rotate", "--state-dir", str(state))
    assert rot["kid"] != init["kid"]
    # The old key still signs until the new certificate is installed.
    # exit 1: the rotation is pending and there is no agent config at the default path
    assert ep("device", "status", "--state-dir", str(state), expect=1)["kid"] == init["kid"]
    ep("ca", "sign", str(state / "device.next.csr"), "--ca-dir", str(ca_dir), "--out", str(tmp_path / "n.crt"))
    ep("device", "install-cert", str(tmp_path / "n.crt"), "--state-dir", str(state))
    status = ep("device", "status", "--state-dir", str(state), expect=1)  # no agent config at the default path
    assert status["kid"] == rot["kid"] and status["cert"]["matches_key"]
    ep("fleet", "export-registry", "--ca-dir", str(ca_dir), "--out", str(tmp_path / "reg.json"))
    reg = load_registry(tmp_path / "reg.json")
    assert {e.kid.hex() for e in reg.for_device("dev-hsm")} == {init["kid"], rot["kid"]}
    # The rotated key signs records that verify with its registry entry.
    signer = open_signer(uri(token))
    try:
        data = seal(signer, header("dev-hsm", 1), {"ok": True})
    finally:
        signer.close()  # type: ignore[attr-defined]
    rec = open_record(data)
    rec.verify(reg.by_kid()[rec.kid].public_key())
