"""The JSON metadata shipped beside a model (``models/<name>.json``), parsed and checked once.

A ``.tflite`` file knows its tensor shapes and quantization but not what its outputs mean, which sample
rate and window it was trained on, or how its input was normalised. The training tool
(``tools/train_vibration_model.py``) writes those facts beside the model; the agent reads them here so that
a model and a pipeline that disagree (other rate, other window, other channel count, other file) are
refused at start with a message naming the key and the file, instead of producing confident nonsense.

``from_dict`` is pure (the ``source`` argument only names the file in messages); ``load_model_meta`` is
the thin I/O shell. Keys this module does not know are kept in ``extra`` (training provenance, accuracy
breakdowns), never rejected: the training tool may add facts without breaking deployed agents.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

__all__ = ["ModelMeta", "load_model_meta"]

DTYPES = ("int8", "uint8", "int16", "float32")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_KNOWN = frozenset(
    {
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
    }
)


@dataclass(frozen=True)
class ModelMeta:
    """What a model's metadata says about it. ``channels`` is the channel count (the last input axis)."""

    name: str
    version: str
    labels: tuple[str, ...]
    input_shape: tuple[int, ...]
    input_dtype: str
    output_dtype: str
    sample_rate_hz: float
    window: int
    channels: int
    channel_names: tuple[str, ...]
    unit: str
    mean: tuple[float, ...]  # one per channel
    std: tuple[float, ...]  # one per channel, all > 0
    sha256: str | None = None  # hex digest of the .tflite the metadata was written for
    heldout_accuracy: float | None = None
    source: str = "<dict>"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> ModelMeta:
        """Check and convert parsed JSON; ``ValueError`` names ``source``, the key, expected vs got."""
        p = _Parser(d, source)
        if not isinstance(d, Mapping):
            raise ValueError(f"{source}: expected a JSON object at the top level, got {type(d).__name__}")
        name = p.string("name")
        version_raw = p.get("version", default="0")
        if isinstance(version_raw, bool) or not isinstance(version_raw, (str, int)):
            p.fail("version", "a string or integer", version_raw)
        labels = p.string_list("labels")
        if len(set(labels)) != len(labels):
            p.fail("labels", "unique labels", list(labels))
        input_shape = p.int_list("input_shape")
        input_dtype = p.choice("input_dtype", DTYPES)
        output_dtype = p.choice("output_dtype", DTYPES)
        rate = p.number("sample_rate_hz")
        if not rate > 0:
            p.fail("sample_rate_hz", "a positive number", rate)
        window = p.integer("window")
        if window < 1:
            p.fail("window", "an integer >= 1", window)
        ch_raw = p.get("channels")
        if isinstance(ch_raw, int) and not isinstance(ch_raw, bool):
            if ch_raw < 1:
                p.fail("channels", "a channel count >= 1 or a list of channel names", ch_raw)
            channels, channel_names = ch_raw, tuple(f"ch{i}" for i in range(ch_raw))
        else:
            channel_names = p.string_list("channels")
            channels = len(channel_names)
        if input_shape[0] != 1:
            p.fail("input_shape", "batch size 1 as the first dimension", list(input_shape))
        if input_shape[-1] != channels:
            p.fail("input_shape", f"last dimension equal to the channel count {channels}", list(input_shape))
        if len(input_shape) == 3 and input_shape[1] != window:
            p.fail("input_shape", f"[1, window={window}, channels={channels}]", list(input_shape))
        norm = p.get("normalisation")
        if not isinstance(norm, Mapping):
            p.fail("normalisation", "an object with mean and std", norm)
        mean = p.per_channel(norm, "normalisation.mean", "mean", channels)
        std = p.per_channel(norm, "normalisation.std", "std", channels)
        if not all(s > 0 for s in std):
            p.fail("normalisation.std", "values > 0", list(std))
        sha = p.get("sha256", default=None)
        if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha)):
            p.fail("sha256", "64 lowercase hex digits", sha)
        acc = p.get("heldout_accuracy", default=None)
        if acc is not None:
            acc = p.number("heldout_accuracy")
            if not 0.0 <= acc <= 1.0:
                p.fail("heldout_accuracy", "a fraction between 0 and 1", acc)
        unit = p.get("unit", default="")
        if not isinstance(unit, str):
            p.fail("unit", "a string", unit)
        return cls(
            name=name,
            version=str(version_raw),
            labels=labels,
            input_shape=input_shape,
            input_dtype=input_dtype,
            output_dtype=output_dtype,
            sample_rate_hz=rate,
            window=window,
            channels=channels,
            channel_names=channel_names,
            unit=unit,
            mean=mean,
            std=std,
            sha256=sha,
            heldout_accuracy=acc,
            source=source,
            extra={k: v for k, v in d.items() if k not in _KNOWN},
        )


def load_model_meta(path: str) -> ModelMeta:
    """Read and check a model's JSON metadata; ``ValueError`` naming the file for any problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read model metadata: {e.strerror or e}") from e
    try:
        d = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: expected JSON model metadata, got invalid JSON: {e}") from e
    return ModelMeta.from_dict(d, path)


def _finite_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class _Parser:
    """Typed access to one metadata dict; every failure names the file and the key."""

    _MISSING = object()

    def __init__(self, d: Mapping[str, Any], source: str) -> None:
        self.d = d
        self.source = source

    def fail(self, key: str, expected: str, got: Any) -> NoReturn:
        raise ValueError(f"{self.source}: {key}: expected {expected}, got {got!r}")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.d:
            return self.d[key]
        if default is self._MISSING:
            raise ValueError(f"{self.source}: {key}: missing required key")
        return default

    def string(self, key: str) -> str:
        v = self.get(key)
        if not isinstance(v, str) or not v:
            self.fail(key, "a non-empty string", v)
        return str(v)

    def string_list(self, key: str) -> tuple[str, ...]:
        v = self.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
            self.fail(key, "a non-empty list of non-empty strings", v)
        return tuple(v)

    def int_list(self, key: str) -> tuple[int, ...]:
        v = self.get(key)
        if (
            not isinstance(v, list)
            or not v
            or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v)
        ):
            self.fail(key, "a non-empty list of positive integers", v)
        return tuple(v)

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        v = self.get(key)
        if v not in allowed:
            self.fail(key, f"one of {list(allowed)}", v)
        return str(v)

    def number(self, key: str) -> float:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(key, "a finite number", v)
        return float(v)

    def integer(self, key: str) -> int:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, "an integer", v)
        return int(v)

    def per_channel(self, norm: Mapping[str, Any], key: str, sub: str, channels: int) -> tuple[float, ...]:
        if sub not in norm:
            raise ValueError(f"{self.source}: {key}: missing required key")
        v = norm[sub]
        values = v if isinstance(v, list) else [v]
        if not all(_finite_number(x) for x in values):
            self.fail(key, f"a finite number or a list of {channels}", v)
        if len(values) == 1:
            values = values * channels
        if len(values) != channels:
            self.fail(key, f"{channels} values (one per channel)", v)
        return tuple(float(x) for x in values)
