"""Simulated and replay sources: what they yield, their truth about fault classes, bad rows, pacing, close."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.errors import SourceError
from agent.settings import ReplaySourceConfig, SimulatedSourceConfig
from agent.sources.base import SampleBlock
from agent.sources.replay import ReplaySource
from agent.sources.simulated import SimulatedSource
from agent.windowing import Windower
from firmware_bridge.signal_model import CLASSES
from tests.support.wait import wait_for

T0 = 1_700_000_000.0  # a fixed "now" for the injected clock


def fixed_clock() -> float:
    return T0


def take(it: object, n: int) -> list[SampleBlock]:
    return list(itertools.islice(it, n))  # type: ignore[call-overload]


# -- simulated -----------------------------------------------------------------------------------------


def test_simulated_cycles_classes_on_sample_time_and_knows_each_blocks_class() -> None:
    cfg = SimulatedSourceConfig(fault="cycle", cycle_s=0.5, realtime=False, block_samples=64, seed=7)
    src = SimulatedSource("vib", cfg, clock=fixed_clock)
    t0_us = round(T0 * 1e6)
    index = 0
    seen = []
    for b in itertools.islice(src.blocks(), 80):  # some blocks cut short at class changes: about 4.4 s
        assert b.samples.shape[1] == 3 and b.samples.dtype == np.float32 and b.rate_hz == 1000.0
        assert b.t0_us == t0_us + index * 1000  # sample time from the start clock
        expected = CLASSES[(index // 500) % 4]
        assert src.current_fault == expected
        assert src.fault_at(b.t0_us) == expected
        assert src.fault_during(b.t0_us, b.t0_us + b.samples.shape[0] * 1000) == expected
        seen.append(expected)
        index += b.samples.shape[0]
    assert set(seen) == set(CLASSES)
    # a block never spans a class change: changes fall exactly at k * 500 samples
    assert src.fault_during(t0_us + 499_000, t0_us + 501_000) is None
    assert src.fault_at(t0_us + 500_000) == "imbalance"
    assert src.fault_at(t0_us - 1) is None
    assert src.counters() == {"blocks": 80, "samples": index}


def test_simulated_fixed_fault_and_switching_it() -> None:
    cfg = SimulatedSourceConfig(fault="imbalance", realtime=False, block_samples=100, seed=1)
    src = SimulatedSource("vib", cfg, clock=fixed_clock)
    it = src.blocks()
    first = take(it, 3)
    assert src.current_fault == "imbalance" and src.fault == "imbalance"
    src.fault = "bearing_fault"
    later = take(it, 30)
    assert src.current_fault == "bearing_fault"
    assert src.fault_at(first[0].t0_us) == "imbalance"
    assert src.fault_at(later[-1].t0_us) == "bearing_fault"
    with pytest.raises(ValueError, match="expected one of"):
        src.fault = "on_fire"


def test_simulated_same_seed_same_samples() -> None:
    cfg = SimulatedSourceConfig(fault="misalignment", realtime=False, block_samples=64, seed=42)
    a = np.concatenate([b.samples for b in take(SimulatedSource("s", cfg, clock=fixed_clock).blocks(), 20)])
    b = np.concatenate([b.samples for b in take(SimulatedSource("s", cfg, clock=fixed_clock).blocks(), 20)])
    np.testing.assert_array_equal(a, b)


def test_simulated_rejects_unknown_fault() -> None:
    with pytest.raises(ValueError, match="fault"):
        SimulatedSource("s", SimulatedSourceConfig(fault="broken"))


def test_simulated_realtime_never_yields_a_block_before_its_samples_exist() -> None:
    cfg = SimulatedSourceConfig(fault="normal", realtime=True, block_samples=16, seed=1)
    src = SimulatedSource("s", cfg)
    for b in take(src.blocks(), 4):
        end_s = (b.t0_us + b.samples.shape[0] * 1000) / 1e6
        assert time.time() >= end_s - 0.002  # t0 is rounded to µs


def consume_in_thread(src: SimulatedSource | ReplaySource) -> tuple[threading.Thread, list[SampleBlock]]:
    got: list[SampleBlock] = []

    def run() -> None:
        for b in src.blocks():
            got.append(b)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, got


def test_simulated_close_interrupts_a_realtime_wait() -> None:
    # one block would take 100 s of wall time: close() must end blocks() long before that
    cfg = SimulatedSourceConfig(fault="normal", realtime=True, block_samples=100_000, seed=1)
    src = SimulatedSource("s", cfg)
    t, got = consume_in_thread(src)
    src.close()
    src.close()  # idempotent
    wait_for(lambda: not t.is_alive(), timeout=5, what="blocks() to end after close()")
    assert got == []


# -- replay --------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "rec.csv") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_replay_without_t_us_uses_rate_and_skips_bad_rows(tmp_path: Path) -> None:
    rows = ["x,y,z"] + [f"{i},{-i},{i * 0.5}" for i in range(10)]
    rows.insert(4, "1,2")  # wrong column count
    rows.insert(6, "a,b,c")  # not numbers
    rows.insert(8, "nan,1,2")  # not finite
    rows.insert(9, "")  # blank line: ignored, not counted
    path = write(tmp_path, "\n".join(rows) + "\n")
    src = ReplaySource("r", ReplaySourceConfig(path=path, rate_hz=100.0, realtime=False), clock=fixed_clock)
    assert src.channel_names == ("x", "y", "z")
    blocks = list(src.blocks())
    data = np.concatenate([b.samples for b in blocks])
    np.testing.assert_array_equal(data[:, 0], np.arange(10, dtype=np.float32))
    np.testing.assert_array_equal(data[:, 2], np.arange(10, dtype=np.float32) * 0.5)
    assert blocks[0].t0_us == round(T0 * 1e6)
    c = src.counters()
    assert c["bad_rows"] == 3 and c["samples"] == 10 and c["passes"] == 1


def test_replay_relative_t_us_derives_rate_and_cuts_at_gaps(tmp_path: Path) -> None:
    times = [*range(0, 10_000, 1_000), *range(15_000, 25_000, 1_000)]  # 5 ms gap after 10 samples
    body = "\n".join(f"{t},{i},0,0" for i, t in enumerate(times))
    path = write(tmp_path, "T_US,a,b,c\n" + body + "\n")
    src = ReplaySource("r", ReplaySourceConfig(path=path, realtime=False), clock=fixed_clock)
    assert src.rate_hz == pytest.approx(1000.0) and src.channels == 3
    blocks = list(src.blocks())
    start = round(T0 * 1e6)
    assert [b.t0_us for b in blocks] == [start, start + 15_000]
    w = Windower("r", window=5, hop=5, channels=3)
    wins = [win for b in blocks for win in w.push(b)]
    assert w.gaps == 1 and len(wins) == 4
    assert wins[2].t_start_us == start + 15_000


def test_replay_absolute_t_us_kept_and_loop_continues_time(tmp_path: Path) -> None:
    base = 1_700_000_000_000_000
    body = "\n".join(f"{base + i * 10_000},{i}" for i in range(5))
    path = write(tmp_path, "t_us,v\n" + body + "\n")
    src = ReplaySource("r", ReplaySourceConfig(path=path, loop=True, realtime=False), clock=fixed_clock)
    blocks = take(src.blocks(), 3)
    assert [b.t0_us for b in blocks] == [base, base + 50_000, base + 100_000]
    assert [b.reset for b in blocks] == [False, True, True]
    assert src.counters()["passes"] >= 2
    w = Windower("r", window=5, hop=5, channels=1)
    wins = [win for b in blocks for win in w.push(b)]
    assert len(wins) == 3 and w.resets == 2 and w.gaps == 0


def test_replay_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="rate_hz is required"):
        ReplaySource("r", ReplaySourceConfig(path=write(tmp_path, "x,y\n1,2\n")))
    with pytest.raises(SourceError, match="cannot read"):
        ReplaySource("r", ReplaySourceConfig(path=str(tmp_path / "missing.csv"), rate_hz=1.0))
    with pytest.raises(SourceError, match="header"):
        ReplaySource("r", ReplaySourceConfig(path=write(tmp_path, "", "empty.csv"), rate_hz=1.0))
    with pytest.raises(SourceError, match="channel column"):
        ReplaySource("r", ReplaySourceConfig(path=write(tmp_path, "t_us\n1\n", "t.csv"), rate_hz=1.0))
    with pytest.raises(SourceError, match="derive the sample rate"):
        ReplaySource("r", ReplaySourceConfig(path=write(tmp_path, "t_us,x\n5,1\n", "one.csv")))


def test_replay_header_only_file_ends_at_once(tmp_path: Path) -> None:
    src = ReplaySource("r", ReplaySourceConfig(path=write(tmp_path, "x,y\n"), rate_hz=10.0, loop=True))
    assert list(src.blocks()) == []


def test_replay_realtime_paces_and_close_interrupts(tmp_path: Path) -> None:
    body = "\n".join(f"{i}" for i in range(200))
    path = write(tmp_path, "v\n" + body + "\n")
    # 200 samples at 1 Hz: the first block is due after 64 s; close() must end the wait at once
    src = ReplaySource("r", ReplaySourceConfig(path=path, rate_hz=1.0, realtime=True))
    t, got = consume_in_thread(src)
    src.close()
    wait_for(lambda: not t.is_alive(), timeout=5, what="replay blocks() to end after close()")
    assert got == []


@pytest.mark.parametrize("rate_hz", [1000.0, 2000.0])
def test_replay_realtime_yields_each_block_when_its_last_sample_is_due(tmp_path: Path, rate_hz: float) -> None:
    """Pacing, checked (the test above only closes a wait): 256 rows in 64-row blocks are spread over 256 rows'
    worth of time, no block arrives before its last sample's time, and none arrives much later."""
    path = write(tmp_path, "v\n" + "\n".join(str(i) for i in range(256)) + "\n")
    src = ReplaySource("r", ReplaySourceConfig(path=path, rate_hz=rate_hz, realtime=True))
    start = time.time()
    arrivals: list[tuple[float, SampleBlock]] = [(time.time(), b) for b in src.blocks()]
    period = 1 / rate_hz
    assert [b.samples.shape[0] for _, b in arrivals] == [64] * 4
    for k, (at, block) in enumerate(arrivals):
        due = start + (k + 1) * 64 * period
        assert at >= due - 0.003, f"block {k} arrived {due - at:.4f} s before its samples existed"
        assert abs(block.t0_us / 1e6 - (start + k * 64 * period)) < 0.05  # stamped with its first sample's time
    total = arrivals[-1][0] - start
    assert 256 * period - 0.003 <= total < 256 * period + 2.0  # paced, not as fast as the file can be read


def test_replay_without_realtime_is_not_paced(tmp_path: Path) -> None:
    path = write(tmp_path, "v\n" + "\n".join(str(i) for i in range(3000)) + "\n")
    src = ReplaySource("r", ReplaySourceConfig(path=path, rate_hz=1.0, realtime=False))
    t0 = time.monotonic()
    blocks = list(src.blocks())
    assert sum(b.samples.shape[0] for b in blocks) == 3000 and time.monotonic() - t0 < 5  # 3000 s of data
