"""``ResultEncoder`` writes exactly the bytes of the generic deterministic encoder over ``result_payload``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agent.pipeline import ResultEncoder, result_payload
from agent.windowing import Window
from envelope import cbor_det

labels_st = st.lists(st.text(min_size=0, max_size=30), min_size=1, max_size=30).map(tuple)


def _window(n: int, t0: int) -> Window:
    return Window("s", t0, t0 + 1000, np.zeros((n, 1), dtype=np.float32), 0)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(labels=labels_st, data=st.data(), threshold=st.floats(allow_nan=True),
       latency=st.floats(min_value=0, max_value=1e12), t0=st.integers(min_value=0, max_value=2**62),
       n=st.integers(min_value=1, max_value=70000), dtype=st.sampled_from([np.float32, np.float64]))
def test_equal_to_generic_encoder(labels: tuple[str, ...], data: st.DataObject, threshold: float, latency: float,
                                  t0: int, n: int, dtype: type) -> None:
    enc = ResultEncoder(labels)
    w = _window(n, t0)
    for _ in range(3):  # the float cache must not change a later result
        scores = data.draw(arrays(dtype, len(labels), elements=st.floats(width=32 if dtype is np.float32 else 64)))
        expected = cbor_det.dumps(result_payload(labels, scores, threshold, latency, w))
        assert enc.encode(scores, threshold, latency, w) == expected


def test_signed_zeros_and_nan_are_not_confused_by_the_cache() -> None:
    labels = ("a", "b", "c")
    enc = ResultEncoder(labels)
    w = _window(128, 1_764_000_000_123_456)
    for scores in ([0.0, -0.0, 1.0], [-0.0, 0.0, 1.0], [float("nan"), 0.5, -0.0], [0.5, 0.5, 0.5]):
        arr = np.array(scores, dtype=np.float32)
        assert enc.encode(arr, 0.5, 12.7, w) == cbor_det.dumps(result_payload(labels, arr, 0.5, 12.7, w))


def test_the_float_cache_is_bounded() -> None:
    enc = ResultEncoder(("a", "b"))
    w = _window(4, 0)
    for i in range(ResultEncoder.FLOAT_CACHE_MAX + 100):
        arr = np.array([i / 7919.0, 1.0], dtype=np.float64)
        assert enc.encode(arr, 0.0, 1.0, w) == cbor_det.dumps(result_payload(("a", "b"), arr, 0.0, 1.0, w))
    assert len(enc._floats) <= ResultEncoder.FLOAT_CACHE_MAX
