"""The record budget: the largest record that fits one PUBLISH on a topic (the unsigned ack it sat beside is
gone: receipts are verified by agent.receipts, tested in test_agent_receipts and the delivery properties)."""

from __future__ import annotations

from agent.publisher import record_budget


def test_record_budget_leaves_room_for_topic_and_header() -> None:
    assert record_budget(4096, "edge/v1/dev-1/result/vibration") == 4096 - len("edge/v1/dev-1/result/vibration") - 64
