"""The fleet page's question (state filter, sort, page, search) and the rules it is answered by: pure.

``FleetQuery.from_params`` accepts any query string and returns a valid query (unknown values fall back to
the defaults), so a hand-edited URL never reaches SQL: sort keys and states are looked up in fixed tables.
``attention`` says why a device needs a look ("show me what is broken"); ``reader.attention_sql`` is the same
rule in SQL for filtering and counting, tested to agree. ``missing_ranges`` lists the seqs that nothing
accounts for yet (stored, evicted by policy with a gap record, rejected for good, below the low-water
mark), the same count as ``aggregator.DeviceBook.missing``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

STATES: dict[str, str] = {
    "all": "All",
    "attention": "Needs attention",
    "online": "Online",
    "offline": "Offline",
    "unknown": "No birth yet",
}

# sort key -> column label; the SQL expression of each is in reader.SORT_SQL
SORTS: dict[str, str] = {
    "device": "Device", "state": "State", "seen": "Last seen", "rate": "Rec/s", "seq": "Seq", "gaps": "Gaps",
    "rejects": "Rejects", "model": "Model", "agent": "Agent", "outbox": "Outbox", "clock": "Clock",
    "cert": "Certificate",
}
DESC_FIRST = frozenset({"seen", "rate", "seq", "gaps", "rejects", "outbox"})  # the interesting end first

_Q_RE = re.compile(r"[^a-z0-9-]")
MIN_PER, MAX_PER = 10, 200
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class FleetQuery:
    """What the fleet page shows: devices in ``state``, id containing ``q``, by ``sort``, one page."""

    state: str = "all"
    sort: str = "device"
    desc: bool = False
    page: int = 1
    per: int = 50
    q: str = ""
    default_per: int = field(default=50, compare=False)  # left out of links when ``per`` equals it

    @classmethod
    def from_params(cls, params: Mapping[str, str], default_per: int = 50) -> FleetQuery:
        """Any query string gives a valid query: unknown or out-of-range values become the defaults."""
        state = params.get("state", "all")
        sort = params.get("sort", "device")
        if sort not in SORTS:
            sort = "device"
        d = params.get("dir", "")
        desc = d == "desc" if d in ("asc", "desc") else sort in DESC_FIRST
        return cls(state=state if state in STATES else "all", sort=sort, desc=desc,
                   page=_int(params.get("page"), 1, 1, MAX_PAGE),
                   per=_int(params.get("per"), default_per, MIN_PER, MAX_PER),
                   q=_Q_RE.sub("", params.get("q", "").lower())[:64], default_per=default_per)

    def offset(self) -> int:
        return (self.page - 1) * self.per

    def params(self, **changes: Any) -> str:
        """The query string of this query with ``changes`` (for links); defaults are left out."""
        q = replace(self, **changes)
        out: dict[str, Any] = {}
        if q.state != "all":
            out["state"] = q.state
        if q.sort != "device":
            out["sort"] = q.sort
        if q.desc != (q.sort in DESC_FIRST):
            out["dir"] = "desc" if q.desc else "asc"
        if q.page != 1:
            out["page"] = q.page
        if q.per != q.default_per:
            out["per"] = q.per
        if q.q:
            out["q"] = q.q
        return urlencode(out)

    def sort_link(self, key: str) -> str:
        """Sort by ``key``; clicking the current sort column flips the direction."""
        if key == self.sort:
            return self.params(desc=not self.desc, page=1)
        return self.params(sort=key, desc=key in DESC_FIRST, page=1)


def _int(v: str | None, default: int, lo: int, hi: int) -> int:
    try:
        n = int(v) if v is not None and len(v) <= 12 else default
    except ValueError:
        return default
    return n if lo <= n <= hi else default


@dataclass(frozen=True)
class Thresholds:
    """When a device "needs attention" (``[web]`` attention_* keys)."""

    outbox_depth: int = 1000
    cert_days: int = 14
    reject_window_s: int = 3600


def attention(row: Mapping[str, Any], now_ms: int, t: Thresholds) -> list[str]:
    """Why the device of a fleet row needs a look; empty when nothing is wrong.

    ``row`` holds the columns of ``reader.ROW_COLUMNS`` (online, revoked, cert_not_after_ms, rejects_last_ms,
    max_seq, contiguous_seq, clock_state, outbox_depth).
    """
    why = []
    online = row.get("online")
    if online is None:
        why.append("no birth record")
    elif online == 0:
        why.append("offline")
    if row.get("revoked"):
        why.append("certificate revoked")
    na = row.get("cert_not_after_ms")
    if na is not None:
        if na <= now_ms:
            why.append("certificate expired")
        elif na < now_ms + t.cert_days * 86_400_000:
            why.append("certificate expires soon")
    last = row.get("rejects_last_ms")
    if last is not None and last >= now_ms - t.reject_window_s * 1000:
        why.append("recent rejects")
    if (row.get("max_seq") or 0) > (row.get("contiguous_seq") or 0):
        why.append("seqs not settled")
    if row.get("clock_state") == 0:
        why.append("clock unsynchronised")
    depth = row.get("outbox_depth")
    if depth is not None and depth > t.outbox_depth:
        why.append("outbox backlog")
    return why


def missing_ranges(contiguous: int, max_seq: int, stored_above: Iterable[int],
                   covered: Iterable[tuple[int, int]], limit: int = 20) -> tuple[int, list[tuple[int, int]]]:
    """Seqs in ``contiguous+1 .. max_seq`` neither stored nor in a ``covered`` range: (count, first ranges).

    ``covered`` holds inclusive ranges (policy gaps, permanent rejects, below the low-water mark), in any
    order and possibly overlapping.
    """
    lo, hi = contiguous + 1, max_seq
    if hi < lo:
        return 0, []
    spans = sorted([(max(a, lo), min(b, hi)) for a, b in covered if b >= lo and a <= hi and a <= b]
                   + [(s, s) for s in stored_above if lo <= s <= hi])
    ranges: list[tuple[int, int]] = []
    count, nxt = 0, lo
    for a, b in spans:
        if a > nxt:
            count += a - nxt
            if len(ranges) < limit:
                ranges.append((nxt, a - 1))
        nxt = max(nxt, b + 1)
    if nxt <= hi:
        count += hi - nxt + 1
        if len(ranges) < limit:
            ranges.append((nxt, hi))
    return count, ranges
