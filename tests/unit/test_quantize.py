"""Affine quantization: round trip within half a step inside the range, saturation outside it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agent.quantize import AffineQuantizer, dequantize, normalise, quantize

scales = st.floats(min_value=1e-4, max_value=10.0, allow_nan=False)
int8_zero = st.integers(-128, 127)
floats32 = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@settings(max_examples=300, deadline=None)
@given(scale=scales, zero=int8_zero, data=st.data())
def test_round_trip_within_half_a_step_inside_the_range(scale: float, zero: int, data: st.DataObject) -> None:
    lo, hi = scale * (-128 - zero), scale * (127 - zero)
    x = data.draw(hnp.arrays(np.float64, st.integers(1, 64), elements=st.floats(lo, hi))).astype(np.float32)
    q = quantize(x, scale, zero)
    assert q.dtype == np.int8
    back = dequantize(q, scale, zero)
    assert back.dtype == np.float32
    # half a step, plus float32 rounding of the arithmetic
    assert np.all(np.abs(back - x) <= scale / 2 + 1e-5 * max(abs(lo), abs(hi), scale))


@settings(max_examples=300, deadline=None)
@given(scale=scales, zero=int8_zero, x=hnp.arrays(np.float32, st.integers(1, 64), elements=floats32))
def test_values_outside_the_range_saturate(scale: float, zero: int, x: np.ndarray) -> None:
    q = quantize(x, scale, zero).astype(np.int32)
    lo, hi = scale * (-128 - zero), scale * (127 - zero)
    assert np.all(q[x < lo - scale] == -128)
    assert np.all(q[x > hi + scale] == 127)
    assert q.min() >= -128 and q.max() <= 127


def test_known_values_and_round_half_to_even() -> None:
    q = quantize(np.array([0.0, 0.5, 1.5, 2.5, -0.5, 1000.0, -1000.0], np.float32), 1.0, 0)
    assert q.tolist() == [0, 0, 2, 2, 0, 127, -128]
    assert quantize(np.array([1.0]), 0.5, -10).tolist() == [-8]


def test_uint8_and_errors() -> None:
    assert quantize(np.array([-1.0, 0.0, 300.0]), 1.0, 0, dtype=np.uint8).tolist() == [0, 0, 255]
    with pytest.raises(ValueError, match="scale"):
        quantize(np.zeros(2), 0.0, 0)
    with pytest.raises(ValueError, match="integer"):
        quantize(np.zeros(2), 1.0, 0, dtype=np.float32)
    with pytest.raises(ValueError, match="std"):
        normalise(np.zeros((2, 3)), [0, 0, 0], [1, 0, 1])


def test_normalise_is_per_channel() -> None:
    x = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], np.float32)
    np.testing.assert_allclose(normalise(x, [1, 2, 3], [2, 2, 1]), [[0, 0, 0], [1, 1, 2]])


@settings(max_examples=200, deadline=None)
@given(
    scale=st.floats(0.01, 1.0),
    zero=int8_zero,
    mean=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    std=st.lists(st.floats(0.05, 3), min_size=3, max_size=3),
    x=hnp.arrays(np.float32, (16, 3), elements=st.floats(-50, 50, width=32)),
)
def test_fused_quantizer_matches_normalise_then_quantize_within_one_step(
    scale: float, zero: int, mean: list[float], std: list[float], x: np.ndarray
) -> None:
    fused = AffineQuantizer((16, 3), mean=mean, std=std, scale=scale, zero_point=zero)
    out = np.empty((16, 3), np.int8)
    got = fused(x, out)
    assert got is out
    ref = quantize(normalise(x, mean, std), scale, zero)
    # The fused form evaluates x*a+b instead of ((x-mean)/std)/scale+zero: float32 rounding may move a
    # value sitting on a rounding boundary by one step, never more.
    assert np.abs(out.astype(np.int32) - ref.astype(np.int32)).max() <= 1
    again = fused(x)  # allocating form gives the same bytes
    assert again.tobytes() == out.tobytes()


def test_fused_quantizer_without_normalisation_equals_quantize_exactly() -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((128, 3)) * 20).astype(np.float32)
    fused = AffineQuantizer((128, 3), mean=0.0, std=1.0, scale=0.078, zero_point=-13)
    assert fused(x).tobytes() == quantize(x, 0.078, -13).tobytes()


def test_fused_quantizer_float_target_only_normalises() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    fused = AffineQuantizer((2, 2), mean=[1, 2], std=[2, 2], scale=0.1, zero_point=5, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(fused(x), np.float32), normalise(x, [1, 2], [2, 2]))


def test_fused_quantizer_rejects_bad_normalisation() -> None:
    with pytest.raises(ValueError, match="std"):
        AffineQuantizer((4, 3), mean=0, std=[1, 0, 1], scale=0.1, zero_point=0)
