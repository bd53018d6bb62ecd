"""Update policy: which signed model version a device takes, what time it judges expiry by, when a swap failed.

Pure (no I/O, no clock, no randomness: everything is passed in), so each rule is a property test:

* ``in_rollout``: a device takes a staged version when a hash of (rollout id, device id) falls under the
  share. The same device always gets the same answer, a larger share keeps every device a smaller one had,
  and each rollout id shuffles the fleet anew, so the first 10 % are not always the same devices.
* ``reference_time``: boards without a real-time clock boot in 1970 until NTP answers; an attacker who
  replays old metadata (a freeze) counts on that. Expiry is judged by the latest of the system clock, the
  last good time the agent persisted, and the aggregator's signed receipt time.
* ``choose``: the highest version above the current one, never below the persisted floor, not refused,
  not for a newer agent, fits the pipeline, and is in this device's rollout; every other version gets a reason.
* ``golden_check``: outputs equal the release build's within the target's tolerance in quantization steps.
* ``judge_health``: the watch after a switch: any invoke error fails at once; the median latency must stay
  within a factor of the golden run's; the window passes after ``window_s`` with enough windows seen.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from provisioning.model_target import ModelTarget, parse_agent_version

__all__ = ["Choice", "GoldenResult", "HealthLimits", "HealthVerdict", "PipelineFit", "choose", "golden_check",
           "in_rollout", "judge_health", "reference_time", "rollout_bucket"]

BUCKETS = 10000  # basis points: a share of 1000 is 10 % of the fleet


def rollout_bucket(device_id: str, rollout_id: str) -> int:
    """This device's bucket in ``0..9999`` for one rollout (uniform: the top 64 bits of a SHA-256, scaled)."""
    h = hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()
    return (int.from_bytes(h[:8], "big") * BUCKETS) >> 64


def in_rollout(device_id: str, rollout_id: str, share_bp: int) -> bool:
    """True when this device is in the first ``share_bp`` basis points of the rollout."""
    return rollout_bucket(device_id, rollout_id) < share_bp


def reference_time(system_s: float, last_good_s: float | None = None, receipt_s: float | None = None) -> float:
    """The time expiry is judged by: the latest of the clocks we have (seconds since the Unix epoch)."""
    return max(t for t in (system_s, last_good_s, receipt_s) if t is not None)


@dataclass(frozen=True)
class PipelineFit:
    """What the running pipeline needs from a model: its window and channel count, and the agent's version."""

    window: int
    channels: int
    agent_version: str


@dataclass(frozen=True)
class Choice:
    """The version to take (or None) and why each other version of the model id was passed over."""

    target: ModelTarget | None
    skipped: tuple[tuple[int, str], ...]


def _why_not(t: ModelTarget, current: int, floor: int, refused: Mapping[int, str], device_id: str,
             fit: PipelineFit) -> str | None:
    if t.version < floor:
        return f"below the version floor {floor}"
    if t.version <= current:
        return "not newer than the running version"
    if t.version in refused:
        return f"refused earlier: {refused[t.version]}"
    if parse_agent_version(t.min_agent_version) > parse_agent_version(fit.agent_version):
        return f"needs agent {t.min_agent_version} (this is {fit.agent_version})"
    if t.input.window != fit.window or t.input.channels != fit.channels:
        return (f"input {t.input.window}x{t.input.channels} does not fit the pipeline's window "
                f"{fit.window}x{fit.channels}")
    if not in_rollout(device_id, t.rollout.id, t.rollout.share_bp):
        return f"not in rollout {t.rollout.id} ({t.rollout.share:.2%} of devices)"
    return None


def choose(targets: Sequence[ModelTarget], model_id: str, current: int, floor: int, refused: Mapping[int, str],
           device_id: str, fit: PipelineFit) -> Choice:
    """The highest eligible version of ``model_id``: above ``current``, never below ``floor``.

    A version equal to the floor is eligible when it is not running: the device lost its committed model
    file (a replaced SD card, a corrupt store) and runs the shipped one; it may fetch the floor again.
    """
    best: ModelTarget | None = None
    skipped: list[tuple[int, str]] = []
    for t in sorted((t for t in targets if t.model_id == model_id), key=lambda t: t.version, reverse=True):
        why = _why_not(t, current, floor, refused, device_id, fit)
        if why is None and best is None:
            best = t
        else:
            skipped.append((t.version, why or f"version {best.version if best else '?'} is newer"))
    return Choice(best, tuple(skipped))


@dataclass(frozen=True)
class GoldenResult:
    """Outcome of the golden vectors: ``max_diff`` in quantization steps, the worst vector and output."""

    ok: bool
    max_diff: int
    tolerance: int
    worst: tuple[int, int] | None = None  # (vector, output index)
    detail: str = ""


def golden_check(expected: Sequence[Sequence[int]], got: Sequence[Sequence[int]], tolerance: int) -> GoldenResult:
    """Every output within ``tolerance`` steps of the release build's (shapes must match exactly)."""
    if len(expected) != len(got):
        return GoldenResult(False, -1, tolerance, None, f"{len(got)} output vectors for {len(expected)} inputs")
    worst: tuple[int, int] | None = None
    max_diff = 0
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        if len(e) != len(g):
            return GoldenResult(False, -1, tolerance, (i, 0), f"vector {i}: {len(g)} outputs, expected {len(e)}")
        for j, (a, b) in enumerate(zip(e, g, strict=True)):
            d = abs(int(a) - int(b))
            if d > max_diff:
                max_diff, worst = d, (i, j)
    ok = max_diff <= tolerance
    detail = "" if ok or worst is None else (
        f"vector {worst[0]} output {worst[1]}: got {got[worst[0]][worst[1]]}, release build "
        f"{expected[worst[0]][worst[1]]} ({max_diff} steps > tolerance {tolerance})")
    return GoldenResult(ok, max_diff, tolerance, worst, detail)


@dataclass(frozen=True)
class HealthLimits:
    """How the health window after a switch judges the new model."""

    window_s: float = 30.0
    min_windows: int = 5
    latency_factor: float = 4.0  # median live latency may be this many times the golden run's median...
    latency_slack_us: float = 500.0  # ...plus this (tiny models invoke in µs; scheduling noise is not a fault)


@dataclass(frozen=True)
class HealthVerdict:
    """``watching`` (not decided yet), ``healthy`` or ``failed`` with the reason."""

    state: str
    reason: str = ""


def judge_health(elapsed_s: float, windows: int, errors: Sequence[str], latencies_us: Sequence[float],
                 golden_latency_us: float, limits: HealthLimits) -> HealthVerdict:
    """The health window's verdict after ``elapsed_s`` seconds with the new model."""
    if errors:
        return HealthVerdict("failed", f"invoke error: {errors[0]}")
    bound = limits.latency_factor * golden_latency_us + limits.latency_slack_us
    if len(latencies_us) >= limits.min_windows:
        med = statistics.median(latencies_us)
        if med > bound:
            return HealthVerdict("failed", f"median latency {med:.0f} µs over {len(latencies_us)} windows, more "
                                           f"than {limits.latency_factor:g} x the golden run's "
                                           f"{golden_latency_us:.0f} µs + {limits.latency_slack_us:.0f} µs")
    if elapsed_s >= limits.window_s and windows >= limits.min_windows:
        return HealthVerdict("healthy")
    return HealthVerdict("watching")
