"""Generate the envelope known-answer vectors in ``tests/vectors/envelope/`` (docs/envelope.md §Vectors).

Why: the record format is a public profile, so other implementations need fixed inputs and the exact bytes
they must produce. Every vector is made from committed TEST ONLY keys (``tests/vectors/envelope/keys/``) with
deterministic signatures (RFC 6979 ECDSA, Ed25519), so running this tool again reproduces the files byte for
byte; ``--check`` says whether the committed files still match what the code produces.

    python tools/make_envelope_vectors.py              # (re)write the vector JSON files
    python tools/make_envelope_vectors.py --check      # exit 1 if a committed vector differs
    python tools/make_envelope_vectors.py --init-keys  # one time only: create the test keys and cert

The same functions (``load_vector``, ``signer_for``, ``header_from_inputs``) are used by
``tests/vectors/test_envelope_vectors.py`` to re-seal the vectors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from envelope import RecordHeader, Signer, encode_payload, kid_for, labels, open_record, seal, sig_structure
from envelope.signer import PublicKey
from provisioning import SoftwareSigner

REPO = Path(__file__).resolve().parent.parent
VECTOR_DIR = REPO / "tests" / "vectors" / "envelope"
KEY_DIR = VECTOR_DIR / "keys"
P256_KEY = "keys/p256-test-key.pem"
ED25519_KEY = "keys/ed25519-test-key.pem"
P256_CERT = "keys/p256-test-cert.pem"
ED25519_CERT = "keys/ed25519-test-cert.pem"
FORMAT = "depin-edge-envelope-vector/1"

TEST_ONLY = (
    "TEST ONLY: a published key for the envelope known-answer vectors of depin-edge-agent.\n"
    "Everyone has this private key. Never use it on a device, a CA or anywhere a signature must mean something.\n"
)

# A fixed instant for the vectors (2026-01-01T00:00:00Z) so the records do not depend on the clock.
IAT = 1_767_225_600
DEVICE = "pump-station-07"
MODEL_SHA256 = bytes.fromhex("6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b")
INPUT_SHA256 = bytes.fromhex("d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35")


class Es256Signer:
    """A P-256 signer that names alg -7 (ES256): verifiers accept it, the agent itself signs with -9."""

    def __init__(self, inner: SoftwareSigner) -> None:
        self._inner = inner

    @property
    def alg(self) -> int:
        return labels.ALG_ES256

    @property
    def kid(self) -> bytes:
        return self._inner.kid

    def public_key(self) -> PublicKey:
        return self._inner.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._inner.sign(data)


@dataclass(frozen=True)
class VectorSpec:
    """The inputs of one vector, before any bytes are computed."""

    name: str
    description: str
    key: str
    alg: int
    header: dict[str, Any]
    payload: dict[str, Any]
    x5chain: tuple[str, ...] = ()


def _result_payload() -> dict[str, Any]:
    return {
        "label": "bearing_fault",
        "score": 0.9731,
        "scores": [0.0112, 0.0157, 0.9731],
        "labels": ["normal", "imbalance", "bearing_fault"],
        "latency_us": 812,
        "t0_ms": 1_767_225_597_315,
        "n": 128,
    }


def _header(kind: str, stream: str, seq: int, **extra: Any) -> dict[str, Any]:
    hdr: dict[str, Any] = {
        "kind": kind, "device_id": DEVICE, "stream": stream, "epoch": 7, "seq": seq, "iat": IAT,
        "capture_ms": IAT * 1000 - 125, "clock_state": labels.CLOCK_NTP, "model_sha256": None, "input_sha256": None,
    }
    hdr.update(extra)
    return hdr


def specs() -> list[VectorSpec]:
    """Every vector this tool writes, in a fixed order."""
    result_digests = {"model_sha256": MODEL_SHA256.hex(), "input_sha256": INPUT_SHA256.hex()}
    status_payload = {
        "status": "online", "agent": "0.1.0", "python": "3.11.2", "runtime": "ai-edge-litert 2.3.0",
        "machine": "aarch64", "key_tier": "file", "alg": labels.ALG_ESP256, "epoch": 7, "delivery": "aggregator",
        "models": [{"stream": "vib", "model": "vibration-cnn-int8", "sha256": MODEL_SHA256.hex(),
                    "labels": ["normal", "imbalance", "bearing_fault"]}],
    }
    telemetry_payload = {
        "uptime_s": 86_400,
        "host": {"cpu_percent": 12.5, "load1": 0.42, "rss_bytes": 64_356_352, "mem_available_bytes": 3_221_225_472,
                 "temperatures_c": {"cpu_thermal": 48.3}, "disk_free_bytes": 21_474_836_480},
        "outbox": {"depth": 3, "bytes": 912, "max_bytes": 67_108_864, "last_seq": 20_044, "acked_seq": 20_041,
                   "evicted_records": 0, "evicted_bytes": 0, "refused_oversize": 0, "errors": 0},
        "mqtt": {"connected": True, "reconnects": 1, "disconnects": 0, "published": 20_044},
        "pipelines": {"vib": {"windows": 17_280, "results": 17_280, "errors": 0,
                              "latency_us": {"p50": 805.0, "p99": 1_310.5}, "frame_errors": 2, "lost_frames": 0}},
    }
    gap_payload = {"first": 101, "last": 164, "count": 64, "bytes": 18_944, "reason": "outbox_full"}
    ed_status = dict(status_payload, alg=labels.ALG_ED25519)
    return [
        VectorSpec("result-p256", "inference result, ESP256 (-9), deterministic ECDSA, model and input digests",
                   P256_KEY, labels.ALG_ESP256, _header("result", "vib", 20_042, **result_digests), _result_payload()),
        VectorSpec("status-p256-x5chain", "birth (status) record, ESP256, x5chain with one certificate (a bstr)",
                   P256_KEY, labels.ALG_ESP256, _header("status", "status", 1), status_payload, (P256_CERT,)),
        VectorSpec("telemetry-p256", "telemetry record, ESP256, nested maps, floats and a boolean", P256_KEY,
                   labels.ALG_ESP256, _header("telemetry", "telemetry", 20_045), telemetry_payload),
        VectorSpec("gap-p256", "gap record naming seqs 101..164 evicted by the outbox policy, ESP256", P256_KEY,
                   labels.ALG_ESP256, _header("gap", "gap", 165, clock_state=labels.CLOCK_UNSYNCED), gap_payload),
        VectorSpec("result-p256-es256", "the same result signed under alg -7 (ES256), which verifiers accept",
                   P256_KEY, labels.ALG_ES256, _header("result", "vib", 20_042, **result_digests), _result_payload()),
        VectorSpec("result-ed25519", "inference result, Ed25519 (-19), GNSS clock", ED25519_KEY, labels.ALG_ED25519,
                   _header("result", "vib", 3, clock_state=labels.CLOCK_GNSS, **result_digests), _result_payload()),
        VectorSpec("status-ed25519-x5chain", "birth (status) record, Ed25519, x5chain with one certificate",
                   ED25519_KEY, labels.ALG_ED25519, _header("status", "status", 1), ed_status, (ED25519_CERT,)),
        VectorSpec("gap-ed25519", "gap record, Ed25519", ED25519_KEY, labels.ALG_ED25519,
                   _header("gap", "gap", 165), gap_payload),
    ]


# ----- shared with the vector tests ----------------------------------------------------------------------
def load_private_key(rel: str, base: Path = VECTOR_DIR) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    """A committed TEST ONLY key, by its path relative to the vector folder."""
    key = serialization.load_pem_private_key((base / rel).read_bytes(), password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise TypeError(f"{rel}: expected a P-256 or Ed25519 key, got {type(key).__name__}")
    return key


def signer_for(key_rel: str, alg: int, base: Path = VECTOR_DIR) -> Signer:
    """The deterministic signer a vector names (ES256 vectors wrap the P-256 key under alg -7)."""
    inner = SoftwareSigner(load_private_key(key_rel, base), deterministic=True)
    if alg == labels.ALG_ES256:
        return Es256Signer(inner)
    if alg != inner.alg:
        raise ValueError(f"vector alg {alg} does not fit key {key_rel} (alg {inner.alg})")
    return inner


def cert_der(rel: str, base: Path = VECTOR_DIR) -> bytes:
    """DER of a committed test certificate."""
    return x509.load_pem_x509_certificate((base / rel).read_bytes()).public_bytes(serialization.Encoding.DER)


def header_from_inputs(inputs: dict[str, Any], base: Path = VECTOR_DIR) -> RecordHeader:
    """The ``RecordHeader`` a vector's JSON inputs describe."""
    h = inputs["header"]
    return RecordHeader(
        kind=h["kind"], device_id=h["device_id"], stream=h["stream"], epoch=h["epoch"], seq=h["seq"], iat=h["iat"],
        capture_ms=h["capture_ms"], clock_state=h["clock_state"],
        model_sha256=bytes.fromhex(h["model_sha256"]) if h["model_sha256"] else None,
        input_sha256=bytes.fromhex(h["input_sha256"]) if h["input_sha256"] else None,
        x5chain=tuple(cert_der(c, base) for c in inputs["x5chain"]),
    )


def load_vector(path: Path) -> dict[str, Any]:
    """One vector file as a dict (``inputs`` and ``expected``)."""
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: format {doc.get('format')!r}, expected {FORMAT!r}")
    return doc


def vector_paths(base: Path = VECTOR_DIR) -> list[Path]:
    """The committed vector files, sorted."""
    return sorted(base.glob("*.json"))


# ----- generation --------------------------------------------------------------------------------------
def build(spec: VectorSpec, base: Path = VECTOR_DIR) -> dict[str, Any]:
    """Compute one vector document from its spec."""
    inputs = {"header": spec.header, "payload": spec.payload, "key": spec.key, "alg": spec.alg,
              "x5chain": list(spec.x5chain)}
    signer = signer_for(spec.key, spec.alg, base)
    header = header_from_inputs(inputs, base)
    payload_bytes = encode_payload(spec.payload)
    record = seal(signer, header, spec.payload)
    rec = open_record(record)
    rec.verify(signer.public_key())
    return {
        "format": FORMAT,
        "name": spec.name,
        "description": spec.description,
        "inputs": inputs,
        "expected": {
            "kid_hex": kid_for(signer.public_key()).hex(),
            "protected_hex": rec.protected_bytes.hex(),
            "payload_hex": payload_bytes.hex(),
            "sig_structure_hex": sig_structure(rec.protected_bytes, payload_bytes).hex(),
            "signature_hex": rec.signature.hex(),
            "record_hex": record.hex(),
        },
    }


def render(doc: dict[str, Any]) -> str:
    """The exact text written for a vector (stable key order, trailing newline)."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _self_signed(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "depin-edge TEST ONLY vectors")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(0x7E57).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://test-vectors/device/{cn}")]), critical=False)
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def init_keys(base: Path = VECTOR_DIR) -> None:
    """Create the TEST ONLY keys and self-signed certificates (refuses to replace committed ones)."""
    (base / "keys").mkdir(parents=True, exist_ok=True)
    targets = [base / p for p in (P256_KEY, ED25519_KEY, P256_CERT, ED25519_CERT)]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise SystemExit(f"refusing to replace committed test keys: {', '.join(existing)}")
    keys: list[tuple[str, str, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey]] = [
        (P256_KEY, P256_CERT, ec.generate_private_key(ec.SECP256R1())),
        (ED25519_KEY, ED25519_CERT, ed25519.Ed25519PrivateKey.generate()),
    ]
    for key_rel, cert_rel, key in keys:
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        (base / key_rel).write_bytes(TEST_ONLY.encode() + pem)
        cert = _self_signed(key, DEVICE)
        (base / cert_rel).write_bytes(TEST_ONLY.replace("key", "certificate", 1).encode()
                                      + cert.public_bytes(serialization.Encoding.PEM))


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) the vectors; ``--init-keys`` creates the test keys once."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    ap.add_argument("--init-keys", action="store_true", help="create the TEST ONLY keys (one time)")
    ap.add_argument("--dir", type=Path, default=VECTOR_DIR, help="vector folder (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.init_keys:
        init_keys(args.dir)
    stale = []
    for spec in specs():
        path = args.dir / f"{spec.name}.json"
        text = render(build(spec, args.dir))
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    if stale:
        print(f"stale or missing vectors: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
