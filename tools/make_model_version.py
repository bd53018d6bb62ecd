"""Make another version of a shipped model by a deterministic transform that keeps it a valid TFLite model.

Why it exists: signed model updates (docs/model-updates.md) need a second, distinct release of the vibration
model to test and demonstrate with, and retraining needs TensorFlow (a dev-only 1.5 GB install). This tool
rewrites the flatbuffer with the TFLite schema that ships inside LiteRT (``ai_edge_litert.schema_py_generated``
and ``flatbuffers``, both installed with the runtime), so it runs anywhere the agent's tests run:

* the model description is set to name the version and the transform, so the bytes (and the digest every
  result carries) differ while the arithmetic stays that of the source model (``--bias-shift 0``);
* ``--bias-shift N [--bias-class C]`` adds ``N`` to the int32 bias of the final layer's output ``C``: a model
  whose int8 outputs really differ, to test golden-vector tolerances and refusals with a real interpreter.

The output is byte-for-byte reproducible (same input, same arguments, same bytes). The metadata JSON is the
source's with ``version``, ``sha256`` and a ``derived_from`` note::

    .venv/bin/python tools/make_model_version.py --version 2      # writes models/vibration-int8-v2.*
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "models" / "vibration-int8.tflite"


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - tflite-runtime only hosts
        from tflite_runtime import schema_py_generated as schema
    return schema


def transform(model: bytes, *, version: int, bias_shift: int = 0, bias_class: int = 0) -> bytes:
    """The source model as version ``version``: new description, optionally a shifted final bias."""
    import flatbuffers  # type: ignore[import-untyped]
    import numpy as np

    schema = _schema()
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    note = (f"depin-edge vibration model v{version} (tools/make_model_version.py, bias_shift={bias_shift}, "
            f"bias_class={bias_class})")
    m.description = note.encode()
    if bias_shift:
        sg = m.subgraphs[0]
        # The op that writes the graph output's producer chain ends with FULLY_CONNECTED -> SOFTMAX; find the
        # last FULLY_CONNECTED and shift its bias tensor (int32, one per class).
        fc = [op for op in sg.operators
              if m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED]
        if not fc:
            raise SystemExit("no FULLY_CONNECTED layer to shift")
        bias_tensor = sg.tensors[int(fc[-1].inputs[2])]
        buf = m.buffers[bias_tensor.buffer]
        data = np.frombuffer(bytes(bytearray(buf.data)), dtype=np.int32).copy()
        data[bias_class] += bias_shift
        buf.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def derived_metadata(source_meta: dict[str, Any], model: bytes, version: int, bias_shift: int,
                     source_sha: str) -> dict[str, Any]:
    meta = dict(source_meta)
    meta["version"] = version
    meta["sha256"] = hashlib.sha256(model).hexdigest()
    meta["derived_from"] = {"sha256": source_sha, "tool": "tools/make_model_version.py", "bias_shift": bias_shift}
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--version", type=int, required=True)
    ap.add_argument("--bias-shift", type=int, default=0)
    ap.add_argument("--bias-class", type=int, default=0)
    ap.add_argument("--output", type=Path, default=None, help="default: models/vibration-int8-v<version>.tflite")
    args = ap.parse_args(argv)
    src = args.source.read_bytes()
    out = args.output or args.source.with_name(f"vibration-int8-v{args.version}.tflite")
    model = transform(src, version=args.version, bias_shift=args.bias_shift, bias_class=args.bias_class)
    meta = derived_metadata(json.loads(args.source.with_suffix(".json").read_text()), model, args.version,
                            args.bias_shift, hashlib.sha256(src).hexdigest())
    out.write_bytes(model)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{out}: {len(model)} bytes, sha256 {meta['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
