"""examples/aggregator.toml says it shows every key with its default: hold it to that, key by key, against
the config dataclasses (a key written commented out counts: optional paths have no default to show)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from aggregator import config as c

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "aggregator.toml"
SECTIONS = {"mqtt": c.MqttSettings, "store": c.StoreSettings, "trust": c.TrustSettings,
            "identity": c.IdentitySettings, "hold": c.HoldSettings, "log": c.LogSettings,
            "models": c.ModelsSettings, "web": c.WebSettings}


def _example_keys() -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        if m := re.match(r"^#?\s*\[([a-z_]+)\]", line):
            section = m.group(1)
            keys.setdefault(section, set())
        elif m := re.match(r"^#?\s*([a-z_0-9]+)\s*=", line):
            keys.setdefault(section, set()).add(m.group(1))
    return keys


def test_every_key_of_every_section_is_in_the_example() -> None:
    shown = _example_keys()
    top = {f.name for f in dataclasses.fields(c.AggregatorConfig)} - set(SECTIONS) - {"source_file"}
    expected = {"aggregator": top, **{s: {f.name for f in dataclasses.fields(cls)} for s, cls in SECTIONS.items()}}
    missing = {s: sorted(expected[s] - shown.get(s, set())) for s in expected if expected[s] - shown.get(s, set())}
    unknown = {s: sorted(shown[s] - expected.get(s, set())) for s in shown if shown[s] - expected.get(s, set())}
    assert not missing, f"keys the example does not show: {missing}"
    assert not unknown, f"keys the example shows that the config does not have: {unknown}"
