"""Verify, deduplicate, store and acknowledge signed records from the fleet (DESIGN §2, §4, §5).

The verifier (``Verifier``) and the sequence rules (``DeviceBook``) are pure; ``Store`` (SQLite or
PostgreSQL), ``MqttLink`` and ``AggregatorService`` are the I/O shells; ``edge-aggregator`` is the CLI.
docs/aggregator.md describes reject reasons, the ack payload and scale-out.
"""

from aggregator.config import AggregatorConfig, MqttSettings, StoreSettings, TrustSettings, load_config, parse_config
from aggregator.errors import AggregatorError, BrokerError, ConfigError, Rejected, StoreError, StoreNotFound, TrustError
from aggregator.sequence import Decision, DeviceBook
from aggregator.service import AggregatorService, AggregatorStats
from aggregator.store import BatchResult, RejectEvent, Store, open_store
from aggregator.topics import TopicInfo, ack_topic, parse_topic, subscriptions
from aggregator.trust import DeviceKey, TrustStore, check_device_chain, load_registry, load_trust_store
from aggregator.verifier import GapInfo, VerifiedRecord, Verifier
from envelope.limits import Limits  # one definition, shared with agents (re-exported for callers)

__all__ = [
    "AggregatorConfig",
    "AggregatorError",
    "AggregatorService",
    "AggregatorStats",
    "BatchResult",
    "BrokerError",
    "ConfigError",
    "Decision",
    "DeviceBook",
    "DeviceKey",
    "GapInfo",
    "Limits",
    "MqttSettings",
    "RejectEvent",
    "Rejected",
    "Store",
    "StoreError",
    "StoreNotFound",
    "StoreSettings",
    "TopicInfo",
    "TrustError",
    "TrustSettings",
    "TrustStore",
    "VerifiedRecord",
    "Verifier",
    "ack_topic",
    "check_device_chain",
    "load_config",
    "load_registry",
    "load_trust_store",
    "open_store",
    "parse_config",
    "parse_topic",
    "subscriptions",
]
