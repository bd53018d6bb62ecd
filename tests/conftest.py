"""Shared fixtures: a private Mosquitto per test that needs one, unique topics, the shared broker URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.mosquitto import Mosquitto

# Property tests are derandomised so CI sees the same examples every run (a flaky test blocks everyone), and
# have no per-example deadline (this 2-core machine is often loaded by broker and subprocess tests).
settings.register_profile("project", derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=2000)
# tools/mutation.py runs a module's tests once per mutant: fewer examples, still derandomised (docs/mutation.md)
settings.register_profile("mutation", derandomize=True, deadline=None, database=None, max_examples=60,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "project"))


SHARED_BROKER_URL = os.environ.get("EDGE_TEST_BROKER", "mqtt://127.0.0.1:1883")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A fresh broker on a free port, anonymous, no persistence; stopped after the test."""
    broker = Mosquitto().start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def unique_id() -> str:
    """A short unique token for device ids and topics, valid as a device id."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def repo_root() -> str:
    return REPO_ROOT
