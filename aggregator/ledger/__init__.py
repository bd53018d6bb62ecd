"""The contribution ledger (DESIGN §10, docs/ledger.md): per period and device, computed from log entries only.

``LedgerBuilder`` (pure) takes the log's entries in index order and answers for any ``Period``; ``Ledger``
holds the device entries, whose OpenZeppelin ``StandardMerkleTree`` root a reward contract receives;
``aggregator.ledger.export`` writes the signed note, the JSON with a proof per device and the tree dump.
"""

from aggregator.ledger.compute import (
    DEFAULT_UPTIME_CREDIT_S,
    LEAF_ENCODING,
    LEAF_FIELDS,
    ZERO_ROOT,
    Anomaly,
    DeviceEntry,
    Ledger,
    LedgerBuilder,
    LedgerParams,
    leaf_from_json,
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
from aggregator.ledger.oztree import StandardMerkleTree, keccak256, leaf_hash, node_hash, process_proof, verify_proof
from aggregator.ledger.period import Period

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
    "verify_proof",
]
