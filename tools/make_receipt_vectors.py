"""Generate the receipt known-answer vectors in ``tests/vectors/receipt/`` (docs/envelope.md §6, §8).

Why: a receipt is what a device trusts before it deletes data, so other implementations need fixed inputs
and the exact bytes. The keys are derived from published seeds (TEST ONLY: everyone can derive them): an Ed25519
aggregator key, P-256 CA keys; the certificates have fixed serials and dates and deterministic (RFC 6979)
ECDSA signatures, and Ed25519 is deterministic, so this tool reproduces every byte, certificates included.
``--check`` says whether the committed files still match.

    python tools/make_receipt_vectors.py            # (re)write the vector JSON files
    python tools/make_receipt_vectors.py --check    # exit 1 if a committed vector differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from envelope import LogPosition, Receipt, encode_receipt_payload, kid_for, open_receipt, seal_receipt, sig_structure
from provisioning import SoftwareSigner

REPO = Path(__file__).resolve().parent.parent
VECTOR_DIR = REPO / "tests" / "vectors" / "receipt"
FORMAT = "depin-edge-receipt-vector/1"
FLEET = "test-vectors"
AGGREGATOR = "agg-vectors-01"
DEVICE = "pump-station-07"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
TIME_MS = 1_767_225_600_000 + 4_321  # 2026-01-01T00:00:04.321Z
SEEDS = {  # TEST ONLY: the private key is SHA-256 of the seed text
    "root": "depin-edge receipt vectors TEST ONLY root",
    "intermediate": "depin-edge receipt vectors TEST ONLY intermediate",
    "aggregator": "depin-edge receipt vectors TEST ONLY aggregator",
    "log": "depin-edge receipt vectors TEST ONLY log",
}
LOG_ORIGIN = f"{FLEET}/records"
LOG_PREV_SIZE, LOG_SIZE, LOG_INDEX = 40, 42, 41  # the proven record is leaf 41 of a tree of 42


def log_entries() -> list[bytes]:
    """The vector log's entries (opaque bytes to the log): leaf 41 stands for the device's record 20041."""
    return [b"test-vectors log entry %d" % i for i in range(LOG_INDEX)] + [b"pump-station-07 record seq 20041"]


def log_position() -> tuple[LogPosition, str]:
    """A real log position: checkpoint signed by the TEST ONLY log key, inclusion of leaf 41 in 42, consistency
    from 40; and the signed checkpoint of size 40 (the device's previous one)."""
    from envelope import Checkpoint, NoteSigner
    from envelope.merkle import consistency_proof, inclusion_proof, leaf_hash, root_of
    from envelope.note import sign_checkpoint

    leaves = [leaf_hash(e) for e in log_entries()]

    def node(level: int, index: int) -> bytes:
        return root_of(leaves[index << level:(index + 1) << level])

    log_signer = NoteSigner(LOG_ORIGIN, test_key("log"))
    note = sign_checkpoint(Checkpoint(LOG_ORIGIN, LOG_SIZE, root_of(leaves)), log_signer).decode()
    prev = sign_checkpoint(Checkpoint(LOG_ORIGIN, LOG_PREV_SIZE, root_of(leaves[:LOG_PREV_SIZE])), log_signer).decode()
    pos = LogPosition(note, LOG_INDEX, tuple(inclusion_proof(LOG_INDEX, LOG_SIZE, node)), LOG_PREV_SIZE,
                      tuple(consistency_proof(LOG_PREV_SIZE, LOG_SIZE, node)))
    return pos, prev


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_key(name: str) -> ed25519.Ed25519PrivateKey:
    """The TEST ONLY Ed25519 key ``name`` (the aggregator's)."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(SEEDS[name].encode()).digest())


def test_ca_key(name: str) -> ec.EllipticCurvePrivateKey:
    """The TEST ONLY P-256 key of CA ``name`` (root, intermediate): the Web PKI policy the chain check uses
    (cryptography's verifier) accepts only RSA and NIST-curve CA keys."""
    scalar = int.from_bytes(hashlib.sha256(SEEDS[name].encode()).digest(), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _ku(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey,
          serial: int, *, ca: bool, path_length: int | None, san: str) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, FLEET)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer),
                                x509.NameAttribute(NameOID.ORGANIZATION_NAME, FLEET)]))
        .public_key(key.public_key()).serial_number(serial)
        .not_valid_before(START - timedelta(days=1)).not_valid_after(START + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(_ku(ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=False)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)  # RFC 6979: reproducible


def certificates() -> dict[str, x509.Certificate]:
    """Root, intermediate and aggregator certificates of the vector fleet (deterministic)."""
    root_name, inter_name = f"{FLEET} fleet root CA", f"{FLEET} issuing CA"
    root, inter, agg = test_ca_key("root"), test_ca_key("intermediate"), test_key("aggregator")
    return {
        "root": _cert(root_name, root, root_name, root, 0x7E5701, ca=True, path_length=1, san=f"spiffe://{FLEET}"),
        "intermediate": _cert(inter_name, inter, root_name, root, 0x7E5702, ca=True, path_length=0,
                              san=f"spiffe://{FLEET}"),
        "aggregator": _cert(AGGREGATOR, agg, inter_name, inter, 0x7E5703, ca=False, path_length=None,
                            san=f"spiffe://{FLEET}/aggregator/{AGGREGATOR}"),
    }


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class VectorSpec:
    name: str
    description: str
    receipt: Receipt
    chain: tuple[str, ...] = ("aggregator", "intermediate")


def specs() -> list[VectorSpec]:
    """Every vector this tool writes, in a fixed order."""
    log, _ = log_position()
    return [
        VectorSpec("receipt-settled", "nothing rejected, no birth request, no log position; chain leaf + intermediate",
                   Receipt(AGGREGATOR, DEVICE, 7, 20_041, TIME_MS)),
        VectorSpec("receipt-rejects-birth", "two seqs rejected for good, asks for the birth record; leaf only",
                   Receipt(AGGREGATOR, DEVICE, 7, 164, TIME_MS, ((101, "bad_signature"), (150, "oversize")), True),
                   ("aggregator",)),
        VectorSpec("receipt-nothing-settled", "settled 0 (nothing settled yet in epoch 0), asks for the birth record",
                   Receipt(AGGREGATOR, DEVICE, 0, 0, TIME_MS, (), True)),
        VectorSpec("receipt-log", "with a transparency-log position: record 20041 (the settled one) is leaf 41 of "
                   "the signed checkpoint of size 42, consistent with the device's previous checkpoint of size 40 "
                   "(log key, entries and that checkpoint under 'log')",
                   Receipt(AGGREGATOR, DEVICE, 7, 20_041, TIME_MS, log=log)),
    ]


def receipt_inputs(r: Receipt) -> dict[str, Any]:
    """JSON form of a receipt's fields (bytes as hex)."""
    log = None if r.log is None else {
        "checkpoint": r.log.checkpoint, "index": r.log.index, "inclusion": [h.hex() for h in r.log.inclusion],
        "prev_size": r.log.prev_size, "consistency": [h.hex() for h in r.log.consistency]}
    return {"v": r.v, "agg": r.agg, "dev": r.dev, "epoch": r.epoch, "settled": r.settled,
            "rejected": [[s, why] for s, why in r.rejected], "time_ms": r.time_ms, "birth": r.birth, "log": log}


def receipt_from_inputs(d: dict[str, Any]) -> Receipt:
    """The ``Receipt`` a vector's JSON inputs describe."""
    log = None if d["log"] is None else LogPosition(
        d["log"]["checkpoint"], d["log"]["index"], tuple(bytes.fromhex(h) for h in d["log"]["inclusion"]),
        d["log"]["prev_size"], tuple(bytes.fromhex(h) for h in d["log"]["consistency"]))
    return Receipt(d["agg"], d["dev"], d["epoch"], d["settled"], d["time_ms"],
                   tuple((s, why) for s, why in d["rejected"]), d["birth"], log, d["v"])


def signer() -> SoftwareSigner:
    return SoftwareSigner(test_key("aggregator"))


def build(spec: VectorSpec) -> dict[str, Any]:
    """Compute one vector document from its spec."""
    certs = certificates()
    chain = [der(certs[c]) for c in spec.chain]
    data = seal_receipt(signer(), chain, spec.receipt)
    parsed, msg = open_receipt(data)
    assert parsed == spec.receipt
    extra: dict[str, Any] = {}
    if spec.receipt.log is not None:
        from envelope import NoteSigner

        _, prev = log_position()
        extra["log"] = {"vkey": NoteSigner(LOG_ORIGIN, test_key("log")).vkey, "previous_checkpoint": prev,
                        "entries_hex": [e.hex() for e in log_entries()], "proven_entry": LOG_INDEX}
    return {
        "format": FORMAT, "name": spec.name, "description": spec.description,
        "inputs": {"receipt": receipt_inputs(spec.receipt), "chain": list(spec.chain), "alg": signer().alg},
        "expected": {
            "kid_hex": kid_for(signer().public_key()).hex(),
            "protected_hex": msg.protected.hex(),
            "payload_hex": encode_receipt_payload(spec.receipt).hex(),
            "sig_structure_hex": sig_structure(msg.protected, msg.payload).hex(),
            "signature_hex": msg.signature.hex(),
            "receipt_hex": data.hex(),
        },
        **extra,
    }


def fleet_files() -> dict[str, str]:
    """PEM files of the vector fleet: the root (trust anchor), the chain, and the aggregator's public key."""
    certs = certificates()
    pem = {k: c.public_bytes(serialization.Encoding.PEM).decode() for k, c in certs.items()}
    pub = test_key("aggregator").public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"root-ca.pem": pem["root"], "intermediate-ca.pem": pem["intermediate"],
            "aggregator-cert.pem": pem["aggregator"], "aggregator-public.pem": pub.decode()}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[str, str]:
    """File name -> exact text of everything in the vector folder."""
    files = {f"{s.name}.json": render(build(s)) for s in specs()}
    files.update(fleet_files())
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    ap.add_argument("--dir", type=Path, default=VECTOR_DIR, help="vector folder (default: %(default)s)")
    args = ap.parse_args(argv)
    stale = []
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, text in outputs().items():
        path = args.dir / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale or missing vectors: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
