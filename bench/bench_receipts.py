"""R1-R3: what signed receipts cost (issue 10: at most 10 % of B8, nothing measurable on B2).

R1 - sealing one receipt on the aggregator (``envelope.seal_receipt`` with the aggregator's P-256 key and its
certificate chain in the x5chain) against a raw P-256 sign of the same bytes' size.
R2 - checking one receipt on the agent (``agent.receipts.ReceiptChecker.check``: COSE signature, chain to the
fleet CA, aggregator role, CRL, device id) against a raw P-256 verify. The agent verifies every receipt it
receives (one per ``ack_interval_ms`` per device while records flow), so this is the device's cost of trust.
R3 - B8.2 (one ``AggregatorService`` end to end on SQLite) with an ``[identity]`` (receipts signed and
published) over the same run without one; goal ≥ 0.90.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import fmt, median, row, spread, standalone_main

R3_GOAL = 0.90


def _loop(fn: Any, seconds: float) -> float:
    """Calls/s of ``fn()`` over about ``seconds``."""
    for _ in range(20):
        fn()
    n, t0 = 0, time.perf_counter()
    while (t := time.perf_counter()) - t0 < seconds:
        for _ in range(50):
            fn()
        n += 50
    return n / (t - t0)


def seal_verify(seconds: float) -> dict[str, float]:
    """Receipts sealed/s and checked/s, and raw P-256 sign/verify per second, in this process."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from agent.receipts import ReceiptChecker
    from envelope import Receipt
    from envelope.receipt import seal_receipt
    from tests.support.pki import make_fleet
    from tests.support.receipts import chain_der

    with tempfile.TemporaryDirectory(prefix="bench-receipts-") as d:
        tmp = Path(d)
        fleet = make_fleet(tmp, devices=["bench-dev"], aggregators=["bench-agg"])
        agg = fleet.aggregators["bench-agg"]
        signer, chain = agg.signer(), chain_der(agg.cert)
        checker = ReceiptChecker("bench-dev", str(fleet.ca_cert), str(fleet.crl), str(tmp / "receipt.cbor"))
        settled = [0]

        def receipt() -> Receipt:
            settled[0] += 1
            return Receipt("bench-agg", "bench-dev", 1, settled[0], int(time.time() * 1000))

        data = seal_receipt(signer, chain, receipt())
        now = time.monotonic()
        checker.check(data, now)  # a valid receipt, or this raises
        sealed = _loop(lambda: seal_receipt(signer, chain, receipt()), seconds)
        checked = _loop(lambda: checker.check(data, now), seconds)
        key = ec.generate_private_key(ec.SECP256R1())
        msg = data[: min(len(data), 300)]
        sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
        pub = key.public_key()
        raw_sign = _loop(lambda: key.sign(msg, ec.ECDSA(hashes.SHA256())), seconds)
        raw_verify = _loop(lambda: pub.verify(sig, msg, ec.ECDSA(hashes.SHA256())), seconds)
    return {"sealed": sealed, "checked": checked, "raw_sign": raw_sign, "raw_verify": raw_verify,
            "bytes": float(len(data))}


def with_without(n: int) -> tuple[float, float, dict[str, float]]:
    """B8.2 with receipts and without (no [identity]), same records, interleaved: (with, without, breakdown)."""
    import bench.bench_aggregator as b8

    with tempfile.TemporaryDirectory(prefix="bench-r3-") as d:
        tmp = Path(d)
        fleet, devs = b8._fleet(tmp, 4)
        records = b8._records(devs, n)
        on, off = [], []
        per: dict[str, float] = {}
        for _ in range(2):
            rate, per = b8.service_sqlite(records, fleet, tmp)
            on.append(rate)
            off.append(b8.service_sqlite(records, fleet, tmp, identity=False)[0])
    return median(on), median(off), per


def run(quick: bool = False) -> list[dict[str, Any]]:
    sv = [seal_verify(0.5 if quick else 1.5) for _ in range(1 if quick else 3)]
    sealed = median(r["sealed"] for r in sv)
    checked = median(r["checked"] for r in sv)
    raw_sign = median(r["raw_sign"] for r in sv)
    raw_verify = median(r["raw_verify"] for r in sv)
    size = sv[0]["bytes"]
    on, off, per = with_without(4000 if quick else 12000)
    ratio = on / off if off else float("nan")
    return [
        row("R1", "receipt seal (aggregator, P-256, x5chain)", 1e6 / sealed, "µs/receipt",
            baseline=f"raw sign {fmt(1e6 / raw_sign)} µs", ratio=raw_sign / sealed, goal="report",
            note=f"{fmt(sealed)} receipts/s; {size:.0f} bytes; {spread(r['sealed'] for r in sv)} receipts/s"),
        row("R2", "receipt check on the agent (signature, chain, role, CRL, device)", 1e6 / checked, "µs/receipt",
            baseline=f"raw verify {fmt(1e6 / raw_verify)} µs", ratio=raw_verify / checked, goal="report",
            note=f"{fmt(checked)} receipts/s; one per ack interval (100 ms) per device while records flow"),
        row("R3", "B8.2 with receipts / without (same run)", on, "records/s", baseline=f"no [identity] {fmt(off)}/s",
            ratio=ratio, goal=f"ratio ≥ {R3_GOAL}", passed=ratio >= R3_GOAL,
            note=f"receipts sealed: {per.get('receipts', float('nan')):.1f} µs of store-thread CPU per record"),
    ]


def main() -> int:
    standalone_main(run, (__doc__ or "").splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
