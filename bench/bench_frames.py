"""B9: frame decoder throughput (frames/s) against a raw CRC-32 loop over the same frame bodies.

The stream is what the simulator sends: SAMPLES frames of 32 int16 3-axis samples of the vibration signal
model (214-byte bodies), every 32nd a HEARTBEAT, fed to ``FrameDecoder.feed`` in 4 KB chunks as the
serial transport reads them. The baseline is ``zlib.crc32`` over each body alone, the one check no decoder
can skip; the ratio says how much COBS, header parsing and message objects cost on top. A second row
reports a worst case: bodies full of zero bytes (one COBS block per byte).
Run: ``.venv/bin/python bench/bench_frames.py [--quick]``.
"""

from __future__ import annotations

import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.common import fmt, median, row, spread, standalone_main  # noqa: E402
from firmware_bridge import FrameDecoder, FrameEncoder, Heartbeat, Samples, VibrationStream, encode_body  # noqa: E402

GOAL = 50_000.0
CHUNK = 4096


def _stream(n: int, zeros: bool = False) -> tuple[bytes, list[bytes]]:
    stream = VibrationStream("bearing_fault", np.random.default_rng(1))
    enc = FrameEncoder()
    wires, bodies = [], []
    for i in range(n):
        if i % 32 == 31:
            msg: Any = Heartbeat(i * 32_000, 0)
        else:
            raw = np.zeros((32, 3), np.int16) if zeros else np.rint(stream.next(32) * 4096).astype(np.int16)
            msg = Samples.from_array(0, i * 32_000, raw)
        bodies.append(encode_body(msg, enc.counter))
        wires.append(enc.encode(msg))
    return b"".join(wires), bodies


def _decode_rate(wire: bytes, n: int) -> float:
    chunks = [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)]
    dec = FrameDecoder()
    t = time.perf_counter()
    got = 0
    for c in chunks:
        got += len(dec.feed(c))
    dt = time.perf_counter() - t
    assert got == n and dec.stats.error_total == 0, (got, dec.stats)
    return n / dt


def _crc_rate(bodies: list[bytes]) -> float:
    crc = zlib.crc32
    t = time.perf_counter()
    for b in bodies:
        crc(b)
    return len(bodies) / (time.perf_counter() - t)


def run(quick: bool) -> list[dict[str, Any]]:
    """B9 rows: typical stream and zero-heavy worst case."""
    n = 20_000 if quick else 100_000
    repeats = 3 if quick else 5
    rows = []
    for label, zeros in (("simulator stream", False), ("worst case: all-zero samples", True)):
        wire, bodies = _stream(n, zeros)
        rates = [_decode_rate(wire, n) for _ in range(repeats)]
        crcs = [_crc_rate(bodies) for _ in range(repeats)]
        value, base = median(rates), median(crcs)
        typical = not zeros
        rows.append(row(
            "B9" if typical else "B9b", f"frame decoder frames/s, {label}", value, "frames/s",
            baseline=f"raw zlib.crc32 {fmt(base)} frames/s", ratio=value / base,
            goal=f"≥ {GOAL:,.0f} frames/s" if typical else "report",
            passed=(value >= GOAL) if typical else None,
            note=f"{spread(rates)}; {len(wire) / n:.0f} wire bytes/frame; {fmt(value * len(wire) / n / 1e6)} MB/s",
        ))
    return rows


def main() -> None:
    standalone_main(run, (__doc__ or "").splitlines()[0])


if __name__ == "__main__":
    main()
