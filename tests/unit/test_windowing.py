"""Windowing: sliding windows over sample blocks, independent of how the samples were split into blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources.base import CLOCK_NTP, SampleBlock
from agent.windowing import Window, Windower


def ramp(n: int, channels: int = 3, start: int = 0) -> np.ndarray:
    """Sample i holds i on channel 0 and -i, 1000+i on the others: every sample is recognisable."""
    i = np.arange(start, start + n, dtype=np.float32)[:, None]
    cols = [i, -i, 1000 + i][:channels]
    return np.hstack(cols).astype(np.float32)


def blocks_of(samples: np.ndarray, sizes: list[int], t0_us: int, rate: float) -> list[SampleBlock]:
    """Split ``samples`` into consecutive blocks of ``sizes`` with t0 rounded to whole µs, as sources do."""
    out, i = [], 0
    for n in sizes:
        out.append(SampleBlock(t0_us + round(i * 1e6 / rate), rate, samples[i : i + n]))
        i += n
    if i < len(samples):
        out.append(SampleBlock(t0_us + round(i * 1e6 / rate), rate, samples[i:]))
    return out


def run(w: Windower, blocks: list[SampleBlock]) -> list[Window]:
    return [win for b in blocks for win in w.push(b)]


def test_steady_stream_gives_a_window_every_hop() -> None:
    w = Windower("s", window=128, hop=64, channels=3)
    data = ramp(64 * 20)
    wins = run(w, blocks_of(data, [64] * 20, t0_us=1_700_000_000_000_000, rate=1000.0))
    assert len(wins) == 19 == w.windows
    for k, win in enumerate(wins):
        assert win.stream == "s"
        assert win.data.shape == (128, 3) and win.data.dtype == np.float32 and win.data.flags.c_contiguous
        np.testing.assert_array_equal(win.data, data[k * 64 : k * 64 + 128])
        assert win.t_start_us == 1_700_000_000_000_000 + k * 64_000
        assert win.t_end_us - win.t_start_us == 128_000
    assert w.counters() == {"windows": 19, "gaps": 0, "reorders": 0, "resets": 0, "rate_changes": 0}


def test_windows_are_read_only_copies_that_later_blocks_cannot_change() -> None:
    w = Windower("s", window=4, hop=4, channels=3)
    block = ramp(4)
    (win,) = w.push(SampleBlock(0, 100.0, block))
    block[:] = -7  # the source reuses its buffer
    w.push(SampleBlock(40_000, 100.0, ramp(4, start=4)))
    np.testing.assert_array_equal(win.data, ramp(4))
    with pytest.raises(ValueError):
        win.data[0, 0] = 1.0


def test_hop_larger_than_window_decimates() -> None:
    w = Windower("s", window=3, hop=10, channels=1)
    data = ramp(45, channels=1)
    wins = run(w, blocks_of(data, [7] * 7, t0_us=0, rate=1000.0))
    assert [int(win.data[0, 0]) for win in wins] == [0, 10, 20, 30, 40]
    assert [win.t_start_us for win in wins] == [0, 10_000, 20_000, 30_000, 40_000]


def test_gap_drops_the_partial_window_and_restarts_at_the_block() -> None:
    w = Windower("s", window=4, hop=2, channels=3)
    assert len(w.push(SampleBlock(0, 1000.0, ramp(6)))) == 2
    # 6 samples end at 6000 µs; the next block arrives 3 samples late
    wins = w.push(SampleBlock(9_000, 1000.0, ramp(4, start=100)))
    assert w.gaps == 1
    assert len(wins) == 1
    np.testing.assert_array_equal(wins[0].data, ramp(4, start=100))
    assert wins[0].t_start_us == 9_000


def test_small_jitter_within_tolerance_is_not_a_gap() -> None:
    w = Windower("s", window=4, hop=4, channels=3, gap_tolerance=0.5)
    w.push(SampleBlock(0, 1000.0, ramp(2)))
    wins = w.push(SampleBlock(2_400, 1000.0, ramp(2, start=2)))  # 0.4 periods late
    assert w.gaps == 0 and w.reorders == 0
    np.testing.assert_array_equal(wins[0].data, ramp(4))


def test_block_starting_before_the_previous_end_is_dropped_and_counted() -> None:
    w = Windower("s", window=4, hop=4, channels=3)
    w.push(SampleBlock(0, 1000.0, ramp(3)))
    assert w.push(SampleBlock(1_000, 1000.0, ramp(3, start=50))) == []  # overlaps samples 1..2
    assert w.reorders == 1
    wins = w.push(SampleBlock(3_000, 1000.0, ramp(1, start=3)))
    np.testing.assert_array_equal(wins[0].data, ramp(4))


def test_reset_drops_the_partial_window_even_when_time_goes_back() -> None:
    w = Windower("s", window=4, hop=4, channels=3)
    w.push(SampleBlock(10_000, 1000.0, ramp(3)))
    wins = w.push(SampleBlock(0, 1000.0, ramp(4, start=200), reset=True))
    assert w.resets == 1 and w.reorders == 0
    np.testing.assert_array_equal(wins[0].data, ramp(4, start=200))
    assert wins[0].t_start_us == 0


def test_rate_change_restarts_the_window() -> None:
    w = Windower("s", window=4, hop=4, channels=3)
    w.push(SampleBlock(0, 1000.0, ramp(3)))
    wins = w.push(SampleBlock(3_000, 500.0, ramp(4, start=3)))
    assert w.rate_changes == 1
    assert wins[0].t_start_us == 3_000 and wins[0].t_end_us == 3_000 + 8_000


def test_wrong_channel_count_names_expected_and_got_and_keeps_state() -> None:
    w = Windower("vib", window=4, hop=4, channels=3)
    w.push(SampleBlock(0, 1000.0, ramp(2)))
    with pytest.raises(ValueError, match=r"'vib'.*\(n, 3\).*\(2, 2\)"):
        w.push(SampleBlock(2_000, 1000.0, ramp(2, channels=2)))
    wins = w.push(SampleBlock(2_000, 1000.0, ramp(2, start=2)))
    np.testing.assert_array_equal(wins[0].data, ramp(4))


def test_bad_rate_is_refused() -> None:
    w = Windower("s", window=4, hop=4, channels=3)
    with pytest.raises(ValueError, match="positive sample rate"):
        w.push(SampleBlock(0, 0.0, ramp(2)))


def test_clock_state_comes_from_the_block() -> None:
    w = Windower("s", window=2, hop=2, channels=3)
    (win,) = w.push(SampleBlock(0, 1000.0, ramp(2), clock_state=CLOCK_NTP))
    assert win.clock_state == CLOCK_NTP


def test_drifting_source_clock_is_followed_without_false_gaps() -> None:
    # The MCU runs 100 ppm fast against its nominal 1 kHz: t0 of each block follows the true clock.
    w = Windower("s", window=64, hop=64, channels=3)
    true_period = 1000.0 * (1 - 1e-4)
    wins = []
    for b in range(2000):
        wins += w.push(SampleBlock(round(b * 64 * true_period), 1000.0, ramp(64, start=b * 64)))
    assert w.gaps == 0 and w.reorders == 0 and len(wins) == 2000
    assert abs(wins[-1].t_start_us - round(1999 * 64 * true_period)) <= 2


def test_empty_block_is_ignored() -> None:
    w = Windower("s", window=2, hop=2, channels=3)
    assert w.push(SampleBlock(0, 1000.0, np.empty((0, 3), np.float32))) == []


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="window"):
        Windower("s", window=0, hop=1, channels=3)
    with pytest.raises(ValueError, match="hop"):
        Windower("s", window=1, hop=0, channels=3)


split_sizes = st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    window=st.integers(1, 200),
    hop=st.integers(1, 300),
    n=st.integers(0, 1500),
    sizes_a=split_sizes,
    sizes_b=split_sizes,
    rate=st.sampled_from([1000.0, 800.0, 3200.0, 1.0, 44100.0, 1234.5]),
    t0=st.integers(0, 2**52),
)
def test_windows_do_not_depend_on_how_samples_are_split(
    window: int, hop: int, n: int, sizes_a: list[int], sizes_b: list[int], rate: float, t0: int
) -> None:
    data = ramp(n)
    a = run(Windower("s", window, hop, 3), blocks_of(data, sizes_a, t0, rate))
    b = run(Windower("s", window, hop, 3), blocks_of(data, sizes_b, t0, rate))
    whole = run(Windower("s", window, hop, 3), blocks_of(data, [max(n, 1)], t0, rate))
    expected = 0 if n < window else (n - window) // hop + 1
    assert len(a) == len(b) == len(whole) == expected
    period = 1e6 / rate
    for k, (wa, wb, ww) in enumerate(zip(a, b, whole, strict=True)):
        # window k starts at sample k * hop
        np.testing.assert_array_equal(wa.data, data[k * hop : k * hop + window])
        np.testing.assert_array_equal(wa.data, wb.data)
        np.testing.assert_array_equal(wa.data, ww.data)
        # time stamps follow the rate from the stream start, whatever the split
        assert wa.t_start_us == wb.t_start_us == ww.t_start_us == t0 + round(k * hop * period)
        assert wa.t_end_us == wb.t_end_us == ww.t_end_us == t0 + round((k * hop + window) * period)


@settings(max_examples=100, deadline=None)
@given(
    sizes=split_sizes,
    gap_after=st.integers(1, 20),
    gap_periods=st.integers(1, 50),
)
def test_a_gap_restarts_window_numbering_at_the_first_sample_after_it(
    sizes: list[int], gap_after: int, gap_periods: int
) -> None:
    window, hop, rate = 16, 8, 1000.0
    w = Windower("s", window, hop, 3)
    first = ramp(sum(sizes))
    run(w, blocks_of(first, sizes, 0, rate))
    resume_t = round(len(first) * 1000.0) + gap_periods * 1000
    second = ramp(100, start=10_000)
    wins = run(w, blocks_of(second, [gap_after] * 10, resume_t, rate))
    assert w.gaps == 1
    for k, win in enumerate(wins):
        np.testing.assert_array_equal(win.data, second[k * hop : k * hop + window])
        assert win.t_start_us == resume_t + k * hop * 1000
