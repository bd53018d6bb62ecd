"""What a signed model target says about its model: the ``custom.edge`` object of a TUF target (DESIGN §11).

One schema for the three parties that read it: the release tool writes it (``provisioning.model_repo``), the
agent's updater decides with it (``agent.updates``), the aggregator lists signed digests from it. Keeping
parse and render here, pure and beside each other, means a field the release tool adds is a field the
agent checks, with one error message naming the target and the key path.

Layout (JSON, inside the target's ``custom``)::

    {"edge": {"format": 1,
              "model_id": "vibration", "version": 2,             # monotonic per model id
              "min_agent_version": "0.1.0",
              "input": {"shape": [1, 128, 3], "dtype": "int8", "window": 128, "channels": 3},
              "metadata": "<the model's metadata JSON, as text>",   # labels, rate, normalisation
              "golden": {"inputs": ["<base64 of the exact input tensor bytes>", ...],
                         "outputs": {"cpu": [[-128, 127, ...], ...], "<delegate>": [...]},
                         "tolerance": {"cpu/aarch64": 1, "edgetpu": 2}},  # quantization steps, 0 if absent
              "rollout": {"id": "vibration-2", "share_bp": 10000}}}    # basis points: 1000 = 10 %

TUF signs canonical JSON, which has no floating-point numbers: the rollout share is in basis points and the
metadata (means, standard deviations, accuracies) travels as the exact text of its JSON file.

Golden outputs are keyed by runtime (``cpu``, or a delegate's name): a delegate's int8 outputs may differ
from the CPU's, so a target may carry vectors for each. Tolerances are keyed ``<runtime>/<arch>``, then
``<runtime>``, then ``*``; a missing key means 0 (bit-exact).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from provisioning.errors import InvalidInput

__all__ = ["CUSTOM_KEY", "FORMAT", "Golden", "InputSpec", "InvalidTarget", "ModelTarget", "Rollout",
           "parse_agent_version", "target_path"]

FORMAT = 1
CUSTOM_KEY = "edge"
MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RUNTIME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VERSION_RE = re.compile(r"^\d+(\.\d+){0,3}$")
DTYPES: dict[str, tuple[int, int, int]] = {  # name -> (itemsize, min, max)
    "int8": (1, -128, 127), "uint8": (1, 0, 255), "int16": (2, -32768, 32767),
}
MAX_GOLDEN = 64  # vectors per target: a few are enough, and every one costs an invoke at update time
MAX_TOLERANCE = 255


class InvalidTarget(InvalidInput):
    """A target's ``custom`` does not have the documented shape; the message names the target and key path."""

    reason = "bad_target"


def target_path(model_id: str, version: int) -> str:
    """The TUF target path of one model version: ``<model id>/<version>/<model id>.tflite``."""
    return f"{model_id}/{version}/{model_id}.tflite"


def parse_agent_version(text: str) -> tuple[int, ...]:
    """``"0.1.0"`` -> ``(0, 1, 0)``; ``ValueError`` for anything else (pre-release tags are not versions here)."""
    if not isinstance(text, str) or not _VERSION_RE.match(text):
        raise ValueError(f"expected a version like 0.1.0, got {text!r}")
    return tuple(int(p) for p in text.split("."))


@dataclass(frozen=True)
class InputSpec:
    """The model's input: tensor shape and dtype, and the stream it was trained on."""

    shape: tuple[int, ...]
    dtype: str
    window: int
    channels: int

    @property
    def tensor_bytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * DTYPES[self.dtype][0]


@dataclass(frozen=True)
class Golden:
    """Golden vectors: exact input tensors, the release build's outputs per runtime, tolerances in steps."""

    inputs: tuple[bytes, ...]
    outputs: Mapping[str, tuple[tuple[int, ...], ...]]
    tolerance: Mapping[str, int] = field(default_factory=dict)

    def tolerance_for(self, runtime: str, arch: str) -> int:
        """Steps allowed for this runtime on this CPU architecture (0 unless the target says otherwise)."""
        for key in (f"{runtime}/{arch}", runtime, "*"):
            if key in self.tolerance:
                return self.tolerance[key]
        return 0

    def outputs_for(self, runtime: str) -> tuple[tuple[int, ...], ...] | None:
        """The expected outputs for ``runtime``, else the CPU's (a delegate with no vectors of its own)."""
        return self.outputs.get(runtime, self.outputs.get("cpu"))


@dataclass(frozen=True)
class Rollout:
    """Staged rollout: a device takes the version when hash(device id, ``id``) falls under ``share``."""

    id: str
    share_bp: int = 10000  # basis points of the fleet: 10000 = every device

    @property
    def share(self) -> float:
        return self.share_bp / 10000


@dataclass(frozen=True)
class ModelTarget:
    """One signed model version, as its TUF target describes it."""

    path: str
    length: int
    sha256: str  # hex
    model_id: str
    version: int
    min_agent_version: str
    input: InputSpec
    metadata_json: str  # the model's metadata file, exactly as released (ModelMeta.from_dict on the device)
    golden: Golden
    rollout: Rollout

    @classmethod
    def from_target(cls, path: str, length: int, hashes: Mapping[str, str], custom: Any) -> ModelTarget:
        """Check a target's custom object (pure); ``InvalidTarget`` names the path and the key."""
        p = _Parser(path)
        sha = hashes.get("sha256")
        if not isinstance(sha, str) or not re.match(r"^[0-9a-f]{64}$", sha):
            p.fail("hashes.sha256", "a sha256 hash (64 lowercase hex digits)", sha)
        if not isinstance(custom, Mapping) or not isinstance(custom.get(CUSTOM_KEY), Mapping):
            p.fail(f"custom.{CUSTOM_KEY}", "an object (this target is not an edge model)", custom)
        e = custom[CUSTOM_KEY]
        k = f"custom.{CUSTOM_KEY}"
        fmt = p.integer(e, f"{k}.format")
        if fmt != FORMAT:
            p.fail(f"{k}.format", f"format {FORMAT} (this agent's)", fmt)
        model_id = p.string(e, f"{k}.model_id")
        if not MODEL_ID_RE.match(model_id):
            p.fail(f"{k}.model_id", "1-64 of [a-z0-9_-] starting with a letter or digit", model_id)
        version = p.integer(e, f"{k}.version")
        if version < 1:
            p.fail(f"{k}.version", "an integer >= 1", version)
        if path != target_path(model_id, version):
            p.fail("path", f"{target_path(model_id, version)} (from model_id and version)", path)
        mav = p.string(e, f"{k}.min_agent_version")
        try:
            parse_agent_version(mav)
        except ValueError as err:
            p.fail(f"{k}.min_agent_version", "a version like 0.1.0", mav, err)
        spec = _input_spec(p, p.obj(e, f"{k}.input"), f"{k}.input")
        meta_json = p.string(e, f"{k}.metadata")
        try:
            meta = json.loads(meta_json)
        except ValueError as err:
            p.fail(f"{k}.metadata", "the text of a JSON object", meta_json, err)
        if not isinstance(meta, Mapping):
            p.fail(f"{k}.metadata", "the text of a JSON object", meta_json)
        if meta.get("sha256") != sha:
            p.fail(f"{k}.metadata.sha256", f"the target's sha256 {sha}", meta.get("sha256"))
        golden = _golden(p, p.obj(e, f"{k}.golden"), f"{k}.golden", spec)
        ro = p.obj(e, f"{k}.rollout")
        rid = p.string(ro, f"{k}.rollout.id")
        share = p.integer(ro, f"{k}.rollout.share_bp")
        if not 0 <= share <= 10000:
            p.fail(f"{k}.rollout.share_bp", "basis points within 0..10000", share)
        if not isinstance(length, int) or length < 1:
            p.fail("length", "a positive length", length)
        return cls(path=path, length=length, sha256=sha, model_id=model_id, version=version,
                   min_agent_version=mav, input=spec, metadata_json=meta_json, golden=golden,
                   rollout=Rollout(rid, share))

    def custom(self) -> dict[str, Any]:
        """The ``custom`` object of this target (the inverse of ``from_target``)."""
        g = self.golden
        return {CUSTOM_KEY: {
            "format": FORMAT,
            "model_id": self.model_id,
            "version": self.version,
            "min_agent_version": self.min_agent_version,
            "input": {"shape": list(self.input.shape), "dtype": self.input.dtype, "window": self.input.window,
                      "channels": self.input.channels},
            "metadata": self.metadata_json,
            "golden": {"inputs": [base64.b64encode(b).decode() for b in g.inputs],
                       "outputs": {rt: [list(v) for v in vs] for rt, vs in g.outputs.items()},
                       "tolerance": dict(g.tolerance)},
            "rollout": {"id": self.rollout.id, "share_bp": self.rollout.share_bp},
        }}


def _input_spec(p: _Parser, d: Mapping[str, Any], k: str) -> InputSpec:
    shape = d.get("shape")
    if not isinstance(shape, list) or not shape or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in shape):
        p.fail(f"{k}.shape", "a non-empty list of positive integers", shape)
    dtype = d.get("dtype")
    if dtype not in DTYPES:
        p.fail(f"{k}.dtype", f"one of {sorted(DTYPES)}", dtype)
    window = p.integer(d, f"{k}.window")
    channels = p.integer(d, f"{k}.channels")
    if window < 1 or channels < 1:
        p.fail(f"{k}.window", "window and channels >= 1", (window, channels))
    return InputSpec(tuple(shape), str(dtype), window, channels)


def _golden(p: _Parser, d: Mapping[str, Any], k: str, spec: InputSpec) -> Golden:
    raw_inputs = d.get("inputs")
    if not isinstance(raw_inputs, list) or not 1 <= len(raw_inputs) <= MAX_GOLDEN:
        p.fail(f"{k}.inputs", f"a list of 1..{MAX_GOLDEN} base64 strings", raw_inputs)
    inputs = []
    for i, s in enumerate(raw_inputs):
        try:
            b = base64.b64decode(s, validate=True) if isinstance(s, str) else None
        except (binascii.Error, ValueError):
            b = None
        if b is None or len(b) != spec.tensor_bytes:
            p.fail(f"{k}.inputs[{i}]", f"base64 of {spec.tensor_bytes} bytes (the input tensor)",
                   f"{str(s)[:40]}...")
        inputs.append(b)
    outs = d.get("outputs")
    if not isinstance(outs, Mapping) or not outs:
        p.fail(f"{k}.outputs", "an object: runtime -> one output vector per input", outs)
    outputs: dict[str, tuple[tuple[int, ...], ...]] = {}
    for rt, vectors in outs.items():
        if not RUNTIME_RE.match(str(rt)):
            p.fail(f"{k}.outputs", "runtime names of [A-Za-z0-9_.-]", rt)
        if not isinstance(vectors, list) or len(vectors) != len(inputs):
            p.fail(f"{k}.outputs.{rt}", f"{len(inputs)} output vectors (one per input)", vectors)
        width = None
        parsed = []
        for j, v in enumerate(vectors):
            if not isinstance(v, list) or not v or not all(
                    isinstance(x, int) and not isinstance(x, bool) and -32768 <= x <= 65535 for x in v):
                p.fail(f"{k}.outputs.{rt}[{j}]", "a non-empty list of integers (raw output tensor values)", v)
            if width is not None and len(v) != width:
                p.fail(f"{k}.outputs.{rt}[{j}]", f"{width} values like the others", len(v))
            width = len(v)
            parsed.append(tuple(v))
        outputs[str(rt)] = tuple(parsed)
    if "cpu" not in outputs:
        p.fail(f"{k}.outputs.cpu", "the CPU's outputs (every target carries them)", sorted(outputs))
    tol = d.get("tolerance", {})
    if not isinstance(tol, Mapping):
        p.fail(f"{k}.tolerance", "an object: runtime[/arch] -> steps", tol)
    tolerance: dict[str, int] = {}
    for key, steps in tol.items():
        if not re.match(r"^([A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,32})?|\*)$", str(key)):
            p.fail(f"{k}.tolerance", "keys like cpu, cpu/aarch64 or *", key)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_TOLERANCE:
            p.fail(f"{k}.tolerance.{key}", f"an integer number of steps within 0..{MAX_TOLERANCE}", steps)
        tolerance[str(key)] = steps
    return Golden(tuple(inputs), outputs, tolerance)


class _Parser:
    """Typed access with failures naming the target and the key path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, expected: str, got: Any, cause: BaseException | None = None) -> NoReturn:
        text = repr(got)
        raise InvalidTarget(f"target {self.path}: {key}: expected {expected}, got "
                            f"{text[:80] + '...' if len(text) > 80 else text}") from cause

    def _get(self, d: Mapping[str, Any], key: str) -> Any:
        name = key.rsplit(".", 1)[-1]
        if name not in d:
            raise InvalidTarget(f"target {self.path}: {key}: missing required key")
        return d[name]

    def obj(self, d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        v = self._get(d, key)
        if not isinstance(v, Mapping):
            self.fail(key, "an object", v)
        return v

    def string(self, d: Mapping[str, Any], key: str) -> str:
        v = self._get(d, key)
        if not isinstance(v, str) or not v:
            self.fail(key, "a non-empty string", v)
        return v

    def integer(self, d: Mapping[str, Any], key: str) -> int:
        v = self._get(d, key)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, "an integer", v)
        return v
