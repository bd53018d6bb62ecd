"""The committed int8 models, loaded with LiteRT exactly as the agent does, against the signal model.

The vibration model must classify fresh windows cut from continuous streams (random phase, random start)
using only what ships beside it: the JSON's labels and normalisation and the input tensor's own
quantization parameters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from firmware_bridge import signal_model as sm

litert = pytest.importorskip("ai_edge_litert.interpreter")

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[2] / "models"
VIB = MODELS / "vibration-int8.tflite"
VIB_META = MODELS / "vibration-int8.json"
BENCH = MODELS / "bench-mobilenetv2-int8.tflite"
BENCH_META = MODELS / "bench-mobilenetv2-int8.json"
PER_CLASS = 200

META_KEYS = {
    "name",
    "version",
    "labels",
    "input_shape",
    "input_dtype",
    "output_dtype",
    "sample_rate_hz",
    "window",
    "channels",
    "unit",
    "normalisation",
    "sha256",
    "heldout_accuracy",
    "heldout_windows",
    "noise_g_rms",
    "training",
    "signal_model",
}


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VIB_META.read_text())
    return data


@pytest.fixture(scope="module")
def interpreter() -> Any:
    interp = litert.Interpreter(model_path=str(VIB), num_threads=1)
    interp.allocate_tensors()
    return interp


class Classifier:
    """What the agent does per window: normalise with the JSON, quantize with the tensor, invoke, argmax."""

    def __init__(self, interp: Any, meta: dict[str, Any]) -> None:
        self.interp = interp
        self.inp = interp.get_input_details()[0]
        self.out = interp.get_output_details()[0]
        self.mean = np.asarray(meta["normalisation"]["mean"], dtype=np.float32)
        self.std = np.asarray(meta["normalisation"]["std"], dtype=np.float32)
        self.labels: list[str] = meta["labels"]

    def __call__(self, window: npt.NDArray[np.float32]) -> str:
        scale, zero = self.inp["quantization"]
        xn = (window - self.mean) / self.std
        q = np.clip(np.round(xn / scale + zero), -128, 127).astype(np.int8)
        self.interp.set_tensor(self.inp["index"], q[None])
        self.interp.invoke()
        return self.labels[int(np.argmax(self.interp.get_tensor(self.out["index"])[0]))]


def test_metadata_describes_the_file(meta: dict[str, Any]) -> None:
    blob = VIB.read_bytes()
    assert set(meta) == META_KEYS
    assert meta["sha256"] == hashlib.sha256(blob).hexdigest()
    assert len(blob) < 64 * 1024
    assert meta["name"] == "vibration"
    assert meta["version"] == 1
    assert meta["labels"] == list(sm.CLASSES)
    assert meta["input_shape"] == [1, sm.WINDOW, sm.CHANNELS]
    assert (meta["input_dtype"], meta["output_dtype"]) == ("int8", "int8")
    assert meta["sample_rate_hz"] == sm.SAMPLE_RATE_HZ
    assert meta["window"] == sm.WINDOW
    assert meta["channels"] == ["x", "y", "z"]
    assert meta["unit"] == "g"
    assert meta["signal_model"] == "firmware_bridge.signal_model"
    assert len(meta["normalisation"]["mean"]) == 3
    assert all(s > 0 for s in meta["normalisation"]["std"])
    assert meta["heldout_accuracy"] >= 0.97
    assert meta["heldout_windows"] >= 1000


def test_tensors_are_int8_with_the_declared_shapes(interpreter: Any, meta: dict[str, Any]) -> None:
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    assert list(inp["shape"]) == meta["input_shape"]
    assert inp["dtype"] == np.int8
    assert out["dtype"] == np.int8
    assert list(out["shape"]) == [1, len(meta["labels"])]
    assert inp["quantization"][0] > 0


@pytest.mark.parametrize(("seed", "random_machine"), [(101, False), (202, True)])
def test_classifies_fresh_stream_windows(
    interpreter: Any, meta: dict[str, Any], seed: int, random_machine: bool
) -> None:
    rng = np.random.default_rng(seed)
    classify = Classifier(interpreter, meta)
    window = meta["window"]
    accuracy = {}
    for fault in sm.CLASSES:
        params = sm.random_params(rng) if random_machine else None
        stream = sm.VibrationStream(
            fault, rng, rate_hz=meta["sample_rate_hz"], params=params, t0_s=float(rng.uniform(0, 3600))
        )
        stream.next(int(rng.integers(0, 4 * window)))  # start at a random phase of the machine
        block = stream.next(PER_CLASS * window).reshape(PER_CLASS, window, 3)
        accuracy[fault] = sum(classify(w) == fault for w in block) / PER_CLASS
    assert all(a >= 0.95 for a in accuracy.values()), accuracy


def test_bench_model_loads_and_matches_its_metadata() -> None:
    bench = json.loads(BENCH_META.read_text())
    assert bench["sha256"] == hashlib.sha256(BENCH.read_bytes()).hexdigest()
    assert "random" in bench["purpose"]
    interp = litert.Interpreter(model_path=str(BENCH), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    assert list(inp["shape"]) == bench["input_shape"] == [1, 96, 96, 3]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=np.int8))
    interp.invoke()
    assert list(interp.get_tensor(out["index"]).shape) == bench["output_shape"]
