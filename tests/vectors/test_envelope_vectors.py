"""Known-answer vectors of the envelope profile (docs/envelope.md): our code must reproduce them byte for byte,
verify them, and an independent COSE implementation (python-cwt) must verify them too."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import cbor2
import cwt
import pytest
from cryptography.hazmat.primitives import serialization

from envelope import (
    EnvelopeError,
    InvalidSignature,
    encode_payload,
    kid_for,
    labels,
    open_record,
    seal,
    sig_structure,
)

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_envelope_vectors.py"
_spec = importlib.util.spec_from_file_location("make_envelope_vectors", _TOOL)
assert _spec is not None and _spec.loader is not None
mev: Any = sys.modules.get("make_envelope_vectors") or importlib.util.module_from_spec(_spec)
sys.modules["make_envelope_vectors"] = mev  # dataclasses look their module up there
_spec.loader.exec_module(mev)  # tools/ is not a package: load the generator by path
VECTOR_DIR: Path = mev.VECTOR_DIR
header_from_inputs = mev.header_from_inputs
load_private_key = mev.load_private_key
load_vector = mev.load_vector
render = mev.render
signer_for = mev.signer_for
specs = mev.specs
vector_paths = mev.vector_paths
build = mev.build

PATHS = vector_paths()
CWT_ALG = {labels.ALG_ESP256: "ESP256", labels.ALG_ES256: "ES256", labels.ALG_ED25519: "Ed25519"}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.fixture(params=PATHS, ids=_ids(PATHS))
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    doc: dict[str, Any] = load_vector(request.param)
    return doc


def _public_pem(doc: dict[str, Any]) -> bytes:
    key = load_private_key(doc["inputs"]["key"])
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_every_spec_has_a_committed_vector() -> None:
    assert sorted(p.stem for p in PATHS) == sorted(s.name for s in specs())
    kinds = {load_vector(p)["inputs"]["header"]["kind"] for p in PATHS}
    assert kinds >= {"result", "status", "telemetry", "gap"}
    algs = {load_vector(p)["inputs"]["alg"] for p in PATHS}
    assert algs == {labels.ALG_ESP256, labels.ALG_ES256, labels.ALG_ED25519}


def test_committed_files_are_what_the_tool_writes() -> None:
    for spec in specs():
        assert (VECTOR_DIR / f"{spec.name}.json").read_text(encoding="utf-8") == render(build(spec)), spec.name


def test_reseal_reproduces_every_byte(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    signer = signer_for(inputs["key"], inputs["alg"])
    header = header_from_inputs(inputs)
    assert signer.kid.hex() == expected["kid_hex"] == kid_for(signer.public_key()).hex()
    payload_bytes = encode_payload(inputs["payload"])
    assert payload_bytes.hex() == expected["payload_hex"]
    record = seal(signer, header, inputs["payload"])
    assert record.hex() == expected["record_hex"]
    rec = open_record(record)
    assert rec.protected_bytes.hex() == expected["protected_hex"]
    assert rec.signature.hex() == expected["signature_hex"]
    assert sig_structure(rec.protected_bytes, rec.payload_bytes).hex() == expected["sig_structure_hex"]
    # Sealing pre-encoded payload bytes gives the same record.
    assert seal(signer, header, payload_bytes) == record


def test_open_returns_the_inputs_and_verifies(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    h = inputs["header"]
    rec = open_record(bytes.fromhex(expected["record_hex"]))
    assert (rec.kind, rec.device_id, rec.stream, rec.epoch, rec.seq, rec.iat, rec.capture_ms, rec.clock_state) == (
        h["kind"], h["device_id"], h["stream"], h["epoch"], h["seq"], h["iat"], h["capture_ms"], h["clock_state"])
    assert rec.alg == inputs["alg"]
    assert rec.kid.hex() == expected["kid_hex"]
    assert (rec.model_sha256.hex() if rec.model_sha256 else None) == h["model_sha256"]
    assert (rec.input_sha256.hex() if rec.input_sha256 else None) == h["input_sha256"]
    assert rec.x5chain == header_from_inputs(inputs).x5chain
    assert rec.payload() == inputs["payload"]
    rec.verify(load_private_key(inputs["key"]).public_key())


def test_record_shape_is_tagged_sign1_with_empty_unprotected(vector: dict[str, Any]) -> None:
    outer = cbor2.loads(bytes.fromhex(vector["expected"]["record_hex"]))
    assert isinstance(outer, cbor2.CBORTag) and outer.tag == 18
    protected, unprotected, _payload, signature = outer.value
    assert unprotected == {}
    assert len(signature) == 64
    hdr = cbor2.loads(protected)
    assert hdr[labels.ALG] == vector["inputs"]["alg"]
    assert hdr[labels.CWT_CLAIMS] == {2: vector["inputs"]["header"]["device_id"], 6: vector["inputs"]["header"]["iat"]}
    if vector["inputs"]["x5chain"]:
        assert isinstance(hdr[labels.X5CHAIN], bytes)  # one certificate: a bare bstr (RFC 9360)
    else:
        assert labels.X5CHAIN not in hdr


def test_python_cwt_verifies(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    # cwt 3.x knows the fully-specified ids: "ESP256" (-9) and "Ed25519" (-19), as well as "ES256" (-7).
    key = cwt.COSEKey.from_pem(_public_pem(vector), alg=CWT_ALG[inputs["alg"]], kid=bytes.fromhex(expected["kid_hex"]))
    payload = cwt.COSE.new().decode(bytes.fromhex(expected["record_hex"]), keys=[key])
    assert payload == bytes.fromhex(expected["payload_hex"])


def test_python_cwt_rejects_a_changed_payload(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    key = cwt.COSEKey.from_pem(_public_pem(vector), alg=CWT_ALG[inputs["alg"]], kid=bytes.fromhex(expected["kid_hex"]))
    data = bytearray(bytes.fromhex(expected["record_hex"]))
    data[len(data) - 64 - 3] ^= 0x01  # last payload byte (signature is 64 bytes behind a 2-byte head)
    with pytest.raises(cwt.VerifyError):
        cwt.COSE.new().decode(bytes(data), keys=[key])


def _rejected(data: bytes, public_key: Any) -> EnvelopeError:
    try:
        open_record(data).verify(public_key)
    except EnvelopeError as e:
        return e
    raise AssertionError(f"accepted a changed record: {data.hex()}")


def test_every_single_bit_flip_is_rejected(vector: dict[str, Any]) -> None:
    record = bytes.fromhex(vector["expected"]["record_hex"])
    public_key = load_private_key(vector["inputs"]["key"]).public_key()
    for i in range(len(record)):
        for bit in range(8):
            changed = bytearray(record)
            changed[i] ^= 1 << bit
            _rejected(bytes(changed), public_key)


EXHAUSTIVE = [VECTOR_DIR / "gap-p256.json", VECTOR_DIR / "gap-ed25519.json"]


@pytest.mark.slow
@pytest.mark.parametrize("path", EXHAUSTIVE, ids=_ids(EXHAUSTIVE))
def test_every_single_byte_change_is_rejected(path: Path) -> None:
    """All 255 other values at every position of the two smallest vectors (one per algorithm family):
    rejected by open_record or by verify, always with an EnvelopeError. Bit flips cover every vector."""
    vector = load_vector(path)
    record = bytes.fromhex(vector["expected"]["record_hex"])
    public_key = load_private_key(vector["inputs"]["key"]).public_key()
    reasons: set[str] = set()
    for i in range(len(record)):
        for value in range(256):
            if value == record[i]:
                continue
            changed = bytearray(record)
            changed[i] = value
            reasons.add(_rejected(bytes(changed), public_key).reason)
    assert InvalidSignature.reason in reasons


def test_trailing_or_missing_bytes_are_rejected(vector: dict[str, Any]) -> None:
    record = bytes.fromhex(vector["expected"]["record_hex"])
    public_key = load_private_key(vector["inputs"]["key"]).public_key()
    for changed in (record + b"\x00", record + record, record[:-1], record[1:], b"\xd2" + record):
        _rejected(changed, public_key)
