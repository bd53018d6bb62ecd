"""Build ``models/bench-mobilenetv2-int8.tflite``: a camera-sized int8 model for inference benchmarks only.

Why it exists: the vibration model is tiny (invoke ≈ 5 µs), so it says little about how the agent copes
with a real vision workload. MobileNetV2 (alpha 0.35, 96x96x3) has the layer mix and size (~600 KB) of the
person-detection class of edge models. Its weights are random (``weights=None``: nothing is downloaded),
so its outputs are meaningless: use it for latency, memory and throughput, never for accuracy. Dev-only::

    /opt/tfvenv/bin/python tools/build_bench_model.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

INPUT_SHAPE = (96, 96, 3)
ALPHA = 0.35
CLASSES = 10


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the agent may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--representative", type=int, default=100, help="random calibration images")
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    model = keras.applications.MobileNetV2(
        input_shape=INPUT_SHAPE, alpha=ALPHA, weights=None, include_top=True, classes=CLASSES
    )
    rng = np.random.default_rng(args.seed)
    # MobileNetV2 expects inputs scaled to [-1, 1] (keras.applications.mobilenet_v2.preprocess_input).
    rep = rng.uniform(-1.0, 1.0, size=(args.representative, 1, *INPUT_SHAPE)).astype(np.float32)

    def representative() -> Any:
        for sample in rep:
            yield [sample]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    tflite = bytes(converter.convert())

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=np.int8))
    interp.invoke()
    assert interp.get_tensor(out["index"]).shape == (1, CLASSES)

    meta = {
        "name": "bench-mobilenetv2",
        "version": 1,
        "purpose": "benchmarks only: weights are random (weights=None), outputs are meaningless",
        "architecture": f"keras.applications.MobileNetV2(alpha={ALPHA}, include_top=True, classes={CLASSES})",
        "input_shape": [int(v) for v in inp["shape"]],
        "input_dtype": "int8",
        "input_quantization": {"scale": float(inp["quantization"][0]), "zero_point": int(inp["quantization"][1])},
        "output_shape": [int(v) for v in out["shape"]],
        "output_dtype": "int8",
        "sha256": hashlib.sha256(tflite).hexdigest(),
        "size_bytes": len(tflite),
        "training": {
            "seed": args.seed,
            "representative_dataset": f"{args.representative} uniform random images in [-1, 1]",
            "tools": {pkg: metadata.version(pkg) for pkg in ("tensorflow-cpu", "keras", "numpy")},
        },
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out_dir / "bench-mobilenetv2-int8.tflite", tflite)
    atomic_write(args.out_dir / "bench-mobilenetv2-int8.json", (json.dumps(meta, indent=2) + "\n").encode())
    print(f"wrote {args.out_dir / 'bench-mobilenetv2-int8.tflite'} ({len(tflite)} bytes) sha256 {meta['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
