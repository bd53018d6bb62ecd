"""B1: what the agent's inference path costs on top of the interpreter's own ``invoke()``.

Baselines are measured in the same run: a bare ``interpreter.invoke()`` loop on the same model (input
already in the tensor). Rows:

* vibration model (17 KB, 128x3 int8): raw invoke rate, ``Model.infer`` rate (quantize + hash + invoke +
  dequantize) and its overhead per call, and windowing + infer from 64-sample blocks (the record path
  up to signing);
* MobileNetV2 0.35 96x96 int8 (``models/bench-mobilenetv2-int8.tflite``, if present): raw invoke rate,
  ``Model.infer`` in one thread, and ``prepare`` on a producer thread feeding ``run`` on the interpreter
  thread (the split the pipeline uses for big inputs).

``run(quick)`` returns rows ``{id, name, value, unit, baseline, ratio, goal}``; ``python -m
bench.bench_inference [--quick]`` prints them as a table.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.inference import Model, PreparedInput
from agent.model_meta import ModelMeta, load_model_meta
from agent.sources.base import SampleBlock
from agent.windowing import Windower
from bench.common import standalone_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIB_MODEL = os.path.join(ROOT, "models", "vibration-int8.tflite")
VIB_META = os.path.join(ROOT, "models", "vibration-int8.json")
MNV2_MODEL = os.path.join(ROOT, "models", "bench-mobilenetv2-int8.tflite")


def _rate(fn: Callable[[], Any], n: int, repeats: int) -> float:
    """Best calls per second of ``fn`` over ``repeats`` loops of ``n`` calls (best-of: the machine is shared,
    and interference only ever slows a loop down)."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(n / (time.perf_counter() - t0))
    return max(rates)


def _row(
    id_: str, name: str, value: float, unit: str, baseline: float | None, goal: str, higher_better: bool = True
) -> dict[str, Any]:
    ratio = None
    if baseline:
        ratio = value / baseline if higher_better else baseline / value
    return {"id": id_, "name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio,
            "goal": goal}


def _vibration_inputs(meta: ModelMeta, k: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
    return [(rng.standard_normal((meta.window, meta.channels)).astype(np.float32) * std + mean) for _ in range(k)]


def bench_vibration(quick: bool) -> list[dict[str, Any]]:
    meta = load_model_meta(VIB_META)
    model = Model.load(VIB_MODEL, meta)
    n, repeats = (5_000, 3) if quick else (50_000, 7)
    xs = _vibration_inputs(meta, 16)
    model.infer(xs[0])
    interp = model._interp  # the bare interpreter: the baseline
    raw = _rate(interp.invoke, n, repeats)
    it = iter(range(1 << 62))
    infer = _rate(lambda: model.infer(xs[next(it) & 15]), n, repeats)
    overhead_us = 1e6 / infer - 1e6 / raw

    # windowing + infer: one 64-sample block per window (window 128, hop 64), blocks prebuilt
    stream = np.concatenate(xs)  # 2048 samples
    blocks = [SampleBlock(i * 64_000, 1000.0, stream[(i * 64) % 2048 : (i * 64) % 2048 + 64]) for i in range(n)]

    def windowed() -> float:
        w = Windower("vib", meta.window, 64, meta.channels)
        t0 = time.perf_counter()
        count = 0
        for b in blocks:
            for win in w.push(b):
                model.infer(win.data)
                count += 1
        return count / (time.perf_counter() - t0)

    win_rate = max(windowed() for _ in range(repeats))
    win_overhead_us = 1e6 / win_rate - 1e6 / raw
    return [
        _row("B1.1", "vibration: raw invoke()", raw, "calls/s", None, "baseline"),
        _row("B1.2", "vibration: Model.infer (quantize+hash+invoke+dequantize)", infer, "calls/s", raw,
             "ratio to raw invoke"),
        _row("B1.3", "vibration: Model.infer overhead beyond invoke", overhead_us, "µs/call", None, "≈5 µs"),
        _row("B1.4", "vibration: Windower.push + Model.infer", win_rate, "windows/s", raw,
             ">= 8000 records/s budget on 2 cores"),
        _row("B1.5", "vibration: windowing + infer overhead beyond invoke", win_overhead_us, "µs/window", None,
             "a few µs"),
    ]


def _mobilenet_meta() -> ModelMeta:
    return ModelMeta.from_dict(
        {
            "name": "bench-mobilenetv2", "labels": [f"c{i}" for i in range(10)], "input_shape": [1, 96, 96, 3],
            "input_dtype": "int8", "output_dtype": "int8", "sample_rate_hz": 1.0, "window": 96, "channels": 3,
            "normalisation": {"mean": 0.0, "std": 1.0},
        },
        "bench_inference.py",
    )


def bench_mobilenet(quick: bool) -> list[dict[str, Any]]:
    if not os.path.exists(MNV2_MODEL):
        return []
    model = Model.load(MNV2_MODEL, _mobilenet_meta())
    n, repeats = (100, 3) if quick else (1_000, 5)
    rng = np.random.default_rng(2)
    xs = [rng.uniform(-1, 1, (96, 96, 3)).astype(np.float32) for _ in range(8)]
    model.infer(xs[0])
    raw = _rate(model._interp.invoke, n, repeats)
    it = iter(range(1 << 62))
    infer = _rate(lambda: model.infer(xs[next(it) & 7]), n, repeats)

    def pipelined() -> float:
        q: queue.Queue[PreparedInput | None] = queue.Queue(maxsize=8)

        def produce() -> None:
            for i in range(n):
                q.put(model.prepare(xs[i & 7]))
            q.put(None)

        t = threading.Thread(target=produce)
        t0 = time.perf_counter()
        t.start()
        count = 0
        while (p := q.get()) is not None:
            model.run(p)
            count += 1
        rate = count / (time.perf_counter() - t0)
        t.join()
        return rate

    piped = max(pipelined() for _ in range(repeats))
    return [
        _row("B1.6", "mobilenetv2: raw invoke()", raw, "calls/s", None, "baseline"),
        _row("B1.7", "mobilenetv2: Model.infer, one thread", infer, "calls/s", raw, "ratio to raw invoke"),
        _row("B1.8", "mobilenetv2: prepare (producer thread) + run (owner thread)", piped, "calls/s", raw,
             ">= 0.95 of raw invoke"),
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """All B1 rows; ``quick`` uses short loops (seconds) instead of full ones."""
    return bench_vibration(quick) + bench_mobilenet(quick)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def main() -> None:
    standalone_main(run, (__doc__ or "").splitlines()[0])


if __name__ == "__main__":
    main()
