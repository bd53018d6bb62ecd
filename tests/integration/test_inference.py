"""The shipped vibration model under LiteRT: digests, scores, refusals, and accuracy on simulated windows."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.errors import InferenceError
from agent.inference import Model, runtime_name
from agent.model_meta import ModelMeta, load_model_meta
from agent.quantize import AffineQuantizer, normalise, quantize
from agent.settings import SimulatedSourceConfig
from agent.sources.simulated import SimulatedSource
from agent.windowing import Windower
from firmware_bridge.signal_model import CLASSES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "vibration-int8.tflite"
META = REPO / "models" / "vibration-int8.json"

if not MODEL.exists() or not META.exists():  # pragma: no cover - only before the model is built
    pytest.skip("models/vibration-int8.* not built yet (tools/train_vibration_model.py)", allow_module_level=True)


@pytest.fixture(scope="module")
def meta() -> ModelMeta:
    return load_model_meta(str(META))


@pytest.fixture(scope="module")
def model(meta: ModelMeta) -> Model:
    return Model.load(str(MODEL), meta)


def test_runtime_is_litert() -> None:
    assert runtime_name().startswith("ai-edge-litert ")


def test_digests_and_scores(model: Model, meta: ModelMeta) -> None:
    assert model.model_sha256 == hashlib.sha256(MODEL.read_bytes()).digest()
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((128, 3)) * 0.3 + np.array([0, 1, 0])).astype(np.float32)
    r = model.infer(x)
    assert r.model_sha256 == model.model_sha256
    # recompute the int8 input bytes from the metadata and the input tensor's own scale/zero point
    fused = AffineQuantizer((128, 3), mean=meta.mean, std=meta.std,
                            scale=model.input_scale, zero_point=model.input_zero_point)
    q = fused(x)
    assert q.dtype == np.int8
    assert r.input_sha256 == hashlib.sha256(q.tobytes()).digest()
    # the unfused reference agrees to within one quantization step
    ref = quantize(normalise(x, meta.mean, meta.std), model.input_scale, model.input_zero_point)
    assert np.abs(ref.astype(np.int32) - q.astype(np.int32)).max() <= 1
    assert r.scores.dtype == np.float32 and r.scores.shape == (4,)
    assert abs(float(r.scores.sum()) - 1.0) < 0.02
    assert r.latency_us > 0
    # prepare/run (work split across threads) gives the same result
    p = model.prepare(x)
    assert p.sha256 == r.input_sha256
    r2 = model.run(p)
    np.testing.assert_array_equal(r2.scores, r.scores)


def test_wrong_window_shape_is_refused(model: Model) -> None:
    with pytest.raises(InferenceError, match=r"expected an input of shape \(128, 3\), got \(64, 3\)"):
        model.infer(np.zeros((64, 3), np.float32))


def test_simulated_windows_are_classified(model: Model, meta: ModelMeta) -> None:
    """200 windows per class from the simulated source through the windower: >= 95 % correct."""
    per_class = 200
    correct: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for i, fault in enumerate(CLASSES):
        cfg = SimulatedSourceConfig(fault=fault, realtime=False, block_samples=64, seed=100 + i)
        src = SimulatedSource("vib", cfg)
        w = Windower("vib", window=meta.window, hop=64, channels=meta.channels)
        for block in src.blocks():
            for win in w.push(block):
                truth = src.fault_during(win.t_start_us, win.t_end_us)
                assert truth == fault
                label = meta.labels[int(np.argmax(model.infer(win.data).scores))]
                total[fault] += 1
                correct[fault] += label == fault
            if total[fault] >= per_class:
                break
        src.close()
    accuracy = sum(correct.values()) / sum(total.values())
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}, per class {dict(correct)} of {dict(total)}"


def test_cycling_source_accuracy_scored_with_its_truth(model: Model, meta: ModelMeta) -> None:
    """One stream cycling through every class; windows straddling a change are not scored."""
    cfg = SimulatedSourceConfig(fault="cycle", cycle_s=2.0, realtime=False, block_samples=64, seed=9)
    src = SimulatedSource("vib", cfg)
    w = Windower("vib", window=meta.window, hop=128, channels=meta.channels)
    scored = hits = 0
    for block in src.blocks():
        for win in w.push(block):
            truth = src.fault_during(win.t_start_us, win.t_end_us)
            if truth is None:
                continue
            scored += 1
            hits += meta.labels[int(np.argmax(model.infer(win.data).scores))] == truth
        if scored >= 4 * 60:
            break
    assert hits / scored >= 0.95


def test_model_that_does_not_match_its_metadata_is_refused(tmp_path: Path, meta: ModelMeta) -> None:
    d = json.loads(META.read_text())
    d["sha256"] = "0" * 64
    with pytest.raises(InferenceError, match="does not match"):
        Model.load(str(MODEL), ModelMeta.from_dict(d, "other.json"))
    d = json.loads(META.read_text())
    del d["sha256"]
    d["labels"] = ["a", "b"]
    with pytest.raises(InferenceError, match=r"4 outputs.*2 labels"):
        Model.load(str(MODEL), ModelMeta.from_dict(d, "other.json"))
    d = json.loads(META.read_text())
    del d["sha256"]
    d["input_shape"], d["window"] = [1, 64, 3], 64
    with pytest.raises(InferenceError, match=r"input shape \[1, 128, 3\] does not match"):
        Model.load(str(MODEL), ModelMeta.from_dict(d, "other.json"))


def test_garbage_and_missing_files_are_refused(tmp_path: Path, meta: ModelMeta) -> None:
    d = json.loads(META.read_text())
    del d["sha256"]
    m = ModelMeta.from_dict(d, "x.json")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(InferenceError, match=r"junk\.tflite: expected a TFLite model"):
        Model.load(str(junk), m)
    with pytest.raises(InferenceError, match="cannot read model"):
        Model.load(str(tmp_path / "none.tflite"), m)


def test_digest_is_of_the_bytes_loaded_not_the_file_later(tmp_path: Path, meta: ModelMeta) -> None:
    path = tmp_path / "m.tflite"
    shutil.copy(MODEL, path)
    m = Model.load(str(path), meta)
    path.write_bytes(b"replaced after load")
    assert m.model_sha256 == hashlib.sha256(MODEL.read_bytes()).digest()
    m.infer(np.zeros((128, 3), np.float32))  # still runs the bytes it loaded


def test_no_runtime_installed_is_a_clear_error() -> None:
    from agent import inference

    with pytest.raises(InferenceError, match="no TFLite runtime"):
        inference._load_runtime((("no_such_runtime.interpreter", "no-such-runtime"),))
