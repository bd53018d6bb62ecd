"""The agent's reading of aggregator acks: garbage is refused with ValueError, never anything else."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.publisher import parse_ack, record_budget


def test_valid_ack() -> None:
    assert parse_ack(cbor2.dumps({"seq": 42, "epoch": 3})) == 42


@pytest.mark.parametrize("payload", [
    b"", b"offline", cbor2.dumps([1, 2]), cbor2.dumps({"seq": -1}), cbor2.dumps({"seq": "7"}),
    cbor2.dumps({"seq": True}), cbor2.dumps({"epoch": 1}), cbor2.dumps({"seq": 1.5}),
])
def test_malformed_acks_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="ack"):
        parse_ack(payload)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_give_a_seq_or_value_error(data: bytes) -> None:
    try:
        seq = parse_ack(data)
    except ValueError:
        return
    assert isinstance(seq, int) and seq >= 0


def test_record_budget_leaves_room_for_topic_and_header() -> None:
    assert record_budget(4096, "edge/v1/dev-1/result/vibration") == 4096 - len("edge/v1/dev-1/result/vibration") - 64
