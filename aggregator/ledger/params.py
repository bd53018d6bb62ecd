"""The ledger's parameters: choices that change its figures, so they are written into the ledger and its note."""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.ledger.errors import LedgerError

DEFAULT_UPTIME_CREDIT_S = 120  # twice the agent's default telemetry interval (60 s)


@dataclass(frozen=True)
class LedgerParams:
    """Choices that change the figures; written into the ledger and its signed note."""

    uptime_credit_s: int = DEFAULT_UPTIME_CREDIT_S

    def __post_init__(self) -> None:
        if not isinstance(self.uptime_credit_s, int) or not 1 <= self.uptime_credit_s <= 86_400:
            raise LedgerError(f"uptime_credit_s must be an integer in 1..86400, got {self.uptime_credit_s!r}")
