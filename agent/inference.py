"""Run one TFLite model on windows: int8 in, scores out, with the digests the signed record carries.

Runtime: ``ai_edge_litert`` (LiteRT) first, then ``tflite_runtime``. DESIGN §7 lists ``tflite_runtime``
first; we deliberately invert it because LiteRT is the measured-faster runtime (FIELD-NOTES: the 17 KB
vibration model invokes in 4.8 µs under LiteRT vs 12.4 µs under tflite-runtime, MobileNetV2 in 384 vs
3,494 µs, XNNPACK for int8 only in LiteRT), it supports numpy 2, and it is the project's declared
dependency; ``tflite_runtime`` stays a fallback for devices that ship only that wheel. Neither installed,
an unreadable file, a file that is not a TFLite model or one that disagrees with its metadata (shape,
dtype, label count, sha256) raise ``InferenceError`` with what was expected and what was found.

Digests (DESIGN §3): ``model_sha256`` is the sha256 of the exact bytes the interpreter was built from
(the file is read once; the interpreter gets those bytes via ``model_content``, so no later change of the
file can make the digest lie). ``input_sha256`` is the sha256 of the exact int8 input tensor bytes.

Cost: normalisation and quantization are fused into one affine map from the input tensor's own scale and
zero point (``agent.quantize.AffineQuantizer``), into preallocated buffers; the input goes in with
``set_tensor`` from our own buffer (0.45 µs here, cheaper than building a ``tensor()`` view, 0.65 µs,
and it lets us hash our buffer without holding an interpreter view across ``invoke``); int8 outputs are
dequantized with a 256-entry lookup table. ``latency_us`` is measured around ``invoke()`` only.

For big inputs (MobileNetV2: quantize ≈ 14 µs, sha256 of 27 KB ≈ 16 µs) the pipeline can move that work
off the interpreter's thread: ``prepare(x)`` (any thread; allocates its own buffers) then ``run(p)`` (the
owner thread). ``infer(x)`` does both with no allocation beyond the result.

Threading: a ``Model`` owns one interpreter and is **not thread-safe**. One thread (the pipeline's
inference thread) calls ``infer``/``run``; only ``prepare`` may be called from other threads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.delegates import DelegateError, DelegateState, delegate_name, open_delegate
from agent.errors import InferenceError
from agent.model_meta import ModelMeta
from agent.quantize import AffineQuantizer, dequantize
from agent.settings import DelegateConfig

__all__ = ["Inference", "Model", "PreparedInput", "runtime_name"]

log = logging.getLogger(__name__)

# (module with Interpreter, distribution name for the version) in order of preference: see the docstring.
RUNTIMES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)

_runtime: tuple[Any, str] | None = None


def _load_runtime(candidates: tuple[tuple[str, str], ...] = RUNTIMES) -> tuple[Any, str]:
    """The first importable runtime: (Interpreter class, "distribution version")."""
    global _runtime  # noqa: PLW0603 - import once per process
    if candidates is RUNTIMES and _runtime is not None:
        return _runtime
    tried = []
    for module, dist in candidates:
        try:
            interpreter_cls = import_module(module).Interpreter
        except (ImportError, AttributeError) as e:
            tried.append(f"{module} ({e})")
            continue
        # The package's own __version__ (importlib.metadata would pull the email package into every agent).
        version = str(getattr(import_module(module.split(".")[0]), "__version__", "unknown"))
        found = (interpreter_cls, f"{dist} {version}")
        if candidates is RUNTIMES:
            _runtime = found
        log.debug("TFLite runtime: %s", found[1])
        return found
    raise InferenceError(
        "no TFLite runtime: expected ai-edge-litert (pip install ai-edge-litert) or tflite-runtime, "
        "tried " + "; ".join(tried)
    )


def runtime_name() -> str:
    """The runtime models load with, e.g. ``"ai-edge-litert 2.3.0"`` (for the birth record)."""
    return _load_runtime()[1]


@dataclass(frozen=True, eq=False, slots=True)
class Inference:
    """One model run: digests for the envelope, dequantized scores (one per label), invoke latency."""

    model_sha256: bytes
    input_sha256: bytes
    scores: npt.NDArray[np.float32]
    latency_us: float


@dataclass(frozen=True, eq=False, slots=True)
class PreparedInput:
    """A window already quantized (``tensor``: the exact input tensor, batch 1) and hashed."""

    tensor: npt.NDArray[Any]
    sha256: bytes


class Model:
    """One interpreter for one model file; see the module docstring. Not thread-safe."""

    @classmethod
    def load(cls, path: str, meta: ModelMeta, *, num_threads: int = 1, delegate: DelegateConfig | None = None) -> Model:
        """Read ``path`` once, check it against ``meta``, build the interpreter and all buffers.

        With ``delegate`` the interpreter runs under that external delegate (``agent.delegates``); when it
        cannot, ``delegate.on_failure`` decides: raise ``DelegateError``, or run on the CPU and record why in
        ``delegate_state``.
        """
        if num_threads < 1:
            raise InferenceError(f"{path}: num_threads: expected >= 1, got {num_threads}")
        try:
            with open(path, "rb") as f:
                content = f.read()
        except OSError as e:
            raise InferenceError(f"{path}: cannot read model: {e.strerror or e}") from e
        digest = hashlib.sha256(content).digest()
        if meta.sha256 is not None and meta.sha256 != digest.hex():
            raise InferenceError(
                f"{path}: sha256 {digest.hex()} does not match {meta.source}: sha256 {meta.sha256} "
                "(model and metadata are from different builds)"
            )
        interpreter_cls, runtime = _load_runtime()
        state = DelegateState()
        interp = None
        if delegate is not None:
            name = delegate.name or delegate_name(delegate.library)
            try:
                d = open_delegate(delegate, interpreter_cls.__module__)
                try:
                    interp = interpreter_cls(model_content=content, num_threads=num_threads,
                                             experimental_delegates=[d])
                    interp.allocate_tensors()
                except (ValueError, RuntimeError) as e:
                    raise DelegateError(delegate.library, f"cannot run {path} under it: {e}") from e
                state = DelegateState(delegate.library, name, "loaded")
            except DelegateError as e:
                if delegate.on_failure != "cpu_fallback":
                    raise DelegateError(e.library, f"{e.cause} (model {path}; on_failure = fail; set "
                                                   "on_failure = \"cpu_fallback\" to run on the CPU instead)") from e
                log.warning("%s: %s; running on the CPU (on_failure = cpu_fallback)", path, e)
                state = DelegateState(delegate.library, "cpu", "cpu_fallback", e.cause)
                interp = None
        try:
            if interp is None:
                interp = interpreter_cls(model_content=content, num_threads=num_threads)
                interp.allocate_tensors()
            inputs = interp.get_input_details()
            outputs = interp.get_output_details()
        except (ValueError, RuntimeError) as e:
            raise InferenceError(f"{path}: expected a TFLite model, the runtime refused it: {e}") from e
        self = cls(path, meta, content, digest, interp, runtime, inputs, outputs)
        self.delegate_state = state
        log.info(
            "model %s loaded with %s: input %s %s, %d labels, sha256 %s",
            path, runtime, meta.input_shape, meta.input_dtype, len(meta.labels), digest.hex()[:16],
        )
        return self

    def __init__(
        self,
        path: str,
        meta: ModelMeta,
        content: bytes,
        digest: bytes,
        interp: Any,
        runtime: str,
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
    ) -> None:
        """Check the interpreter's tensors against ``meta`` and set up buffers; use ``Model.load``."""
        if len(inputs) != 1 or len(outputs) != 1:
            raise InferenceError(
                f"{path}: expected a model with 1 input and 1 output, got {len(inputs)} and {len(outputs)}"
            )
        inp, out = inputs[0], outputs[0]
        in_shape = tuple(int(d) for d in inp["shape"])
        if in_shape != meta.input_shape:
            raise InferenceError(
                f"{path}: input shape {list(in_shape)} does not match {meta.source}: input_shape "
                f"{list(meta.input_shape)}"
            )
        in_dtype = np.dtype(inp["dtype"])
        if in_dtype.name != meta.input_dtype:
            raise InferenceError(
                f"{path}: input dtype {in_dtype.name} does not match {meta.source}: input_dtype {meta.input_dtype}"
            )
        out_dtype = np.dtype(out["dtype"])
        if out_dtype.name != meta.output_dtype:
            raise InferenceError(
                f"{path}: output dtype {out_dtype.name} does not match {meta.source}: output_dtype "
                f"{meta.output_dtype}"
            )
        n_out = int(np.prod(out["shape"]))
        if n_out != len(meta.labels):
            raise InferenceError(
                f"{path}: the model has {n_out} outputs, {meta.source} names {len(meta.labels)} labels"
            )
        in_scale, in_zero = _quantization(path, "input", inp, in_dtype)
        out_scale, out_zero = _quantization(path, "output", out, out_dtype)

        self.path = path
        self.meta = meta
        self.runtime = runtime
        self._content = content  # the interpreter was built from these bytes; keep them alive with it
        self._sha256 = digest
        self._interp = interp
        self._in_index = int(inp["index"])
        self._out_index = int(out["index"])
        self.input_shape: tuple[int, ...] = in_shape[1:]  # what infer() takes: (window, channels)
        self.input_scale, self.input_zero_point = in_scale, in_zero
        self.output_scale, self.output_zero_point = out_scale, out_zero
        self.quantizer = AffineQuantizer(
            self.input_shape, mean=meta.mean, std=meta.std, scale=in_scale, zero_point=in_zero, dtype=in_dtype
        )
        self._q: npt.NDArray[Any] = np.empty(in_shape, dtype=in_dtype)  # the input tensor, batch 1
        self._q_view = self._q.reshape(self.input_shape)
        self._lut: npt.NDArray[np.float32] | None = None
        if out_dtype.itemsize == 1 and out_dtype.kind in "iu":
            # scores = lut[raw byte]: one take instead of cast, subtract, multiply
            codes = np.arange(256, dtype=np.uint8).view(out_dtype)
            self._lut = dequantize(codes, out_scale, out_zero)
        self._out_dtype = out_dtype
        self._fault = ModelFault.from_env(digest.hex())
        self.delegate_state = DelegateState()

    @property
    def runtime_id(self) -> str:
        """The runtime golden vectors are judged for: ``cpu``, or the delegate's name when it is loaded."""
        return self.delegate_state.name

    @property
    def model_sha256(self) -> bytes:
        """sha256 of the exact model bytes the interpreter runs."""
        return self._sha256

    @property
    def labels(self) -> tuple[str, ...]:
        """Output labels, in score order (from the metadata)."""
        return self.meta.labels

    def infer(self, x: npt.NDArray[np.floating]) -> Inference:
        """Quantize ``x`` (shape ``input_shape``, physical units) into the input, run, return scores."""
        if x.shape != self.input_shape:
            raise InferenceError(f"{self.path}: expected an input of shape {self.input_shape}, got {x.shape}")
        self.quantizer(x, self._q_view)
        return self._invoke(self._q, hashlib.sha256(self._q.data).digest())

    def prepare(self, x: npt.NDArray[np.floating]) -> PreparedInput:
        """Quantize and hash ``x`` into a new buffer; safe from any thread (for ``run`` on the owner)."""
        if x.shape != self.input_shape:
            raise InferenceError(f"{self.path}: expected an input of shape {self.input_shape}, got {x.shape}")
        q = np.empty(self._q.shape, dtype=self._q.dtype)
        self.quantizer(x, q.reshape(self.input_shape), scratch=np.empty(self.input_shape, dtype=np.float32))
        return PreparedInput(q, hashlib.sha256(q.data).digest())

    def run(self, p: PreparedInput) -> Inference:
        """Run a prepared input (owner thread only)."""
        if p.tensor.shape != self._q.shape or p.tensor.dtype != self._q.dtype:
            raise InferenceError(
                f"{self.path}: expected a prepared tensor {self._q.shape} {self._q.dtype}, "
                f"got {p.tensor.shape} {p.tensor.dtype}"
            )
        return self._invoke(p.tensor, p.sha256)

    def run_raw(self, tensor_bytes: bytes) -> tuple[list[int], float]:
        """Run one exact input tensor (golden vectors): the raw output values and the invoke latency in µs.

        Owner thread only, like ``run``. ``tensor_bytes`` must be the whole input tensor (batch 1).
        """
        q = np.frombuffer(tensor_bytes, dtype=self._q.dtype)
        if q.size != self._q.size:
            raise InferenceError(f"{self.path}: golden input of {len(tensor_bytes)} bytes, the input tensor "
                                 f"holds {self._q.nbytes}")
        interp = self._interp
        interp.set_tensor(self._in_index, q.reshape(self._q.shape))
        t0 = time.perf_counter_ns()
        interp.invoke()
        t1 = time.perf_counter_ns()
        if self._fault is not None:
            self._fault.check(golden=True)
        raw = interp.get_tensor(self._out_index)
        return [int(v) for v in raw.reshape(-1)], (t1 - t0) / 1000.0

    def _invoke(self, q: npt.NDArray[Any], input_sha256: bytes) -> Inference:
        interp = self._interp
        interp.set_tensor(self._in_index, q)
        t0 = time.perf_counter_ns()
        interp.invoke()
        t1 = time.perf_counter_ns()
        if self._fault is not None and (extra_ns := self._fault.check(golden=False)):
            time.sleep(extra_ns / 1e9)  # a really slow model, not a made-up figure
            t1 = time.perf_counter_ns()
        raw = interp.get_tensor(self._out_index)
        if self._lut is not None:
            scores = self._lut.take(raw.reshape(-1).view(np.uint8))
        elif self._out_dtype.kind == "f":
            scores = raw.reshape(-1).astype(np.float32)
        else:
            scores = dequantize(raw.reshape(-1), self.output_scale, self.output_zero_point)
        return Inference(self._sha256, input_sha256, scores, (t1 - t0) / 1000.0)


FAULT_ENV = "EDGE_AGENT_MODEL_FAULT_FILE"


class ModelFault:
    """Test hook: a model that fails after it was switched in (docs/model-updates.md, attack suite).

    When the environment variable ``EDGE_AGENT_MODEL_FAULT_FILE`` names a file, each line of it
    ``invoke-error <sha256 prefix>`` makes invocations of that model raise (golden vectors excepted: the
    fault appears only after the switch), ``slow <sha256 prefix> <µs>`` makes each of them that much slower.
    Without the variable no model has the hook and nothing is read.
    """

    def __init__(self, path: str, sha256_hex: str) -> None:
        self.path = path
        self.sha256_hex = sha256_hex

    @classmethod
    def from_env(cls, sha256_hex: str) -> ModelFault | None:
        path = os.environ.get(FAULT_ENV, "")
        return cls(path, sha256_hex) if path else None

    def check(self, *, golden: bool) -> int:
        """Raise for an injected invoke error; else the extra time to spend, in ns."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = [ln.split() for ln in f.read().splitlines()]
        except OSError:
            return 0
        for parts in lines:
            if len(parts) >= 2 and self.sha256_hex.startswith(parts[1].lower()):
                if parts[0] == "invoke-error" and not golden:
                    raise InferenceError(f"injected invoke error ({FAULT_ENV})")
                if parts[0] == "slow" and len(parts) == 3 and not golden:
                    return int(float(parts[2]) * 1000)
        return 0


def _quantization(path: str, which: str, detail: dict[str, Any], dtype: np.dtype[Any]) -> tuple[float, int]:
    """(scale, zero point) of a tensor: per-tensor for integer tensors, (1, 0) for float ones."""
    if dtype.kind == "f":
        return 1.0, 0
    scale, zero = detail.get("quantization", (0.0, 0))
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales) > 1:
        raise InferenceError(f"{path}: {which} tensor: expected per-tensor quantization, got {len(scales)} scales")
    if not scale > 0:
        raise InferenceError(f"{path}: {which} tensor is {dtype.name} without quantization parameters")
    return float(scale), int(zero)
