"""Fixtures of the fault-injection suite: a certified device and a running aggregator per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import AggregatorProcess, Device, make_device
from tests.support.mosquitto import Mosquitto


@pytest.fixture
def device(tmp_path: Path, unique_id: str) -> Device:
    return make_device(tmp_path, f"dev-{unique_id}")


@pytest.fixture
def aggregator(tmp_path: Path, mosquitto: Mosquitto, device: Device, unique_id: str) -> Iterator[AggregatorProcess]:
    workdir = tmp_path / "aggregator"
    workdir.mkdir()
    agg = AggregatorProcess(workdir, mosquitto.url, device.fleet, f"agg-{unique_id}")
    try:
        yield agg
    finally:
        agg.stop()
