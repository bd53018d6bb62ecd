"""The ledger's one error: a ledger, a dump or a proof that is not what it claims, or cannot be built."""

from __future__ import annotations

from aggregator.errors import AggregatorError


class LedgerError(AggregatorError):
    """A ledger input or artefact is invalid (a value that does not encode, a proof that fails, a bad file)."""
