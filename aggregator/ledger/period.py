"""Ledger periods: a half-open UTC interval of capture times, named the way an operator types it.

``2026-12-01`` is that UTC day (the default granularity), ``2026-12`` that month, ``<start>/<end>`` any interval
of ISO-8601 times (UTC when no offset is given). Pure: parsing only, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from aggregator.ledger.errors import LedgerError

_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    """Records whose signed capture time is in ``[start_ms, end_ms)`` belong to this period."""

    label: str
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_ms < self.end_ms:
            raise LedgerError(f"period {self.label!r}: start must be before end and not before 1970")

    @property
    def start_s(self) -> int:
        return self.start_ms // 1000

    @property
    def end_s(self) -> int:
        return self.end_ms // 1000

    def contains(self, ms: int) -> bool:
        return self.start_ms <= ms < self.end_ms

    @staticmethod
    def iso(ms: int) -> str:
        """RFC 3339 UTC form of a millisecond time (seconds precision when whole)."""
        dt = datetime.fromtimestamp(ms / 1000, timezone.utc)
        if ms % 1000:
            return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")

    @classmethod
    def day(cls, d: date) -> Period:
        start = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        return cls(d.isoformat(), _ms(start), _ms(start + timedelta(days=1)))

    @classmethod
    def parse(cls, text: str) -> Period:
        """``YYYY-MM-DD`` (a UTC day), ``YYYY-MM`` (a UTC month) or ``<ISO start>/<ISO end>``."""
        text = text.strip()
        try:
            m = _DAY.match(text)
            if m:
                return cls.day(date(int(m[1]), int(m[2]), int(m[3])))
            m = _MONTH.match(text)
            if m:
                y, mo = int(m[1]), int(m[2])
                start = datetime(y, mo, 1, tzinfo=timezone.utc)
                end = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=timezone.utc)
                return cls(text, _ms(start), _ms(end))
            if "/" in text:
                a, b = text.split("/", 1)
                start_ms, end_ms = _ms(_when(a)), _ms(_when(b))
                return cls(f"{cls.iso(start_ms)}/{cls.iso(end_ms)}", start_ms, end_ms)
        except ValueError as e:
            raise LedgerError(f"period {text!r}: {e}") from e
        raise LedgerError(f"period {text!r}: expected YYYY-MM-DD, YYYY-MM or <ISO start>/<ISO end>")


def _when(text: str) -> datetime:
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)
