"""Maps the MCU's microsecond clock to the host's clock: an offset and a drift, from arrival times alone.

Every frame that carries an MCU time ``m`` and arrives at host time ``h`` gives ``h - m >= offset(m)``:
transmission only ever adds delay. So the offset is the lower envelope of ``d = h - m``. ``ClockMap``
keeps the minimum ``d`` per bucket of MCU time (1 s by default, the last 64 buckets), fits the drift as
the least-squares slope through those minima, and then lowers the line until it touches the lowest
point, so mapped times are late by no more than the smallest latency seen. A crystal off by 50 ppm is
3 ms per minute: without the drift term a long-running link would slide. Pure: the caller passes times.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["ClockMap"]

_MAX_DRIFT = 0.02  # a 2 % error is a wrong clock configuration, not drift: clamp


class ClockMap:
    """Lower-envelope offset + drift estimate between the MCU clock and a host clock (both µs)."""

    def __init__(self, bucket_us: int = 1_000_000, max_buckets: int = 64, min_span_us: int = 2_000_000) -> None:
        self.bucket_us = bucket_us
        self.max_buckets = max_buckets
        self.min_span_us = min_span_us
        self._buckets: OrderedDict[int, tuple[int, int]] = OrderedDict()  # bucket -> (mcu_us, min d)
        self._dirty = False
        self._x0 = 0
        self._a = 0.0
        self._b = 0.0
        self.observations = 0

    @property
    def ready(self) -> bool:
        """At least one observation: ``to_host`` has something to go on."""
        return bool(self._buckets)

    def reset(self) -> None:
        """Forget everything (the MCU restarted its clock)."""
        self._buckets.clear()
        self._dirty = False
        self._a = self._b = 0.0

    def observe(self, mcu_us: int, host_us: int) -> None:
        """A frame stamped ``mcu_us`` by the MCU arrived at ``host_us``."""
        self.observations += 1
        d = host_us - mcu_us
        key = mcu_us // self.bucket_us
        old = self._buckets.get(key)
        if old is None:
            self._buckets[key] = (mcu_us, d)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
            self._dirty = True
        elif d < old[1]:
            self._buckets[key] = (mcu_us, d)
            self._dirty = True

    def _fit(self) -> None:
        self._dirty = False
        pts = list(self._buckets.values())
        self._x0 = pts[-1][0]
        xs = [float(m - self._x0) for m, _ in pts]
        ds = [float(d) for _, d in pts]
        b = 0.0
        if len(pts) >= 3 and max(xs) - min(xs) >= self.min_span_us:
            mx = sum(xs) / len(xs)
            md = sum(ds) / len(ds)
            sxx = sum((x - mx) ** 2 for x in xs)
            if sxx > 0:
                b = sum((x - mx) * (d - md) for x, d in zip(xs, ds, strict=True)) / sxx
                b = max(-_MAX_DRIFT, min(_MAX_DRIFT, b))
        self._b = b
        self._a = min(d - b * x for x, d in zip(xs, ds, strict=True))

    @property
    def drift_ppm(self) -> float:
        """How much faster the host clock runs than the MCU's, in parts per million."""
        if self._dirty:
            self._fit()
        return self._b * 1e6

    def offset_us(self, mcu_us: int) -> float:
        """Host time minus MCU time at ``mcu_us``."""
        if not self._buckets:
            raise ValueError("clock map: expected at least one observation before mapping, got none")
        if self._dirty:
            self._fit()
        return self._a + self._b * (mcu_us - self._x0)

    def to_host(self, mcu_us: int) -> int:
        """The host time at which the MCU clock read ``mcu_us``."""
        return mcu_us + round(self.offset_us(mcu_us))
