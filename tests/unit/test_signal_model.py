"""The vibration signal model: shapes, continuity across chunks, the physics each class claims, bad input."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import signal_model as sm
from firmware_bridge.signal_model import CLASSES, MachineParams, VibrationStream, random_params, synthesize

RATE = sm.SAMPLE_RATE_HZ
N = 8192  # 0.12 Hz bins at 1 kHz: harmonics of the shaft are resolved exactly
QUIET = dataclasses.replace(MachineParams(), noise_g_rms=0.0)


def spectrum(x: npt.NDArray[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Amplitude spectrum per channel (mean removed, Hann window) and its frequencies."""
    w = np.hanning(len(x))[:, None]
    mag = np.abs(np.fft.rfft((x - x.mean(axis=0)) * w, axis=0))
    return np.asarray(np.fft.rfftfreq(len(x), 1 / RATE), dtype=np.float64), np.asarray(mag, dtype=np.float64)


def band(freqs: npt.NDArray[np.float64], mag: npt.NDArray[np.float64], hz: float, channel: int) -> float:
    """Spectral amplitude near ``hz`` (±1 Hz), so leakage of a harmonic counts once."""
    sel = np.abs(freqs - hz) <= 1.0
    return float(mag[sel, channel].max())


def kurtosis(v: npt.NDArray[np.float64]) -> float:
    d = v - v.mean()
    return float((d**4).mean() / (d**2).mean() ** 2)


def rms(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return np.asarray((x - x.mean(axis=0)).std(axis=0), dtype=np.float64)


@pytest.mark.parametrize("fault", CLASSES)
def test_synthesize_shape_dtype_and_gravity(fault: str) -> None:
    x = synthesize(fault, 1000, np.random.default_rng(1))
    assert x.shape == (1000, sm.CHANNELS)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    # gravity sits on y (vertical radial): its mean is 1 g, x and z average to about 0
    assert x[:, 1].mean() == pytest.approx(1.0, abs=0.05)
    assert abs(x[:, 0].mean()) < 0.05
    assert abs(x[:, 2].mean()) < 0.05


def test_constants_describe_the_model() -> None:
    assert CLASSES == ("normal", "imbalance", "misalignment", "bearing_fault")
    assert sm.CHANNELS == 3
    assert sm.WINDOW == 128
    assert 2 * MachineParams().highest_hz() < sm.SAMPLE_RATE_HZ


def test_zero_samples_is_an_empty_block() -> None:
    assert synthesize("normal", 0, np.random.default_rng(0)).shape == (0, 3)
    assert VibrationStream("bearing_fault", np.random.default_rng(0)).next(0).shape == (0, 3)


@pytest.mark.parametrize("fault", CLASSES)
def test_stream_chunks_equal_one_synthesize_call(fault: str) -> None:
    chunks = [1, 7, 128, 0, 3000, 20000, 5]  # 20000 crosses the internal block size
    stream = VibrationStream(fault, np.random.default_rng(42))
    pieces = np.concatenate([stream.next(n) for n in chunks])
    whole = synthesize(fault, sum(chunks), np.random.default_rng(42))
    np.testing.assert_array_equal(pieces, whole)


@settings(max_examples=30, deadline=None)
@given(
    fault=st.sampled_from(CLASSES),
    chunks=st.lists(st.integers(0, 700), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_chunking_gives_the_same_samples(fault: str, chunks: list[int], seed: int) -> None:
    params = random_params(np.random.default_rng(seed))
    stream = VibrationStream(fault, np.random.default_rng(seed), params=params)
    pieces = np.concatenate([stream.next(n) for n in chunks])
    whole = synthesize(fault, sum(chunks), np.random.default_rng(seed), params=params)
    np.testing.assert_array_equal(pieces, whole)


@settings(max_examples=60, deadline=None)
@given(
    fault=st.sampled_from(CLASSES),
    n=st.integers(0, 3000),
    rate=st.floats(900.0, 20000.0),
    t0=st.floats(-1e6, 1e6),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_valid_request_gives_finite_bounded_samples(fault: str, n: int, rate: float, t0: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = synthesize(fault, n, rng, rate_hz=rate, t0_s=t0, params=random_params(rng))
    assert x.shape == (n, 3)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert np.abs(x).max(initial=0.0) < 10.0  # g: a machine that shook harder would have left its base


def test_same_seed_same_signal_different_seed_different_signal() -> None:
    a = synthesize("misalignment", 500, np.random.default_rng(3))
    b = synthesize("misalignment", 500, np.random.default_rng(3))
    c = synthesize("misalignment", 500, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_normal_is_small_one_x_over_noise() -> None:
    p = MachineParams()
    x = synthesize("normal", N, np.random.default_rng(5), params=p)
    # RMS is the stated noise plus a residual 1x of a few hundredths of a g
    assert (rms(x) < 0.06).all()
    assert (rms(x) > 0.8 * p.noise_g_rms).all()
    freqs, mag = spectrum(synthesize("normal", N, np.random.default_rng(5), params=QUIET))
    assert freqs[mag[:, 0].argmax()] == pytest.approx(p.shaft_hz, abs=0.5)


def test_imbalance_is_strong_one_x_radial_in_quadrature() -> None:
    p = MachineParams()
    x = synthesize("imbalance", N, np.random.default_rng(6), params=p)
    freqs, mag = spectrum(x)
    for ch in (0, 1):
        assert freqs[mag[:, ch].argmax()] == pytest.approx(p.shaft_hz, abs=0.5)
    assert band(freqs, mag, p.shaft_hz, 0) > 10 * band(freqs, mag, 2 * p.shaft_hz, 0)
    # axial stays small: the force rotates in the radial plane
    assert rms(x)[2] < 0.3 * rms(x)[0]
    # x and y are 90° apart at 1x (a rotating force vector)
    spec = np.fft.rfft(x - x.mean(axis=0), axis=0)
    k = int(np.argmin(np.abs(freqs - p.shaft_hz)))
    lag = np.angle(spec[k, 0] / spec[k, 1], deg=True)
    assert abs(abs(lag) - 90.0) < 10.0


def test_misalignment_is_strong_two_x_with_large_axial() -> None:
    p = MachineParams()
    x = synthesize("misalignment", N, np.random.default_rng(7), params=p)
    freqs, mag = spectrum(x)
    for ch in (0, 1):
        assert freqs[mag[:, ch].argmax()] == pytest.approx(2 * p.shaft_hz, abs=0.5)
    # axial vibration is of the same order as radial (imbalance and normal keep it small)
    assert rms(x)[2] > 0.5 * rms(x)[0]
    assert band(freqs, mag, p.shaft_hz, 2) > 0 and band(freqs, mag, 2 * p.shaft_hz, 2) > 0
    imb = synthesize("imbalance", N, np.random.default_rng(7), params=p)
    assert rms(x)[2] > 3 * rms(imb)[2]


def test_bearing_fault_rings_the_resonance_at_the_ball_pass_rate() -> None:
    p = MachineParams()
    x = synthesize("bearing_fault", N, np.random.default_rng(8), params=p).astype(np.float64)
    normal = synthesize("normal", N, np.random.default_rng(8), params=p).astype(np.float64)
    freqs, mag = spectrum(x)
    hi = freqs > 200.0
    energy = mag**2
    assert energy[hi, 1].sum() > 0.7 * energy[:, 1].sum()  # most energy in the resonance band
    assert abs(freqs[mag[:, 1].argmax()] - p.resonance_hz) < 60.0
    assert kurtosis(x[:, 1]) > 3.5 > kurtosis(normal[:, 1]) + 0.3  # impulsive; Gaussian noise is 3
    # envelope analysis: the rectified high band repeats at BPFO (with 1x sidebands from the load modulation)
    hp = np.fft.irfft(np.where(freqs[:, None] > 150.0, np.fft.rfft(x, axis=0), 0), n=N, axis=0)
    efreqs, emag = spectrum(np.abs(hp[:, 1:2]))
    low = (efreqs > 5.0) & (efreqs < 150.0)
    bpfo = p.bpfo_order * p.shaft_hz
    assert band(efreqs, emag, bpfo, 0) > 5 * float(np.median(emag[low, 0]))
    assert band(efreqs, emag, bpfo, 0) > 0.5 * float(emag[low, 0].max())


def test_bearing_fault_starts_ringing_from_the_first_sample() -> None:
    # a window cut from a running machine already contains the ring-down of earlier impacts
    energies = [
        float(np.abs(synthesize("bearing_fault", 16, np.random.default_rng(s), params=QUIET)[:, 0]).max())
        for s in range(20)
    ]
    assert np.median(energies) > 0.05


def test_fault_switch_changes_the_signal_from_the_next_sample() -> None:
    stream = VibrationStream("normal", np.random.default_rng(9), params=QUIET)
    before = stream.next(2000)
    stream.fault = "imbalance"
    after = stream.next(2000)
    assert stream.fault == "imbalance"
    assert rms(after)[0] > 5 * rms(before)[0]
    stream.fault = "bearing_fault"
    ringing = stream.next(2000)
    stream.fault = "normal"
    stream.next(300)  # the last impacts ring out (≤ 9 time constants)
    quiet_again = stream.next(2000)
    assert rms(ringing)[1] > 5 * rms(quiet_again)[1]
    np.testing.assert_allclose(rms(quiet_again), rms(before), rtol=0.05)


def test_random_params_vary_within_documented_ranges() -> None:
    rng = np.random.default_rng(10)
    ps = [random_params(rng) for _ in range(300)]
    speeds = [p.shaft_hz for p in ps]
    assert min(speeds) >= 20.0 and max(speeds) <= 30.0 and max(speeds) - min(speeds) > 8.0
    assert all(250.0 <= p.resonance_hz <= 400.0 for p in ps)
    assert all(0.0 < p.noise_g_rms <= 0.1 for p in ps)
    assert all(abs(float(np.linalg.norm(p.gravity_g)) - 1.0) < 1e-9 for p in ps)
    assert all(p.imbalance_g > 2 * p.residual_1x_g for p in ps)  # severity ranges do not overlap normal
    assert random_params(np.random.default_rng(1)) == random_params(np.random.default_rng(1))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: synthesize("cavitation", 10, np.random.default_rng(0)), "fault"),
        (lambda: synthesize("normal", -1, np.random.default_rng(0)), "n_samples"),
        (lambda: synthesize("normal", 2.5, np.random.default_rng(0)), "n_samples"),  # type: ignore[arg-type]
        (lambda: synthesize("normal", 10, np.random.RandomState(0)), "rng"),  # type: ignore[arg-type]
        (lambda: synthesize("normal", 10, np.random.default_rng(0), rate_hz=500.0), "rate_hz"),
        (lambda: synthesize("normal", 10, np.random.default_rng(0), rate_hz=float("nan")), "rate_hz"),
        (lambda: synthesize("normal", 10, np.random.default_rng(0), t0_s=float("inf")), "t0_s"),
        (lambda: synthesize("normal", 10, np.random.default_rng(0), params={}), "params"),  # type: ignore[arg-type]
        (lambda: VibrationStream("normal", np.random.default_rng(0)).next(-5), "n"),
        (lambda: random_params(None), "rng"),  # type: ignore[arg-type]
        (lambda: MachineParams(shaft_hz=0.0), "shaft_hz"),
        (lambda: MachineParams(noise_g_rms=-0.1), "noise_g_rms"),
        (lambda: MachineParams(damping_ratio=1.0), "damping_ratio"),
        (lambda: MachineParams(am_depth=1.5), "am_depth"),
        (lambda: MachineParams(gravity_g=(0.0, 1.0)), "gravity_g"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^(MachineParams\.)?{name}:"):
        call()  # type: ignore[operator]


def test_setting_an_unknown_fault_keeps_the_old_one() -> None:
    stream = VibrationStream("imbalance", np.random.default_rng(0))
    with pytest.raises(ValueError, match="fault: expected one of"):
        stream.fault = "loose_foot"
    assert stream.fault == "imbalance"
