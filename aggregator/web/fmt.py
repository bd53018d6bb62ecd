"""How numbers and times read on the pages (Jinja2 filters): pure, ``None`` is always an em dash."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

DASH = "—"
CLOCK_STATES = {0: "unsynced", 1: "ntp", 2: "gnss"}


def duration(seconds: float | None) -> str:
    """``42 s``, ``5 min``, ``3.2 h``, ``12 d``."""
    if seconds is None:
        return DASH
    s = abs(float(seconds))
    sign = "-" if seconds < 0 else ""
    if s < 1:
        return f"{sign}{s:.1f} s" if s else "0 s"
    if s < 120:
        return f"{sign}{s:.0f} s"
    if s < 7200:
        return f"{sign}{s / 60:.0f} min"
    if s < 172_800:
        return f"{sign}{s / 3600:.1f} h"
    return f"{sign}{s / 86400:.0f} d"


def age(ms: int | None, now_ms: int) -> str:
    """How long ago ``ms`` was: ``12 s ago``."""
    if ms is None:
        return DASH
    d = (now_ms - int(ms)) / 1000
    return "just now" if 0 <= d < 1 else (f"{duration(d)} ago" if d > 0 else f"in {duration(-d)}")


def until(ms: int | None, now_ms: int) -> str:
    """How long until ``ms``: ``in 300 d`` or ``expired 2 d ago``."""
    if ms is None:
        return DASH
    d = (int(ms) - now_ms) / 1000
    return f"in {duration(d)}" if d >= 0 else f"{duration(-d)} ago"


def ts(ms: int | None) -> str:
    """UTC time, to the second."""
    if ms is None:
        return DASH
    try:
        return datetime.fromtimestamp(int(ms) / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return DASH


def num(v: float | None, digits: int = 0) -> str:
    """``12,345`` or ``1.5`` (``digits`` decimals)."""
    if v is None:
        return DASH
    return f"{v:,.{digits}f}"


def rate(v: float | None) -> str:
    """Records per second: 3 significant digits, ``0`` for none."""
    if v is None:
        return DASH
    if v == 0:
        return "0"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def size(n: int | None) -> str:
    """Bytes as ``12 kB``, ``3.4 MB``."""
    if n is None:
        return DASH
    f = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(f) < 1000 or unit == "GB":
            return f"{f:.0f} {unit}" if unit == "B" or f >= 100 else f"{f:.1f} {unit}"
        f /= 1000
    return DASH  # pragma: no cover - the loop always returns


def short(digest: str | None, n: int = 12) -> str:
    """The first ``n`` hex digits of a digest or key id."""
    return DASH if not digest else digest[:n]


def clock(state: int | None) -> str:
    return DASH if state is None else CLOCK_STATES.get(int(state), f"state {state}")


def dash(v: Any) -> Any:
    return DASH if v is None or v == "" else v


FILTERS: dict[str, Callable[..., Any]] = {
    "age": age, "until": until, "ts": ts, "num": num, "rate": rate, "size": size, "short": short,
    "clock": clock, "duration": duration, "dash": dash,
}
