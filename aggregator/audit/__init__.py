"""``edge-aggregator audit``: an independent check of a transparency log and its ledgers (docs/ledger.md).

``Auditor`` (pure) takes a verified ``Checkpoint``, the served bundles and tiles, and reports every
``Finding``; ``run_audit`` fetches them over HTTP (C2SP tlog-tiles) and keeps the state file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aggregator.audit.core import (
        AuditError,
        Auditor,
        Checkpoint,
        Finding,
        PublishedLedger,
        Report,
        SeenCheckpoint,
        parse_checkpoint,
    )
    from aggregator.audit.run import TileClient, load_ledgers, load_state, report_text, run_audit, save_state
    from aggregator.audit.tree import StreamingTree, root_of

# name -> defining module, loaded on first use (PEP 562): registering the CLI command costs no numpy import.
_LAZY: dict[str, str] = {
    "AuditError": "aggregator.audit.core",
    "Auditor": "aggregator.audit.core",
    "Checkpoint": "aggregator.audit.core",
    "Finding": "aggregator.audit.core",
    "PublishedLedger": "aggregator.audit.core",
    "Report": "aggregator.audit.core",
    "SeenCheckpoint": "aggregator.audit.core",
    "StreamingTree": "aggregator.audit.tree",
    "TileClient": "aggregator.audit.run",
    "load_ledgers": "aggregator.audit.run",
    "load_state": "aggregator.audit.run",
    "parse_checkpoint": "aggregator.audit.core",
    "report_text": "aggregator.audit.run",
    "root_of": "aggregator.audit.tree",
    "run_audit": "aggregator.audit.run",
    "save_state": "aggregator.audit.run",
}

__all__ = [
    "AuditError",
    "Auditor",
    "Checkpoint",
    "Finding",
    "PublishedLedger",
    "Report",
    "SeenCheckpoint",
    "StreamingTree",
    "TileClient",
    "load_ledgers",
    "load_state",
    "parse_checkpoint",
    "report_text",
    "root_of",
    "run_audit",
    "save_state",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use and cache the attribute (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names too, loaded or not."""
    return sorted(set(globals()) | set(__all__))
