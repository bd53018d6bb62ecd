"""Numbers the docs state about the code are read from the code, so a change of one fails here until the docs
follow (issue 12 item 19: the dead-link factor was documented as 1.25 while the code used 1.5)."""

from __future__ import annotations

import re
from pathlib import Path

from agent.delivery import DEAD_LINK_KEEPALIVES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_dead_link_factor_is_the_codes_everywhere_the_docs_state_it() -> None:
    stated = []
    for path in DOCS.glob("*.md"):
        for m in re.finditer(r"([0-9]+(?:\.[0-9]+)?) × (?:keepalive|5 \+)", path.read_text()):
            stated.append((path.name, float(m.group(1))))
    assert {name for name, _ in stated} >= {"architecture.md", "reliability.md"}
    assert all(v == DEAD_LINK_KEEPALIVES for _, v in stated), stated
