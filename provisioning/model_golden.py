"""Golden vectors on the release host: run the release build of a model on a few fixed inputs.

Why: a device must not switch to a model whose arithmetic differs from the one that was released (a
miscompiled runtime, an int8 kernel that rounds differently on aarch64, a delegate that is not bit-exact).
The release tool records exact input tensors and the raw int8 outputs the release build computes; the agent
runs the same tensors before switching and compares within the target's tolerance (``agent.updates``).

Inputs are raw input tensors (already quantized), so the check covers the interpreter alone. They are made
deterministically from a seed: the all-zero-point tensor first (a quiet sensor), then uniform random codes.
The runtime is LiteRT (``ai_edge_litert``), else ``tflite_runtime``, the same order as the agent; it is
imported only when golden vectors are computed, so the rest of ``edge-provision`` never loads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from provisioning.errors import InvalidInput

__all__ = ["compute_golden", "golden_file", "load_golden_file"]

GOLDEN_FORMAT = 1


def _interpreter_cls() -> Any:
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return import_module(module).Interpreter
        except (ImportError, AttributeError):
            continue
    raise InvalidInput("computing golden vectors needs a TFLite runtime on the release host: "
                       "pip install ai-edge-litert (or pass --golden with vectors from the release build)")


def compute_golden(model: bytes, count: int = 4, seed: int = 0) -> tuple[list[bytes], list[list[int]], dict[str, Any]]:
    """(input tensors, raw outputs, tensor facts) of ``model`` on ``count`` deterministic inputs."""
    import numpy as np  # noqa: PLC0415 - only the golden path needs numpy

    if not 1 <= count <= 64:
        raise InvalidInput(f"golden vector count: expected 1..64, got {count}")
    try:
        interp = _interpreter_cls()(model_content=model, num_threads=1)
        interp.allocate_tensors()
        inp = interp.get_input_details()
        out = interp.get_output_details()
    except (ValueError, RuntimeError) as e:
        raise InvalidInput(f"the runtime refused the model: {e}") from e
    if len(inp) != 1 or len(out) != 1:
        raise InvalidInput(f"expected a model with 1 input and 1 output, got {len(inp)} and {len(out)}")
    shape = tuple(int(d) for d in inp[0]["shape"])
    dtype = np.dtype(inp[0]["dtype"])
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        raise InvalidInput(f"golden vectors need an integer input tensor, the model takes {dtype.name}")
    _scale, zero = inp[0].get("quantization", (0.0, 0))
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    inputs: list[bytes] = []
    outputs: list[list[int]] = []
    for i in range(count):
        if i == 0:
            x = np.full(shape, int(zero), dtype=dtype)
        else:
            x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        interp.set_tensor(inp[0]["index"], x)
        interp.invoke()
        y = interp.get_tensor(out[0]["index"])
        inputs.append(x.tobytes())
        outputs.append([int(v) for v in y.reshape(-1)])
    facts = {"input_shape": list(shape), "input_dtype": dtype.name,
             "output_dtype": np.dtype(out[0]["dtype"]).name, "sha256": hashlib.sha256(model).hexdigest(),
             "seed": seed}
    return inputs, outputs, facts


def golden_file(model: bytes, runtime: str, count: int, seed: int) -> dict[str, Any]:
    """The JSON document ``edge-provision models golden`` writes (``--golden`` of ``models add`` reads it)."""
    import base64  # noqa: PLC0415

    inputs, outputs, facts = compute_golden(model, count, seed)
    return {"format": GOLDEN_FORMAT, **facts, "inputs": [base64.b64encode(b).decode() for b in inputs],
            "outputs": {runtime: outputs}}


def load_golden_file(paths: Sequence[Path], sha256: str) -> tuple[list[bytes], dict[str, list[list[int]]]]:
    """Merge golden files (one per runtime, same inputs) made for the model with digest ``sha256``."""
    import base64  # noqa: PLC0415

    inputs: list[bytes] | None = None
    outputs: dict[str, list[list[int]]] = {}
    for path in paths:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InvalidInput(f"cannot read golden vectors {path}: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != GOLDEN_FORMAT:
            raise InvalidInput(f"{path}: expected a golden vector file (format {GOLDEN_FORMAT})")
        if doc.get("sha256") != sha256:
            raise InvalidInput(f"{path}: made for the model with sha256 {doc.get('sha256')}, "
                               f"this model is {sha256}")
        try:
            these = [base64.b64decode(s, validate=True) for s in doc["inputs"]]
            outs = {str(k): [[int(x) for x in v] for v in vs] for k, vs in doc["outputs"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"{path}: inputs/outputs: {e}") from e
        if inputs is not None and these != inputs:
            raise InvalidInput(f"{path}: its inputs differ from the first golden file's (one input set per target)")
        inputs = these
        for rt, vs in outs.items():
            if rt in outputs:
                raise InvalidInput(f"{path}: a second set of outputs for runtime {rt}")
            outputs[rt] = vs
    if inputs is None:
        raise InvalidInput("no golden vector file given")
    return inputs, outputs
