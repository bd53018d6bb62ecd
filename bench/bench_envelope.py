"""E1–E4: envelope seal and open+verify rates against the raw signature primitive on the same bytes.

Why: sealing runs on the agent's committer thread for every record and verifying on every aggregator
worker; the profile's encoding and checks should cost little next to the signature itself. The record is a
typical result (424 bytes with P-256: model and input digests, a 7-field payload with three scores).
Baselines, measured in the same run: ``SoftwareSigner.sign`` over the record's Sig_structure bytes (the raw
sign loop, with deterministic-ECDSA off as on a device) and ``verify_signature`` over those bytes.
Run: ``.venv/bin/python bench/bench_envelope.py [--quick]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import fmt, median, row, spread, standalone_main  # noqa: E402
from envelope import RecordHeader, open_record, seal, sig_structure, verify_signature  # noqa: E402
from provisioning import SoftwareSigner  # noqa: E402

HEADER = RecordHeader(kind="result", device_id="pump-station-07", stream="vib", epoch=7, seq=20_042,
                      iat=1_767_225_600, capture_ms=1_767_225_599_875, clock_state=1, model_sha256=b"\x6b" * 32,
                      input_sha256=b"\xd4" * 32)
PAYLOAD = {"label": "bearing_fault", "score": 0.9731, "scores": [0.0112, 0.0157, 0.9731],
           "labels": ["normal", "imbalance", "bearing_fault"], "latency_us": 812, "t0_ms": 1_767_225_597_315,
           "n": 128}


def _rate(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def run(quick: bool) -> list[dict[str, Any]]:
    """E1–E4 rows: seal and open+verify for P-256 (ESP256) and Ed25519."""
    n = 2_000 if quick else 10_000
    repeats = 3 if quick else 7
    rows = []
    for i, key_type in enumerate(("p256", "ed25519")):
        signer = SoftwareSigner.generate(key_type)
        pub = signer.public_key()
        record = seal(signer, HEADER, PAYLOAD)
        rec = open_record(record)
        tbs = sig_structure(rec.protected_bytes, rec.payload_bytes)

        def do_seal(s: SoftwareSigner = signer) -> bytes:
            return seal(s, HEADER, PAYLOAD)

        def do_sign(s: SoftwareSigner = signer, data: bytes = tbs) -> bytes:
            return s.sign(data)

        def do_open_verify(data: bytes = record, k: Any = pub) -> None:
            open_record(data).verify(k)

        def do_verify(alg: int = rec.alg, k: Any = pub, data: bytes = tbs, sig: bytes = rec.signature) -> None:
            verify_signature(alg, k, data, sig)

        seals, signs, opens, verifies = [], [], [], []
        for _ in range(repeats):  # interleaved so load changes hit both sides alike
            seals.append(_rate(do_seal, n))
            signs.append(_rate(do_sign, n))
            opens.append(_rate(do_open_verify, n))
            verifies.append(_rate(do_verify, n))
        label = "P-256 ESP256" if key_type == "p256" else "Ed25519"
        for j, (what, values, bases, base_name) in enumerate((
            ("seal", seals, signs, "raw sign"), ("open+verify", opens, verifies, "raw verify"),
        )):
            value, base = median(values), median(bases)
            rows.append(row(
                f"E{2 * i + j + 1}", f"envelope {what} records/s, {label}", value, "records/s",
                baseline=f"{base_name} {fmt(base)}/s", ratio=value / base, goal="report",
                note=f"{spread(values)}; {1e6 / value:.1f} µs vs {1e6 / base:.1f} µs per record; "
                     f"{len(record)} bytes",
            ))
    return rows


def main() -> None:
    standalone_main(run, (__doc__ or "").splitlines()[0])


if __name__ == "__main__":
    main()
