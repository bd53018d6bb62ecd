"""Known-answer vectors of the receipt (docs/envelope.md §6): our code reproduces them byte for byte, python-cwt
(an independent COSE implementation) verifies them, and the chain in them verifies to the vector fleet root."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cbor2
import cwt
import pytest
from cryptography import x509

from envelope import encode_receipt_payload, labels, open_receipt, receipt_header, seal_receipt, sig_structure

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_receipt_vectors.py"
_spec = importlib.util.spec_from_file_location("make_receipt_vectors", _TOOL)
assert _spec is not None and _spec.loader is not None
mrv: Any = sys.modules.get("make_receipt_vectors") or importlib.util.module_from_spec(_spec)
sys.modules["make_receipt_vectors"] = mrv
_spec.loader.exec_module(mrv)
VECTOR_DIR: Path = mrv.VECTOR_DIR
PATHS = sorted(VECTOR_DIR.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    import json

    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == mrv.FORMAT
    return doc


@pytest.fixture(params=PATHS, ids=[p.stem for p in PATHS])
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _load(request.param)


def test_committed_files_are_what_the_tool_writes() -> None:
    expected = mrv.outputs()
    assert sorted(p.name for p in VECTOR_DIR.iterdir()) == sorted(expected)
    for name, text in expected.items():
        assert (VECTOR_DIR / name).read_text(encoding="utf-8") == text, name


def test_reseal_reproduces_every_byte(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    receipt = mrv.receipt_from_inputs(inputs["receipt"])
    certs = mrv.certificates()
    chain = [mrv.der(certs[c]) for c in inputs["chain"]]
    assert encode_receipt_payload(receipt).hex() == expected["payload_hex"]
    data = seal_receipt(mrv.signer(), chain, receipt)
    assert data.hex() == expected["receipt_hex"]
    parsed, msg = open_receipt(data)
    assert parsed == receipt
    assert msg.protected.hex() == expected["protected_hex"]
    assert msg.signature.hex() == expected["signature_hex"]
    assert sig_structure(msg.protected, msg.payload).hex() == expected["sig_structure_hex"]
    hdr = receipt_header(msg)
    assert hdr.kid.hex() == expected["kid_hex"] and hdr.alg == labels.ALG_ED25519 and list(hdr.x5chain) == chain


def test_shape_is_tagged_sign1_with_the_profile_header(vector: dict[str, Any]) -> None:
    outer = cbor2.loads(bytes.fromhex(vector["expected"]["receipt_hex"]))
    assert isinstance(outer, cbor2.CBORTag) and outer.tag == 18
    protected, unprotected, payload, signature = outer.value
    assert unprotected == {} and len(signature) == 64
    hdr = cbor2.loads(protected)
    assert set(hdr) == {1, 3, 4, 33}
    assert hdr[3] == "application/vnd.depin-edge.receipt+cbor"
    assert isinstance(hdr[33], bytes if len(vector["inputs"]["chain"]) == 1 else list)
    doc = cbor2.loads(payload)
    assert set(doc) == {"v", "agg", "dev", "epoch", "settled", "rejected", "time_ms", "birth", "log"}


def test_python_cwt_verifies(vector: dict[str, Any]) -> None:
    expected = vector["expected"]
    pem = (VECTOR_DIR / "aggregator-public.pem").read_bytes()
    key = cwt.COSEKey.from_pem(pem, alg="Ed25519", kid=bytes.fromhex(expected["kid_hex"]))
    assert cwt.COSE.new().decode(bytes.fromhex(expected["receipt_hex"]), keys=[key]) == \
        bytes.fromhex(expected["payload_hex"])


def test_python_cwt_rejects_a_changed_payload(vector: dict[str, Any]) -> None:
    expected = vector["expected"]
    key = cwt.COSEKey.from_pem((VECTOR_DIR / "aggregator-public.pem").read_bytes(), alg="Ed25519",
                               kid=bytes.fromhex(expected["kid_hex"]))
    data = bytearray(bytes.fromhex(expected["receipt_hex"]))
    data[len(data) - 64 - 3] ^= 0x01  # last payload byte
    with pytest.raises(cwt.VerifyError):
        cwt.COSE.new().decode(bytes(data), keys=[key])


def test_vector_chain_verifies_to_the_root(vector: dict[str, Any]) -> None:
    from provisioning.chain import verify_receipt

    root = x509.load_pem_x509_certificate((VECTOR_DIR / "root-ca.pem").read_bytes())
    inter = x509.load_pem_x509_certificate((VECTOR_DIR / "intermediate-ca.pem").read_bytes())
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    data = bytes.fromhex(vector["expected"]["receipt_hex"])
    receipt = verify_receipt(data, [root], [], now, mrv.DEVICE, bundle=[inter])
    assert receipt == mrv.receipt_from_inputs(vector["inputs"]["receipt"])
