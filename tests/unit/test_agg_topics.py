"""Topic parsing, subscription filters and the ack payload and batching (pure)."""

from __future__ import annotations

import pytest

from aggregator import Rejected, parse_topic, subscriptions


def test_parse_topics_of_every_kind() -> None:
    assert parse_topic("edge/v1/dev-1/result/vib", "edge/v1").stream == "vib"
    assert parse_topic("edge/v1/dev-1/reading/vib", "edge/v1").kind == "reading"
    for kind in ("telemetry", "status", "gap"):
        info = parse_topic(f"edge/v1/dev-1/{kind}", "edge/v1")
        assert (info.device_id, info.kind, info.stream) == ("dev-1", kind, kind)


@pytest.mark.parametrize("topic", ["other/dev-1/result/vib", "edge/v1/DEV/result/vib", "edge/v1/dev-1/result",
                                   "edge/v1/dev-1/ack", "edge/v1/dev-1/result/vib/x", "edge/v1/d/status",
                                   "edge/v1/dev-1/result/+bad"])
def test_bad_topics_are_rejected_with_bad_topic(topic: str) -> None:
    with pytest.raises(Rejected) as e:
        parse_topic(topic, "edge/v1")
    assert e.value.reason == "bad_topic"


def test_status_is_never_shared_and_records_are() -> None:
    subs = subscriptions("edge/v1", "agg")
    assert subs[0] == "edge/v1/+/status"
    assert "$share/agg/edge/v1/+/result/+" in subs and "$share/agg/edge/v1/+/gap" in subs
    assert all(not s.startswith("$share") for s in subscriptions("edge/v1", None))
