"""Physical signal model of 3-axis accelerometer vibration on a rotating machine (motor or pump on a shaft).

Why it exists: the vibration model is trained on it (``tools/train_vibration_model.py``), the MCU simulator
and the agent's simulated source stream it, and tests check the deployed int8 model against it. One
documented model keeps the three consistent. Pure numpy: no I/O, no clock, randomness only from the
``numpy.random.Generator`` passed in. See ``docs/model.md`` for the full derivation.

Sensor: a MEMS accelerometer on the bearing housing of a horizontal machine, sampled at 1000 Hz (an
ADXL355-class ODR; Nyquist 500 Hz covers the shaft harmonics and the 250–400 Hz housing resonance the
bearing impacts excite). Axes: ``x`` horizontal radial, ``y`` vertical radial (gravity, +1 g), ``z`` axial.
Unit g. Shaft rotation ``f_r`` is 20–30 Hz (4-pole induction motor at 50/60 Hz, 1200–1800 rpm).
With ``θ(t) = 2π f_r t`` and per-stream random phases ``φ``, each class adds to a common baseline:

* all classes: gravity ``G`` (mounting tilt of a few degrees), residual imbalance ``r`` at 1x in
  quadrature on x/y, ``0.3 r`` at 2x radial and 1x axial, and white sensor plus machine noise of
  ``noise_g_rms`` g RMS per axis (a stated figure, not a guess of the sensor's floor: it includes
  process noise from flow and windage).
* ``normal``: the baseline alone.
* ``imbalance``: centrifugal force rotating at 1x: ``x = A cos(θ+φ)``, ``y = k A sin(θ+φ)`` (quadrature,
  ``k`` < 1 as the vertical support is stiffer), little axial (``0.05 A``) and 2x (``0.05 A``).
* ``misalignment``: strong 2x radial (parallel offset) with a 1x radial part, and a large axial component
  at 1x and 2x (angular offset), axial ≈ radial in size, plus a small 3x.
* ``bearing_fault``: an outer-race defect gives one impact per ball pass, at ``BPFO = b f_r`` with
  ``b`` ≈ 3–4.5 (3.58 for a 6205 bearing) and 1 % interval jitter from ball slip. Each impact rings the
  housing resonance ``f_n`` (250–400 Hz) as ``e^{-σ t} sin(2π f_d t)``, ``σ = 2π f_n ζ``,
  ``f_d = f_n sqrt(1 - ζ²)``, damping ``ζ`` 5–12 %. Impact amplitudes are modulated at 1x by the rotating
  load (depth ``m``) and vary ±10 % each; they appear mostly on y (load zone), less on x and z.

``VibrationStream`` is phase-coherent across ``next`` calls: every term is a function of the absolute
sample index, impacts are generated as an event list that outlives chunk edges, and noise comes from a
dedicated child generator, so any chunking of a stream gives the same samples as one ``synthesize``
call with the same generator state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

__all__ = [
    "CHANNELS",
    "CLASSES",
    "SAMPLE_RATE_HZ",
    "WINDOW",
    "MachineParams",
    "VibrationStream",
    "random_params",
    "synthesize",
]

CLASSES: tuple[str, ...] = ("normal", "imbalance", "misalignment", "bearing_fault")
SAMPLE_RATE_HZ: float = 1000.0
WINDOW: int = 128  # 128 ms: 2.5–3.8 shaft turns, 11–19 bearing impacts; 7.8 Hz FFT bins
CHANNELS: int = 3

# Bearing impact seen on each axis: the load zone is vertical (y); the housing also moves x and axially.
_BEARING_GAINS = np.array([0.6, 1.0, 0.3])
_TAIL_TIME_CONSTANTS = 9.0  # ring-down kept until e^-9 (1.2e-4) of the impact amplitude
_BLOCK = 16384  # internal block: bounds memory of the impact scatter for huge `next` calls
_EVENT_BATCH = 256


@dataclass(frozen=True)
class MachineParams:
    """One machine's physical parameters (defaults: a 4-pole 50 Hz motor with a 6205 bearing)."""

    shaft_hz: float = 24.75  # 1485 rpm
    residual_1x_g: float = 0.02  # residual imbalance present on every machine
    imbalance_g: float = 0.30  # 1x radial amplitude (x) under imbalance
    anisotropy: float = 0.8  # y/x ratio of the 1x response (stiffer vertical support)
    misalign_1x_g: float = 0.10
    misalign_2x_g: float = 0.20
    misalign_axial_g: float = 0.25  # axial amplitude, 60 % at 1x and 40 % at 2x
    bpfo_order: float = 3.58  # ball-pass frequency outer race / shaft frequency
    resonance_hz: float = 320.0
    damping_ratio: float = 0.08
    impulse_g: float = 0.8  # peak of one impact's ring-down on y before modulation
    am_depth: float = 0.5  # 1x amplitude modulation depth of the impacts
    slip_jitter: float = 0.01  # std of the impact interval, fraction of 1/BPFO
    noise_g_rms: float = 0.03  # white noise per axis
    gravity_g: tuple[float, float, float] = (0.0, 1.0, 0.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "gravity_g":
                continue
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"MachineParams.{f.name}: expected a finite number >= 0, got {value!r}")
        for name in ("shaft_hz", "bpfo_order", "resonance_hz", "damping_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MachineParams.{name}: expected > 0, got {getattr(self, name)!r}")
        if self.damping_ratio >= 1:
            raise ValueError(f"MachineParams.damping_ratio: expected < 1, got {self.damping_ratio!r}")
        if self.am_depth > 1:
            raise ValueError(f"MachineParams.am_depth: expected <= 1, got {self.am_depth!r}")
        if self.slip_jitter > 0.2:
            raise ValueError(f"MachineParams.slip_jitter: expected <= 0.2, got {self.slip_jitter!r}")
        g = self.gravity_g
        if len(g) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in g):
            raise ValueError(f"MachineParams.gravity_g: expected 3 finite numbers, got {g!r}")

    def highest_hz(self) -> float:
        """Highest frequency the model puts energy at (the sample rate must exceed twice this)."""
        return max(3 * self.shaft_hz, self.bpfo_order * self.shaft_hz, self.resonance_hz)


def random_params(rng: np.random.Generator) -> MachineParams:
    """Per-window machine variation for training: speed, amplitudes, resonance, noise and mounting tilt."""
    _check_rng(rng)
    u = rng.uniform
    tilt_x, tilt_z = np.radians(u(-5.0, 5.0, size=2))
    # (0, 1, 0) tilted about z then about x: still exactly 1 g
    gravity = (
        float(np.sin(tilt_x)),
        float(np.cos(tilt_x) * np.cos(tilt_z)),
        float(np.cos(tilt_x) * np.sin(tilt_z)),
    )
    return MachineParams(
        shaft_hz=float(u(20.0, 30.0)),
        residual_1x_g=float(u(0.005, 0.04)),
        imbalance_g=float(u(0.12, 0.5)),
        anisotropy=float(u(0.6, 1.0)),
        misalign_1x_g=float(u(0.04, 0.15)),
        misalign_2x_g=float(u(0.12, 0.35)),
        misalign_axial_g=float(u(0.12, 0.4)),
        bpfo_order=float(u(3.0, 4.5)),
        resonance_hz=float(u(250.0, 400.0)),
        damping_ratio=float(u(0.05, 0.12)),
        impulse_g=float(u(0.3, 1.2)),
        am_depth=float(u(0.2, 0.8)),
        slip_jitter=float(u(0.005, 0.02)),
        noise_g_rms=float(u(0.01, 0.1)),
        gravity_g=gravity,
    )


def synthesize(
    fault: str,
    n_samples: int,
    rng: np.random.Generator,
    *,
    rate_hz: float = SAMPLE_RATE_HZ,
    t0_s: float = 0.0,
    params: MachineParams | None = None,
) -> npt.NDArray[np.float32]:
    """``n_samples`` of one class as an ``(n, 3)`` float32 array in g; the first sample is at ``t0_s``."""
    _check_count("n_samples", n_samples)
    return VibrationStream(fault, rng, rate_hz=rate_hz, params=params, t0_s=t0_s).next(n_samples)


class VibrationStream:
    """A continuous, phase-coherent vibration signal for simulators; ``fault`` may change mid-stream."""

    def __init__(
        self,
        fault: str,
        rng: np.random.Generator,
        *,
        rate_hz: float = SAMPLE_RATE_HZ,
        params: MachineParams | None = None,
        t0_s: float = 0.0,
    ) -> None:
        _check_rng(rng)
        if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float)) or not math.isfinite(rate_hz):
            raise ValueError(f"rate_hz: expected a finite number, got {rate_hz!r}")
        p = MachineParams() if params is None else params
        if not isinstance(p, MachineParams):
            raise ValueError(f"params: expected MachineParams or None, got {type(p).__name__}")
        if rate_hz <= 2 * p.highest_hz():
            raise ValueError(
                f"rate_hz: expected > {2 * p.highest_hz():g} (twice the highest modelled frequency), got {rate_hz!r}"
            )
        if isinstance(t0_s, bool) or not isinstance(t0_s, (int, float)) or not math.isfinite(t0_s):
            raise ValueError(f"t0_s: expected a finite number, got {t0_s!r}")
        self.rate_hz = float(rate_hz)
        self.params = p
        self.t0_s = float(t0_s)
        self._index = 0  # absolute index of the next sample
        self._phases = rng.uniform(0.0, 2 * np.pi, size=8)
        self._noise_rng = np.random.default_rng(rng.integers(0, 2**63 - 1, size=2))
        self._impact_rng = np.random.default_rng(rng.integers(0, 2**63 - 1, size=2))
        sigma = 2 * np.pi * p.resonance_hz * p.damping_ratio
        self._sigma = sigma
        self._omega_d = 2 * np.pi * p.resonance_hz * math.sqrt(1 - p.damping_ratio**2)
        self._tail_s = _TAIL_TIME_CONSTANTS / sigma
        self._tail_n = math.ceil(self._tail_s * self.rate_hz) + 1
        self._period_s = 1.0 / (p.bpfo_order * p.shaft_hz)
        self._ev_u = np.empty(0)  # impact times relative to t0_s
        self._ev_a = np.empty(0)
        self._last_u: float | None = None  # last generated impact; None while not generating
        self._fault = ""
        self.fault = fault

    @property
    def fault(self) -> str:
        """The class currently simulated; set it to change the machine's condition from the next sample."""
        return self._fault

    @fault.setter
    def fault(self, value: str) -> None:
        if value not in CLASSES:
            raise ValueError(f"fault: expected one of {CLASSES}, got {value!r}")
        if value == self._fault:
            return
        now_u = self._index / self.rate_hz
        if value == "bearing_fault":
            start = now_u - self._tail_s if self._index == 0 else now_u
            self._last_u = start - self._period_s * float(self._impact_rng.uniform())
        else:
            keep = self._ev_u < now_u  # past impacts ring out; future ones never happen
            self._ev_u, self._ev_a = self._ev_u[keep], self._ev_a[keep]
            self._last_u = None
        self._fault = value
        self._coef = self._harmonic_coefficients(value)

    def next(self, n: int) -> npt.NDArray[np.float32]:
        """The next ``n`` samples, ``(n, 3)`` float32 in g, continuous with the previous call."""
        _check_count("n", n)
        out = np.empty((n, CHANNELS), dtype=np.float32)
        for start in range(0, n, _BLOCK):
            m = min(_BLOCK, n - start)
            out[start : start + m] = self._block(m)
        return out

    def _block(self, n: int) -> npt.NDArray[np.float64]:
        p = self.params
        j = np.arange(self._index, self._index + n, dtype=np.float64)
        t = self.t0_s + j / self.rate_hz
        theta = 2 * np.pi * p.shaft_hz * t
        c1, s1 = np.cos(theta), np.sin(theta)
        c2, s2 = c1 * c1 - s1 * s1, 2 * s1 * c1
        c3, s3 = c2 * c1 - s2 * s1, s2 * c1 + c2 * s1
        basis = np.stack([c1, s1, c2, s2, c3, s3], axis=1)
        x = basis @ self._coef
        x += np.asarray(p.gravity_g)
        x += self._noise_rng.standard_normal((n, CHANNELS)) * p.noise_g_rms
        if self._last_u is not None or self._ev_u.size:
            x += self._impacts(n)[:, None] * _BEARING_GAINS
        self._index += n
        return x

    def _harmonic_coefficients(self, fault: str) -> npt.NDArray[np.float64]:
        """Map [cos θ, sin θ, cos 2θ, sin 2θ, cos 3θ, sin 3θ] to (x, y, z) for ``fault`` plus the baseline."""
        p, ph = self.params, self._phases
        coef = np.zeros((6, CHANNELS))

        def add(h: int, axis: int, amp: float, phase: float) -> None:
            # amp * cos(hθ + phase) = amp cos(phase) cos hθ - amp sin(phase) sin hθ
            coef[2 * (h - 1), axis] += amp * math.cos(phase)
            coef[2 * (h - 1) + 1, axis] -= amp * math.sin(phase)

        def rotating(h: int, amp: float, ratio: float, phase: float) -> None:
            add(h, 0, amp, phase)
            add(h, 1, amp * ratio, phase - np.pi / 2)  # y lags x by 90°: a force rotating with the shaft

        r = p.residual_1x_g
        rotating(1, r, p.anisotropy, ph[0])
        rotating(2, 0.3 * r, 1.0, ph[1])
        add(1, 2, 0.3 * r, ph[2])
        if fault == "imbalance":
            rotating(1, p.imbalance_g, p.anisotropy, ph[0])
            rotating(2, 0.05 * p.imbalance_g, 1.0, ph[1])
            add(1, 2, 0.05 * p.imbalance_g, ph[2])
        elif fault == "misalignment":
            rotating(1, p.misalign_1x_g, p.anisotropy, ph[3])
            add(2, 0, p.misalign_2x_g, ph[4])
            add(2, 1, p.misalign_2x_g * p.anisotropy, ph[4] + 0.5)
            add(1, 2, 0.6 * p.misalign_axial_g, ph[5])
            add(2, 2, 0.4 * p.misalign_axial_g, ph[6])
            rotating(3, 0.15 * p.misalign_2x_g, 1.0, ph[7])
        return coef

    def _extend_events(self, until_u: float) -> None:
        """Generate impacts up to ``until_u`` in fixed batches so chunking never changes the draws."""
        p = self.params
        while self._last_u is not None and self._last_u < until_u:
            eps = self._impact_rng.standard_normal(_EVENT_BATCH)
            var = self._impact_rng.uniform(-0.1, 0.1, size=_EVENT_BATCH)
            intervals = self._period_s * np.maximum(1 + p.slip_jitter * eps, 0.5)
            u = self._last_u + np.cumsum(intervals)
            load = 2 * np.pi * p.shaft_hz * (self.t0_s + u) + self._phases[0]
            a = p.impulse_g * (1 + p.am_depth * np.cos(load)) * (1 + var)
            self._ev_u = np.concatenate([self._ev_u, u])
            self._ev_a = np.concatenate([self._ev_a, a])
            self._last_u = float(u[-1])

    def _impacts(self, n: int) -> npt.NDArray[np.float64]:
        """Sum of ring-downs of every impact that touches samples [index, index + n)."""
        end_u = (self._index + n) / self.rate_hz
        self._extend_events(end_u)
        # first sample at or after each impact; ring-downs are kept for _tail_n samples (to e^-9)
        first = np.ceil(self._ev_u * self.rate_hz).astype(np.int64)
        keep = first + self._tail_n > self._index
        self._ev_u, self._ev_a, first = self._ev_u[keep], self._ev_a[keep], first[keep]
        sel = self._ev_u < end_u
        u, a, first = self._ev_u[sel], self._ev_a[sel], first[sel]
        out = np.zeros(n)
        if u.size == 0:
            return out
        j = first[:, None] + np.arange(self._tail_n)[None, :]
        valid = (j >= self._index) & (j < self._index + n)
        dt = j[valid] / self.rate_hz - np.broadcast_to(u[:, None], j.shape)[valid]
        amp = np.broadcast_to(a[:, None], j.shape)[valid]
        ring = amp * np.exp(-self._sigma * dt) * np.sin(self._omega_d * dt)
        summed = np.bincount(j[valid] - self._index, weights=ring, minlength=n)
        return summed.astype(np.float64, copy=False)


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected numpy.random.Generator, got {type(rng).__name__}")


def _check_count(name: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {n!r}")
