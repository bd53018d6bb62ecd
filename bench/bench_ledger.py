"""L1–L3: ledger build rate, audit of a log over HTTP, and its figure for 10^6 entries.

Why: the ledger is rebuilt from the whole log for every period, and ``edge-aggregator audit`` re-verifies
every record of the log from its tiles (issue 11 goal: 10^6 entries in under 2 minutes).

- L1 ledger build: ``LedgerBuilder.add`` over N logged records, then the period's ledger, its OpenZeppelin
  tree and the JSON document. Baseline in the same run: ``open_record`` over the same bytes (the decode floor).
- L2 audit: a log of N entries (100 P-256 devices: births, results, a gap record per device) written as
  C2SP tlog-tiles files and served by a separate process; ``run_audit`` with ``--jobs`` = CPUs reads
  checkpoint, tiles and bundles over HTTP and verifies everything. Baseline: the raw P-256 verify rate
  over the same records (the floor of any auditor).
- L3: L2's rate extrapolated to 10^6 entries, or measured when ``--audit-size 1000000`` (the work is linear in
  the entries: one decode, one signature check, one leaf hash each; memory ≈ 40 bytes per record).

Generated logs are cached under the temp dir (keyed by size), so a rerun measures only the audit.
Run: ``.venv/bin/python -m bench.bench_ledger [--quick] [--audit-size N]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import fmt, median, row, spread  # noqa: E402

ORIGIN = "bench.fleet/log"
DEVICES = 100


def _device_records(args: tuple[Path, str, int, int]) -> list[bytes]:
    """One device's records: its birth record, then ``n - 2`` results, a gap record for 2 evicted seqs."""
    pki, device_id, n, t0 = args
    from provisioning import load_file_signer
    from tests.unit.test_agg_support import SimDevice, chain_der

    dev = SimDevice(device_id, load_file_signer(pki / "devices" / device_id / "device.key"),
                    chain_der(pki / "devices" / device_id / "device.crt"))
    out = [dev.birth()[1]]
    for k in range(max(0, n - 2)):
        out.append(dev.record(stream="vib" if k % 3 else "temp", capture_ms=t0 + k * 1000)[1])
    dev.seq += 2
    out.append(dev.gap(dev.seq - 1, dev.seq)[1])
    return out


def make_log(size: int) -> tuple[Path, str, Path]:
    """A log of ``size`` entries as tlog-tiles files (cached): (folder, verifier key, fleet CA file)."""
    from envelope.note import NoteSigner, sign_note
    from provisioning import SoftwareSigner, write_private_key
    from tests.support.pki import make_fleet
    from tests.support.tlog_static import write_log

    base = Path(tempfile.gettempdir()) / f"depin-bench-ledger-{size}"
    done = base / "DONE"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        ids = [f"bench-{i:03d}" for i in range(DEVICES)]
        fleet = make_fleet(base, devices=ids)
        per, extra = divmod(size, DEVICES)
        t0 = int(time.time() * 1000) - size * 1000 // DEVICES
        jobs = [(base / "pki", d, per + (1 if i < extra else 0), t0) for i, d in enumerate(ids)]
        with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
            per_device = pool.map(_device_records, jobs)
        entries = [r for rs in per_device for r in rs[:1]]  # births first, then round-robin
        longest = max(len(rs) for rs in per_device)
        for k in range(1, longest):
            entries += [rs[k] for rs in per_device if k < len(rs)]
        key = SoftwareSigner.generate("ed25519")
        write_private_key(base / "log.key", key.private_key)
        signer = NoteSigner(ORIGIN, key.private_key)  # type: ignore[arg-type]
        write_log(base / "log", entries, lambda text: sign_note(text, [signer]).decode(), ORIGIN)
        (base / "log.vkey").write_text(signer.vkey)
        shutil.copy(fleet.ca_cert, base / "ca.crt")
        done.write_text(str(len(entries)))
    return base / "log", (base / "log.vkey").read_text(), base / "ca.crt"


def _serve(folder: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.tlog_static", str(folder)], cwd=str(ROOT),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError("the tile server did not start")
    return proc, url


def _bundle_entries(folder: Path, size: int) -> list[bytes]:
    from aggregator.audit.tiles import parse_bundle, tiles_for

    out: list[bytes] = []
    for t in tiles_for(size, -1):
        out += parse_bundle((folder / t.path).read_bytes(), t.width)
    return out


def l1_ledger(entries: list[bytes], repeats: int) -> dict[str, Any]:
    from aggregator.ledger import LedgerBuilder, LogBinding, Period, ledger_document, note_text
    from envelope import open_record

    period = Period.parse(time.strftime("%Y-%m-%d", time.gmtime()))
    builds, decodes = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        b = LedgerBuilder().add_all(enumerate(entries))
        ledger = b.ledger(period)
        log = LogBinding(ORIGIN, b.size, bytes(32))
        ledger_document(ledger, log, note_text(ledger, log) + "\n— x AAAA\n")
        builds.append(len(entries) / (time.perf_counter() - t))
        t = time.perf_counter()
        for e in entries:
            open_record(e)
        decodes.append(len(entries) / (time.perf_counter() - t))
    value, base = median(builds), median(decodes)
    return row("L1", f"ledger build entries/s ({len(entries):,} entries, {len(ledger.entries)} devices)", value,
               "entries/s", baseline=f"open_record {fmt(base)}/s", ratio=value / base, goal="report",
               note=f"{spread(builds)}; {1e6 / value:.1f} µs per entry; includes the OpenZeppelin tree and JSON")


def l2_audit(size: int, jobs: int, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from aggregator.audit import run_audit
    from aggregator.trust import load_certificates
    from envelope import open_record

    folder, vkey, ca = make_log(size)
    n = int((folder.parent / "DONE").read_text())
    cas = load_certificates(ca)
    entries = _bundle_entries(folder, n)
    # the verify floor: every record's signature with cryptography, keys taken from the certificates
    sample = [open_record(e) for e in entries[: min(n, 20_000)]]
    keys: dict[bytes, Any] = {}
    from cryptography import x509

    for r in sample:
        if r.x5chain:
            keys[r.kid] = x509.load_der_x509_certificate(r.x5chain[0]).public_key()
    from envelope import sig_structure, verify_signature

    t = time.perf_counter()
    for r in sample:
        verify_signature(r.alg, keys[r.kid], sig_structure(r.protected_bytes, r.payload_bytes), r.signature)
    raw = len(sample) / (time.perf_counter() - t)
    proc, url = _serve(folder)
    rates = []
    try:
        for _ in range(repeats):
            t = time.perf_counter()
            report = run_audit(url, vkey, cas, jobs=jobs)
            rates.append(n / (time.perf_counter() - t))
            if not report.clean:
                raise RuntimeError(f"the bench log did not audit clean: {report.counts}")
    finally:
        proc.kill()
        proc.wait()
    rate = median(rates)
    l2 = row("L2", f"audit entries/s over HTTP ({n:,} entries, jobs {jobs})", rate, "entries/s",
             baseline=f"raw P-256 verify {fmt(raw)}/s (1 core)", ratio=rate / raw, goal="report",
             note=f"{spread(rates)}; checkpoint, tiles, bundles fetched; every signature, chain, tile and the "
                  "tree checked")
    seconds = 1_000_000 / rate
    l3 = row("L3", "audit of 10^6 entries" + (" (measured)" if n >= 1_000_000 else
                                               f" (extrapolated from {n:,})"), seconds, "s",
             goal="< 120 s", passed=seconds < 120,
             note=f"linear in entries; {os.cpu_count()} CPUs, jobs {jobs}")
    return l2, l3


def run(quick: bool, audit_size: int | None = None) -> list[dict[str, Any]]:
    size = audit_size or (5_000 if quick else 100_000)
    jobs = os.cpu_count() or 1
    folder, _, _ = make_log(size)
    n = int((folder.parent / "DONE").read_text())
    entries = _bundle_entries(folder, n)
    rows = [l1_ledger(entries[: min(n, 100_000)], 1 if quick else 3)]
    rows += list(l2_audit(size, jobs, 1 if quick or size >= 500_000 else 3))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small log, one run")
    p.add_argument("--audit-size", type=int, help="entries in the audited log (default 100,000; quick 5,000)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = p.parse_args()
    rows = run(a.quick, a.audit_size)
    if a.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        from bench.run_all import print_table

        print_table(rows)


if __name__ == "__main__":
    main()
