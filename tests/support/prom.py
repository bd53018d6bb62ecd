"""Parse Prometheus text with prometheus-client's own parser and check names against the conventions.

The conventions (https://prometheus.io/docs/practices/naming/): snake_case names with an application prefix;
base units spelled out as the last word (``_seconds``, ``_bytes``), never ``_ms``, ``_kb`` or ``_percent``;
``_total`` on counters and only on counters; histograms named by what they measure with its unit. Used by
the agent's metrics tests (and usable for the aggregator's ``/metrics``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
# Words that say "this is a time" or "this is a size": the metric must then carry the base unit.
TIME_WORDS = ("latency", "duration", "age", "uptime", "delay", "timeout", "time", "seconds", "elapsed")
SIZE_WORDS = ("bytes", "size")
BAD_UNITS = ("ms", "us", "ns", "msec", "millis", "milliseconds", "microseconds", "nanoseconds", "minutes", "hours",
             "days", "kb", "mb", "gb", "kib", "mib", "gib", "percent", "pct")


def parse(text: str) -> dict[str, Any]:
    """``{family name: Metric}`` as prometheus-client parses it (counter names without ``_total``)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample_names(text: str) -> set[str]:
    """Every sample name in the exposition (``x_total``, ``x_bucket``, ``x_info``...)."""
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def violations(text: str, prefixes: Iterable[str]) -> list[str]:
    """Every naming problem in ``text``; empty when the exposition follows the conventions."""
    prefixes = tuple(prefixes)
    problems: list[str] = []
    for fam in text_string_to_metric_families(text):
        name = fam.name
        words = name.split("_")
        if not NAME_RE.match(name):
            problems.append(f"{name}: not snake_case")
        if not name.startswith(prefixes):
            problems.append(f"{name}: no application prefix ({', '.join(prefixes)})")
        if not fam.documentation.strip():
            problems.append(f"{name}: no HELP text")
        for bad in BAD_UNITS:
            if bad in words:
                problems.append(f"{name}: unit {bad!r} is not a base unit (use seconds, bytes or a ratio)")
        unit_word = "seconds" if any(w in words for w in TIME_WORDS) else (
            "bytes" if any(w in words for w in SIZE_WORDS) else None)
        if unit_word is not None and words[-1] != unit_word and not (fam.type == "counter" and words[-1] == unit_word):
            problems.append(f"{name}: measures {'time' if unit_word == 'seconds' else 'size'} but does not end in "
                            f"_{unit_word}")
        if fam.type == "counter":
            for s in fam.samples:
                if not (s.name.endswith("_total") or s.name.endswith("_created")):
                    problems.append(f"{s.name}: counter sample without _total")
        elif name.endswith("_total"):
            problems.append(f"{name}: _total on a {fam.type}")
        if fam.type in ("histogram", "summary") and words[-1] not in ("seconds", "bytes", "ratio"):
            problems.append(f"{name}: a {fam.type} must name its unit (_seconds, _bytes, _ratio)")
        if fam.type == "unknown":
            problems.append(f"{name}: no TYPE")
    return problems
