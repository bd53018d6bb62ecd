"""Affine int8 quantization for model inputs and outputs (pure numpy, no I/O).

TFLite full-integer models take and return integers: ``real = scale * (q - zero_point)``. The scale and
zero point come from the model's own tensors, never from configuration.

For a tiny model, turning a float window into the int8 input costs more than the inference itself when
done naively (normalise, divide, round, add, clip, cast: six temporaries). ``AffineQuantizer`` therefore
fuses normalisation and quantization into one per-channel affine map computed once at model load::

    q = clip(rint(x * a + b), qmin, qmax)    a = 1 / (std * scale),  b = zero_point - mean / (std * scale)

evaluated in float32 into a preallocated scratch buffer, then cast into the caller's int8 buffer: about
2.2 µs for a (128, 3) window here, against 6.7 µs for the same steps written naively.

Rounding: ``np.rint``, i.e. round half to even, applied to ``x / scale + zero_point`` (the zero point is
added before rounding, as the fused form must). This differs from "round, then add the zero point" only for
values exactly halfway between two steps, which float sensor data practically never hits. Values outside
the representable range saturate to the dtype's limits (they never wrap).
"""

from __future__ import annotations

import importlib

import numpy as np
import numpy.typing as npt

__all__ = ["AffineQuantizer", "dequantize", "normalise", "quantize"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.integer]


def _limits(dtype: npt.DTypeLike) -> tuple[int, int]:
    dt = np.dtype(dtype)
    if dt.kind not in "iu":
        raise ValueError(f"quantized dtype must be an integer type, got {dt}")
    info = np.iinfo(dt)
    return int(info.min), int(info.max)


def quantize(
    x: npt.ArrayLike, scale: float, zero_point: int, dtype: npt.DTypeLike = np.int8
) -> npt.NDArray[np.integer]:
    """``clip(rint(x / scale + zero_point))`` as ``dtype`` (int8 by default); see the module docstring."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    lo, hi = _limits(dtype)
    t = np.asarray(x, dtype=np.float32) * np.float32(1.0 / scale)
    t += np.float32(zero_point)
    np.rint(t, out=t)
    np.clip(t, lo, hi, out=t)
    q: npt.NDArray[np.integer] = t.astype(dtype)
    return q


def dequantize(q: npt.ArrayLike, scale: float, zero_point: int) -> FloatArray:
    """``scale * (q - zero_point)`` as float32."""
    t = np.asarray(q).astype(np.float32)
    t -= np.float32(zero_point)
    t *= np.float32(scale)
    return t


def normalise(x: npt.ArrayLike, mean: npt.ArrayLike, std: npt.ArrayLike) -> FloatArray:
    """``(x - mean) / std`` in float32; ``mean`` and ``std`` broadcast over the last axis (channels)."""
    std_a = np.asarray(std, dtype=np.float32)
    if np.any(std_a <= 0):
        raise ValueError(f"std must be positive, got {std!r}")
    t = np.asarray(x, dtype=np.float32) - np.asarray(mean, dtype=np.float32)
    t /= std_a
    return t


def _clip_ufunc() -> np.ufunc | None:
    """numpy's ``clip`` ufunc: 3x faster than the ``np.clip`` wrapper on small arrays (0.7 vs 2.4 µs).

    It lives in a private module (``numpy._core.umath`` in numpy 2, ``numpy.core.umath`` in 1.x); if a
    numpy release moves it, ``np.maximum`` + ``np.minimum`` (public, same result) take over.
    """
    for name in ("numpy._core.umath", "numpy.core.umath"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        f = getattr(mod, "clip", None)
        if isinstance(f, np.ufunc):
            return f
    return None


_CLIP = _clip_ufunc()


class AffineQuantizer:
    """Fused normalise + quantize into a caller's buffer, with no allocation per call.

    ``mean`` and ``std`` are scalars or one value per channel (the last axis of ``shape``). The
    per-channel constants are expanded to the full input shape once: element-wise ops on contiguous
    arrays are 4x faster than broadcasting a 3-vector over a (128, 3) window. A float32 ``dtype``
    (float models) only normalises. Not thread-safe unless each caller passes its own ``scratch``.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        mean: npt.ArrayLike,
        std: npt.ArrayLike,
        scale: float,
        zero_point: int,
        dtype: npt.DTypeLike = np.int8,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.dtype = np.dtype(dtype)
        self.integer = self.dtype.kind in "iu"
        if not self.integer:
            if self.dtype != np.float32:
                raise ValueError(f"target dtype must be an integer type or float32, got {self.dtype}")
            scale, zero_point = 1.0, 0
        channels = shape[-1]
        mean_a = np.broadcast_to(np.asarray(mean, dtype=np.float64), (channels,))
        std_a = np.broadcast_to(np.asarray(std, dtype=np.float64), (channels,))
        if np.any(std_a <= 0) or not np.all(np.isfinite(std_a)) or not np.all(np.isfinite(mean_a)):
            raise ValueError(f"normalisation must be finite with std > 0, got mean={mean!r} std={std!r}")
        self.shape = tuple(shape)
        self.qmin, self.qmax = _limits(dtype) if self.integer else (0, 0)
        self._lo, self._hi = np.float32(self.qmin), np.float32(self.qmax)
        a = (1.0 / (std_a * scale)).astype(np.float32)
        b = (zero_point - mean_a / (std_a * scale)).astype(np.float32)
        self.a: FloatArray = np.ascontiguousarray(np.broadcast_to(a, self.shape))
        self.b: FloatArray = np.ascontiguousarray(np.broadcast_to(b, self.shape))
        self._tmp: FloatArray = np.empty(self.shape, dtype=np.float32)

    def __call__(
        self, x: npt.NDArray[np.floating], out: npt.NDArray[np.generic] | None = None, *,
        scratch: FloatArray | None = None,
    ) -> npt.NDArray[np.generic]:
        """Quantize ``x`` (shape ``self.shape``) into ``out`` (allocated when None); return ``out``.

        Values are clipped to the dtype's range before rounding (same result: the bounds are integers).
        """
        tmp = self._tmp if scratch is None else scratch
        np.multiply(x, self.a, out=tmp)
        np.add(tmp, self.b, out=tmp)
        if self.integer:
            if _CLIP is not None:
                _CLIP(tmp, self._lo, self._hi, out=tmp)
            else:
                np.maximum(tmp, self._lo, out=tmp)
                np.minimum(tmp, self._hi, out=tmp)
            np.rint(tmp, out=tmp)
        if out is None:
            out = np.empty(self.shape, dtype=self.dtype)
        out[...] = tmp  # assignment casts unsafely: float32 -> int8 of values already in range
        return out
