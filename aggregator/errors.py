"""Errors of the aggregator, split by who is at fault: a record from outside, the operator, or our own I/O.

``Rejected`` is the one error the verifier raises for a record it refuses; its ``reason`` is a short stable
code used for the reject counters (docs/aggregator.md lists them), its message says expected vs got.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Root of every aggregator error."""


class Rejected(AggregatorError):
    """A received record was refused. ``reason`` is a stable code; the message is for logs and the CLI."""

    def __init__(self, reason: str, message: str, *, device_id: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.device_id = device_id
        self.seq: int | None = None  # set once the record parsed: a permanent reject settles this seq
        self.epoch: int | None = None

    def __repr__(self) -> str:
        return f"Rejected({self.reason!r}, {str(self)!r})"


class ConfigError(AggregatorError):
    """The config file is invalid. ``problems`` holds one ``(key path, message)`` per mistake."""

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {key}: {msg}" for key, msg in problems))


class TrustError(AggregatorError):
    """A trust anchor (CA certificate, CRL, registry) cannot be loaded or is invalid: operator input."""


class StoreError(AggregatorError):
    """The record store cannot be opened, written or read (our I/O)."""


class StoreNotFound(StoreError):
    """A read-only command named a store that does not exist (operator input); ``where`` names it."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where


class BrokerError(AggregatorError):
    """The MQTT broker cannot be reached or refused us (our I/O)."""


class LogError(AggregatorError):
    """The transparency log's key is unusable, or its stored tree contradicts a checkpoint we signed."""
