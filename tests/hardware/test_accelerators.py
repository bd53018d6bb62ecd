"""Real accelerators under ``[pipeline.delegate]`` (never required in CI; run on the device):

    EDGE_TEST_DELEGATE_LIB=/usr/lib/aarch64-linux-gnu/libedgetpu.so.1 \\
    EDGE_TEST_DELEGATE_MODEL=/opt/models/vibration-int8_edgetpu.tflite \\
    .venv/bin/python -m pytest -m hardware tests/hardware

``EDGE_TEST_DELEGATE_OPTIONS`` takes ``k=v,k=v`` (e.g. ``device=usb`` for a Coral USB stick). The model must be
one compiled for that accelerator (``edgetpu_compiler`` output for a Coral); without one the CPU model is used
and the delegate may claim no node. The test prints the largest difference from the CPU's int8 outputs: the
figure a release operator puts in the target's tolerance for ``<delegate>/<arch>``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import pytest

from agent.inference import Model
from agent.model_meta import load_model_meta
from agent.settings import DelegateConfig

pytestmark = pytest.mark.hardware

REPO = Path(__file__).resolve().parents[2]
LIB = os.environ.get("EDGE_TEST_DELEGATE_LIB", "")
MODEL = os.environ.get("EDGE_TEST_DELEGATE_MODEL", str(REPO / "models" / "vibration-int8.tflite"))
OPTIONS = tuple(tuple(kv.split("=", 1)) for kv in os.environ.get("EDGE_TEST_DELEGATE_OPTIONS", "").split(",") if kv)


@pytest.mark.skipif(not LIB, reason="set EDGE_TEST_DELEGATE_LIB to an accelerator's delegate library")
def test_the_accelerator_loads_and_stays_within_a_few_steps_of_the_cpu() -> None:
    meta_path = Path(MODEL).with_suffix(".json")
    meta = load_model_meta(str(meta_path if meta_path.exists() else REPO / "models" / "vibration-int8.json"))
    meta = type(meta)(**{**meta.__dict__, "sha256": None})
    m = Model.load(MODEL, meta, delegate=DelegateConfig(LIB, OPTIONS))  # type: ignore[arg-type]
    assert m.delegate_state.state == "loaded", m.delegate_state
    cpu = Model.load(str(REPO / "models" / "vibration-int8.tflite"), load_model_meta(str(REPO / "models" /
                                                                                            "vibration-int8.json")))
    rng = np.random.default_rng(0)
    worst = 0
    for _ in range(16):
        x = rng.integers(-128, 127, (1, *meta.input_shape[1:]), endpoint=True).astype(np.int8).tobytes()
        a, _ = m.run_raw(x)
        b, _ = cpu.run_raw(x)
        worst = max(worst, *(abs(p - q) for p, q in zip(a, b, strict=True)))
    print(f"{m.runtime_id}/{platform.machine()}: largest difference from the CPU {worst} steps")
    assert worst <= 8
