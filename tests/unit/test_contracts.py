"""Contracts written once (issue 12 item 18): every package that applies a rule gives the same verdict.

Round 1 had the device-id rule in three places, the topic-prefix rule in three (with different rules: the
aggregator took a leading '/', the others did not), sd_notify twice and the device counter names in four
lists. Now each is defined once (``envelope.names``, ``provisioning.sdnotify``, ``aggregator.schema``) and
these tests feed the same generated inputs to every entry point, and scan the sources for second copies.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.config import parse_config as agent_parse
from agent.errors import ConfigError as AgentConfigError
from aggregator import Rejected, parse_topic
from aggregator.config import parse_config as aggregator_parse
from aggregator.errors import ConfigError as AggregatorConfigError
from aggregator.schema import CLOCK_COLUMNS, DEVICE_COUNTERS, ddl
from envelope.names import device_id_problem, is_valid_device_id, topic_prefix_problem
from provisioning import InvalidInput, validate_device_id
from provisioning.broker import validate_prefix

REPO = Path(__file__).resolve().parents[2]
PRODUCT = [p for pkg in ("agent", "aggregator", "provisioning", "envelope", "firmware_bridge")
           for p in (REPO / pkg).rglob("*.py")]

near_ids = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9-]{2,63}", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9-]{2,63}", fullmatch=True).map(lambda s: s + "\n"),
    st.text(alphabet="abcXYZ019-_./\n $+#", min_size=0, max_size=70),
    st.text(max_size=8),
)


def _agent_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "device_id": "dev-0001", "key_uri": "file:/k/device.key",
        "pipeline": [{"stream": "vib", "model": "/m.tflite", "window": 128, "source": {"type": "simulated"}}],
        "outbox": {"path": "/var/lib/x/outbox.db"}, "mqtt": {},
    }
    for k, v in over.items():
        if k.startswith("mqtt_"):
            doc["mqtt"][k[5:]] = v
        else:
            doc[k] = v
    return doc


def _agent_problems(doc: dict[str, Any]) -> list[str]:
    try:
        agent_parse(doc, "/cfg/agent.toml")
    except AgentConfigError as e:
        return [k for k, _ in e.problems]
    return []


@settings(max_examples=400)
@given(near_ids)
@example("abc\n")  # '$' matched before a trailing newline in every round-1 copy of the rule
@example("ab")
@example("a" * 64)
@example("a" * 65)
@example("-abc")
def test_device_id_rule_is_the_same_everywhere(value: str) -> None:
    ok = is_valid_device_id(value)
    assert (device_id_problem(value) is None) is ok
    try:
        validate_device_id(value)
        assert ok
    except InvalidInput:
        assert not ok
    assert ("device_id" not in _agent_problems(_agent_doc(device_id=value))) is ok
    try:
        assert parse_topic(f"edge/v1/{value}/status", "edge/v1").device_id == value
        assert ok
    except Rejected:
        assert not ok


prefixes = st.one_of(
    st.sampled_from(["edge/v1", "/edge", "edge/", "a//b", "$SYS/x", "e+", "e#", "e\x00", "", "x" * 257, "x" * 256]),
    st.text(alphabet="ab/+#$ \x00", max_size=12),
)


@settings(max_examples=300)
@given(prefixes)
def test_topic_prefix_rule_is_the_same_everywhere(prefix: str) -> None:
    ok = topic_prefix_problem(prefix) is None
    assert ("mqtt.topic_prefix" not in _agent_problems(_agent_doc(mqtt_topic_prefix=prefix))) is ok
    try:
        aggregator_parse({"mqtt": {"topic_prefix": prefix}})
        agg_ok = True
    except AggregatorConfigError as e:
        agg_ok = "mqtt.topic_prefix" not in [k for k, _ in e.problems]
    assert agg_ok is ok
    try:
        validate_prefix(prefix)
        assert ok
    except InvalidInput:
        assert not ok


def _product_lines(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [f"{p.relative_to(REPO)}:{i}" for p in PRODUCT for i, line in enumerate(p.read_text().splitlines(), 1)
            if rx.search(line)]


@pytest.mark.parametrize(("what", "pattern", "home"), [
    ("device-id pattern", r"\[a-z0-9\]\[a-z0-9-\]\{2,63\}", "envelope/names.py"),
    ("topic-prefix wildcard check", r"""in "\+#""", "envelope/names.py"),
    ("sd_notify socket", r"NOTIFY_SOCKET", "provisioning/sdnotify.py"),
    ("sd_notify datagram", r"AF_UNIX, socket\.SOCK_DGRAM", "provisioning/sdnotify.py"),
])
def test_each_contract_is_written_once(what: str, pattern: str, home: str) -> None:
    places = {p.split(":")[0] for p in _product_lines(pattern)}
    assert places == {home}, f"{what} written in {sorted(places)}"


def test_device_counters_are_one_list() -> None:
    from aggregator.service import AggregatorStats
    from aggregator.store import BatchResult, _Delta

    for cls in (AggregatorStats, BatchResult, _Delta):
        assert set(DEVICE_COUNTERS) <= {f.name for f in dataclasses.fields(cls)}, cls
    (devices,) = [s for s in ddl("BLOB") if "TABLE IF NOT EXISTS devices" in s]
    for column in (*DEVICE_COUNTERS, *CLOCK_COLUMNS.values()):
        assert f"{column} BIGINT NOT NULL DEFAULT 0" in devices
    # no second hand-written list of them in the aggregator
    assert {p.split(":")[0] for p in _product_lines(r'"gaps_opened", "gap_seqs"')} == {"aggregator/schema.py"}
