"""Train, int8-quantize and verify the vibration classifier shipped in ``models/vibration-int8.tflite``.

Why it exists: the deployed model must be reproducible from the signal model in this repository
(``firmware_bridge.signal_model``), with its accuracy measured the way the agent runs it: int8 in and out
under LiteRT, input normalised per channel with the metadata written beside it. Dev-only: TensorFlow lives
in a separate venv and is never a project dependency::

    /opt/tfvenv/bin/python tools/train_vibration_model.py            # writes models/vibration-int8.*

Steps: a labelled dataset of windows cut at random offsets from streams with per-window random machine
parameters (fixed seed); a small 1D-CNN (Keras 3); full-integer int8 conversion with a representative
dataset; held-out accuracy under ``ai_edge_litert``; the ``.tflite`` and its JSON metadata written
atomically. Exits 1 without writing if the int8 held-out accuracy is below ``--min-accuracy``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _load_signal_model() -> Any:
    """Import ``firmware_bridge/signal_model.py`` alone: the package ``__init__`` pulls in pyserial and the
    rest of the bridge, which the TensorFlow venv does not have and training does not need."""
    name = "firmware_bridge.signal_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "firmware_bridge" / "signal_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


sm = _load_signal_model()

NOISE_SWEEP_G = (0.03, 0.06, 0.1, 0.15, 0.2, 0.3)
MAX_OFFSET = 1024  # windows start anywhere in the first ~1 s of a stream


def make_dataset(rng: np.random.Generator, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` windows of every class, each from its own random machine, cut at a random offset."""
    xs = np.empty((per_class * len(sm.CLASSES), sm.WINDOW, sm.CHANNELS), dtype=np.float32)
    ys = np.empty(per_class * len(sm.CLASSES), dtype=np.int64)
    i = 0
    for label, fault in enumerate(sm.CLASSES):
        for _ in range(per_class):
            params = sm.random_params(rng)
            offset = int(rng.integers(0, MAX_OFFSET))
            t0 = float(rng.uniform(0.0, 1000.0))
            stream = sm.VibrationStream(fault, rng, params=params, t0_s=t0)
            if offset:
                stream.next(offset)
            xs[i] = stream.next(sm.WINDOW)
            ys[i] = label
            i += 1
    order = rng.permutation(len(ys))
    return xs[order], ys[order]


def stream_windows(rng: np.random.Generator, per_class: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive windows from one continuous stream per class, as the agent's simulated source gives them."""
    xs, ys = [], []
    for label, fault in enumerate(sm.CLASSES):
        stream = sm.VibrationStream(fault, rng, params=params, t0_s=float(rng.uniform(0.0, 1000.0)))
        stream.next(int(rng.integers(0, MAX_OFFSET)))
        block = stream.next(per_class * sm.WINDOW).reshape(per_class, sm.WINDOW, sm.CHANNELS)
        xs.append(block)
        ys.append(np.full(per_class, label))
    return np.concatenate(xs), np.concatenate(ys)


def build_model(keras: Any) -> Any:
    """A 1D-CNN of about 9k parameters: three strided convolutions, global pooling, a small head."""
    layers = keras.layers
    inputs = keras.Input(shape=(sm.WINDOW, sm.CHANNELS), name="accel")
    x = layers.Conv1D(16, 7, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv1D(32, 5, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv1D(48, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dense(32, activation="relu")(x)
    outputs = layers.Dense(len(sm.CLASSES), activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="vibration")


def litert_predict(model_bytes: bytes, xn: np.ndarray) -> np.ndarray:
    """Class indices for normalised windows ``xn``, one int8 invoke each, as the agent does."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    scale, zero = inp["quantization"]
    q = np.clip(np.round(xn / scale + zero), -128, 127).astype(np.int8)
    preds = np.empty(len(xn), dtype=np.int64)
    for i in range(len(xn)):
        interp.set_tensor(inp["index"], q[i : i + 1])
        interp.invoke()
        preds[i] = int(np.argmax(interp.get_tensor(out["index"])[0]))
    return preds


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
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--train-per-class", type=int, default=4000)
    ap.add_argument("--val-per-class", type=int, default=500)
    ap.add_argument("--heldout-per-class", type=int, default=1000)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--min-accuracy", type=float, default=0.97)
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    started = time.monotonic()
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    # Independent streams for train, validation and held-out: the held-out windows are never seen in training.
    rng_train, rng_val, rng_held, rng_stream = (
        np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(4)
    )
    x_train, y_train = make_dataset(rng_train, args.train_per_class)
    x_val, y_val = make_dataset(rng_val, args.val_per_class)
    x_held, y_held = make_dataset(rng_held, args.heldout_per_class)
    mean = x_train.reshape(-1, sm.CHANNELS).mean(axis=0)
    std = x_train.reshape(-1, sm.CHANNELS).std(axis=0)

    def norm(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((x - mean) / std).astype(np.float32)
        return out

    print(
        f"dataset: train {len(y_train)} val {len(y_val)} heldout {len(y_held)} windows; "
        f"mean {np.round(mean, 4).tolist()} std {np.round(std, 4).tolist()}"
    )

    model = build_model(keras)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        norm(x_train),
        y_train,
        validation_data=(norm(x_val), y_val),
        epochs=args.epochs,
        batch_size=64,
        shuffle=True,
        verbose=2,
        callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=4)],
    )
    float_acc = float(np.mean(np.argmax(model.predict(norm(x_held), verbose=0), axis=1) == y_held))

    rep = norm(x_train[:500])

    def representative() -> Any:
        for i in range(len(rep)):
            yield [rep[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    tflite = bytes(converter.convert())

    preds = litert_predict(tflite, norm(x_held))
    acc = float(np.mean(preds == y_held))
    confusion = np.zeros((len(sm.CLASSES), len(sm.CLASSES)), dtype=int)
    np.add.at(confusion, (y_held, preds), 1)
    xs, ys = stream_windows(rng_stream, 200, None)
    stream_acc = float(np.mean(litert_predict(tflite, norm(xs)) == ys))
    # Robustness beyond the training range: the default machine with more noise than any training window.
    noise_sweep = {}
    for noise in NOISE_SWEEP_G:
        params = dataclasses.replace(sm.MachineParams(), noise_g_rms=noise)
        xs_n, ys_n = stream_windows(rng_stream, 200, params)
        noise_sweep[f"{noise:g}"] = round(float(np.mean(litert_predict(tflite, norm(xs_n)) == ys_n)), 4)
    print(f"int8 accuracy vs noise g RMS (default machine, 800 windows each): {noise_sweep}")
    print(
        f"heldout accuracy: float {float_acc:.4f}, int8 LiteRT {acc:.4f}; "
        f"default-machine stream windows int8 {stream_acc:.4f}; size {len(tflite)} bytes"
    )
    print(f"confusion (rows true, cols predicted, order {list(sm.CLASSES)}):\n{confusion}")
    if acc < args.min_accuracy:
        print(f"int8 held-out accuracy {acc:.4f} below --min-accuracy {args.min_accuracy}: nothing written")
        return 1

    meta = {
        "name": "vibration",
        "version": 1,
        "labels": list(sm.CLASSES),
        "input_shape": [1, sm.WINDOW, sm.CHANNELS],
        "input_dtype": "int8",
        "output_dtype": "int8",
        "sample_rate_hz": sm.SAMPLE_RATE_HZ,
        "window": sm.WINDOW,
        "channels": ["x", "y", "z"],
        "unit": "g",
        "normalisation": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "sha256": hashlib.sha256(tflite).hexdigest(),
        "heldout_accuracy": round(acc, 4),
        "heldout_windows": len(y_held),
        "noise_g_rms": sm.MachineParams().noise_g_rms,
        "training": {
            "seed": args.seed,
            "epochs": args.epochs,
            "train_windows": len(y_train),
            "val_windows": len(y_val),
            "heldout_windows": len(y_held),
            "params": "firmware_bridge.signal_model.random_params per window (noise 0.01-0.1 g RMS)",
            "float_heldout_accuracy": round(float_acc, 4),
            "stream_accuracy_default_params": round(stream_acc, 4),
            "heldout_confusion": confusion.tolist(),
            "noise_sweep_accuracy": noise_sweep,
            "tools": {pkg: metadata.version(pkg) for pkg in ("tensorflow-cpu", "keras", "numpy", "ai-edge-litert")},
            "python": sys.version.split()[0],
        },
        "signal_model": "firmware_bridge.signal_model",
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out_dir / "vibration-int8.tflite", tflite)
    atomic_write(args.out_dir / "vibration-int8.json", (json.dumps(meta, indent=2) + "\n").encode())
    print(
        f"wrote {args.out_dir / 'vibration-int8.tflite'} ({len(tflite)} bytes) sha256 {meta['sha256']} "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
