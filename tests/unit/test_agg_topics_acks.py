"""Topic parsing, subscription filters and the ack payload and batching (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator import AckBatcher, Rejected, decode_ack, encode_ack, parse_topic, subscriptions


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


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_ack_payload_round_trips(seq: int, epoch: int) -> None:
    assert decode_ack(encode_ack(seq, epoch)) == (seq, epoch)


def test_ack_payload_is_a_small_cbor_map() -> None:
    assert encode_ack(100, 3) == bytes.fromhex("a2637365711864") + bytes.fromhex("6565706f636803")
    with pytest.raises(ValueError):
        decode_ack(b"\xa1\x63seq\x61x")


def test_batcher_releases_once_per_interval_and_never_goes_back() -> None:
    b = AckBatcher(interval_ms=100)
    b.note("d", 5, 1)
    assert b.due(1000) == [("d", 5, 1)]
    b.note("d", 9, 1)
    assert b.due(1050) == []
    assert b.due(1100) == [("d", 9, 1)]
    b.note("d", 7, 1)  # lower than published: ignored
    assert b.due(5000) == []
    b.note("d", 9, 1, force=True)  # a duplicate arrived: re-send the same ack
    assert b.due(5100) == [("d", 9, 1)]
