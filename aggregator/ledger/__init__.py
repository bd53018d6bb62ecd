"""The contribution ledger (DESIGN §10, docs/ledger.md): per period and device, computed from log entries only.

``LedgerBuilder`` (pure) takes the log's entries in index order and answers for any ``Period``; ``Ledger``
holds the device entries, whose OpenZeppelin ``StandardMerkleTree`` root a reward contract receives;
``aggregator.ledger.export`` writes the signed note, the JSON with a proof per device and the tree dump.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aggregator.ledger.compute import (
        LEAF_ENCODING,
        LEAF_FIELDS,
        ZERO_ROOT,
        Anomaly,
        DeviceEntry,
        Ledger,
        LedgerBuilder,
        RecordFact,
        leaf_from_json,
        record_fact,
    )
    from aggregator.ledger.errors import LedgerError
    from aggregator.ledger.export import (
        FORMAT,
        LogBinding,
        NoteFields,
        check_document,
        dump_for,
        ledger_document,
        ledger_root,
        note_body,
        note_text,
        parse_note_text,
    )
    from aggregator.ledger.oztree import (
        StandardMerkleTree,
        keccak256,
        leaf_hash,
        node_hash,
        process_proof,
        verify_proof,
    )
    from aggregator.ledger.params import DEFAULT_UPTIME_CREDIT_S, LedgerParams
    from aggregator.ledger.period import Period

# name -> defining module, loaded on first use (PEP 562): registering the CLI command costs no numpy import.
_LAZY: dict[str, str] = {
    "Anomaly": "aggregator.ledger.compute",
    "DEFAULT_UPTIME_CREDIT_S": "aggregator.ledger.params",
    "DeviceEntry": "aggregator.ledger.compute",
    "FORMAT": "aggregator.ledger.export",
    "LEAF_ENCODING": "aggregator.ledger.compute",
    "LEAF_FIELDS": "aggregator.ledger.compute",
    "Ledger": "aggregator.ledger.compute",
    "LedgerBuilder": "aggregator.ledger.compute",
    "LedgerError": "aggregator.ledger.errors",
    "RecordFact": "aggregator.ledger.compute",
    "record_fact": "aggregator.ledger.compute",
    "LedgerParams": "aggregator.ledger.params",
    "LogBinding": "aggregator.ledger.export",
    "NoteFields": "aggregator.ledger.export",
    "Period": "aggregator.ledger.period",
    "StandardMerkleTree": "aggregator.ledger.oztree",
    "ZERO_ROOT": "aggregator.ledger.compute",
    "check_document": "aggregator.ledger.export",
    "dump_for": "aggregator.ledger.export",
    "keccak256": "aggregator.ledger.oztree",
    "leaf_from_json": "aggregator.ledger.compute",
    "leaf_hash": "aggregator.ledger.oztree",
    "ledger_document": "aggregator.ledger.export",
    "ledger_root": "aggregator.ledger.export",
    "node_hash": "aggregator.ledger.oztree",
    "note_body": "aggregator.ledger.export",
    "note_text": "aggregator.ledger.export",
    "parse_note_text": "aggregator.ledger.export",
    "process_proof": "aggregator.ledger.oztree",
    "verify_proof": "aggregator.ledger.oztree",
}

__all__ = [
    "DEFAULT_UPTIME_CREDIT_S",
    "FORMAT",
    "LEAF_ENCODING",
    "LEAF_FIELDS",
    "ZERO_ROOT",
    "Anomaly",
    "DeviceEntry",
    "Ledger",
    "LedgerBuilder",
    "LedgerError",
    "LedgerParams",
    "LogBinding",
    "NoteFields",
    "Period",
    "RecordFact",
    "StandardMerkleTree",
    "check_document",
    "dump_for",
    "keccak256",
    "leaf_from_json",
    "leaf_hash",
    "ledger_document",
    "ledger_root",
    "node_hash",
    "note_body",
    "note_text",
    "parse_note_text",
    "process_proof",
    "record_fact",
    "verify_proof",
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
