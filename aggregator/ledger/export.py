"""The ledger's published forms: a signed note over its root, JSON with a proof per device, the OpenZeppelin dump.

Why a signed note: the root a reward contract receives must be attributable. It is signed like a log
checkpoint (a C2SP signed note) with the *log's* Ed25519 key, because that is the one key an auditor trusts
already (``edge-aggregator audit`` needs nothing else), and the note binds the root to the log: its origin, the
tree size the ledger was computed from and the RFC 6962 root at that size. The first line is not a log
origin, so no checkpoint verifier can mistake a ledger note for a checkpoint. Body (one field per line)::

    depin-edge ledger v1
    origin <log origin>
    period <label> <start RFC 3339> <end RFC 3339>
    log <tree size> <base64 RFC 6962 root at that size, or - when not bound to a log>
    params uptime_credit_s=<n>
    entries <number of devices>
    root 0x<keccak256 StandardMerkleTree root, 64 hex digits; zero when there are no entries>

Pure: building and checking documents; signing and file writing are the caller's (``aggregator.ledger.files``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from aggregator.ledger.compute import LEAF_ENCODING, LEAF_FIELDS, ZERO_ROOT, DeviceEntry, Ledger
from aggregator.ledger.errors import LedgerError
from aggregator.ledger.oztree import StandardMerkleTree, leaf_hash, process_proof, value_from_json, value_to_json
from aggregator.ledger.params import LedgerParams
from aggregator.ledger.period import Period

FORMAT = "depin-edge-ledger/v1"
NOTE_HEADER = "depin-edge ledger v1"
_ROOT_RE = re.compile(r"^0x[0-9a-f]{64}$")


@dataclass(frozen=True)
class LogBinding:
    """The log state a ledger was computed from: origin, tree size and the RFC 6962 root at that size."""

    origin: str
    size: int
    root: bytes | None  # None: computed from stored records before the log existed (not auditable)


@dataclass(frozen=True)
class NoteFields:
    """What a ledger note says (parsed from its text, before or after signature verification)."""

    origin: str
    period: Period
    log_size: int
    log_root: bytes | None
    params: LedgerParams
    entries: int
    root: bytes


def ledger_root(ledger: Ledger, tree: StandardMerkleTree | None = None) -> bytes:
    tree = tree if tree is not None else ledger.tree()
    return tree.root if tree is not None else ZERO_ROOT


def note_text(ledger: Ledger, log: LogBinding, root: bytes | None = None) -> str:
    """The note body to sign (ends with a newline, as C2SP signed-note requires)."""
    if log.size != ledger.log_size:
        raise LedgerError(f"the ledger was computed from {ledger.log_size} log entries, the binding names "
                          f"tree size {log.size}")
    if not log.origin or any(c.isspace() for c in log.origin):
        raise LedgerError(f"log origin must be non-empty without spaces, got {log.origin!r}")
    root = ledger_root(ledger) if root is None else root
    p = ledger.period
    log_root = base64.b64encode(log.root).decode() if log.root is not None else "-"
    return (f"{NOTE_HEADER}\norigin {log.origin}\nperiod {p.label} {Period.iso(p.start_ms)} {Period.iso(p.end_ms)}\n"
            f"log {log.size} {log_root}\nparams uptime_credit_s={ledger.params.uptime_credit_s}\n"
            f"entries {len(ledger.entries)}\nroot 0x{root.hex()}\n")


def parse_note_text(text: str) -> NoteFields:
    """Parse a ledger note body (the text a signature covers); raises ``LedgerError``."""
    lines = text.split("\n")
    if len(lines) != 8 or lines[-1] != "" or lines[0] != NOTE_HEADER:
        raise LedgerError(f"not a ledger note: expected {NOTE_HEADER!r} and 6 field lines")
    fields: dict[str, list[str]] = {}
    for line in lines[1:-1]:
        name, _, rest = line.partition(" ")
        fields[name] = rest.split(" ")
    try:
        (origin,) = fields["origin"]
        label, start, end = fields["period"]
        size_text, root_text = fields["log"]
        (params_text,) = fields["params"]
        (entries_text,) = fields["entries"]
        (root_hex,) = fields["root"]
    except (KeyError, ValueError) as e:
        raise LedgerError(f"ledger note field missing or malformed: {e}") from e
    period = Period.parse(label)
    if Period.iso(period.start_ms) != start or Period.iso(period.end_ms) != end:
        raise LedgerError(f"ledger note period {label} does not span {start} .. {end}")
    if not params_text.startswith("uptime_credit_s=") or not params_text[16:].isdigit():
        raise LedgerError(f"ledger note params {params_text!r}: expected uptime_credit_s=<n>")
    if not size_text.isdigit() or not entries_text.isdigit() or not _ROOT_RE.match(root_hex):
        raise LedgerError("ledger note log size, entries or root malformed")
    try:
        log_root = None if root_text == "-" else base64.b64decode(root_text, validate=True)
    except binascii.Error as e:
        raise LedgerError(f"ledger note log root is not base64: {e}") from e
    return NoteFields(origin, period, int(size_text), log_root, LedgerParams(int(params_text[16:])),
                      int(entries_text), bytes.fromhex(root_hex[2:]))


def _entry_json(ledger: Ledger, entry: DeviceEntry, tree: StandardMerkleTree, i: int) -> dict[str, Any]:
    value = entry.leaf(ledger.period)
    return {
        "device_id": entry.device_id, "records": entry.records, "results": entry.results,
        "stream_results": dict(entry.stream_results), "first_seq": entry.first_seq, "last_seq": entry.last_seq,
        "missing": {"evicted": entry.missing_evicted, "rejected": entry.missing_rejected,
                    "lost": entry.missing_lost},
        "uptime_s": entry.uptime_s, "model_digests": [d.hex() for d in entry.model_digests],
        "log_index": {"first": entry.first_index, "last": entry.last_index},
        "value": value_to_json(LEAF_ENCODING, value),
        "leaf": "0x" + tree.tree[tree.tree_index[i]].hex(),
        "proof": ["0x" + h.hex() for h in tree.proof(i)],
    }


def ledger_document(ledger: Ledger, log: LogBinding, note: str) -> dict[str, Any]:
    """The ledger as JSON: every figure by name, and per device its leaf value, leaf hash and proof."""
    tree = ledger.tree()
    root = ledger_root(ledger, tree)
    p = ledger.period
    return {
        "format": FORMAT,
        "origin": log.origin,
        "period": {"label": p.label, "start": Period.iso(p.start_ms), "end": Period.iso(p.end_ms)},
        "log": {"size": log.size, "root": base64.b64encode(log.root).decode() if log.root is not None else None},
        "params": {"uptime_credit_s": ledger.params.uptime_credit_s},
        "leaf_fields": list(LEAF_FIELDS),
        "leaf_encoding": list(LEAF_ENCODING),
        "root": "0x" + root.hex(),
        "note": note,
        "entries": [] if tree is None else [_entry_json(ledger, e, tree, i) for i, e in enumerate(ledger.entries)],
    }


def entry_from_json(doc_entry: Any) -> DeviceEntry:
    """A device entry of a ledger document, from its named fields (checked against its leaf value by
    ``check_document``)."""
    try:
        e = doc_entry
        return DeviceEntry(
            device_id=e["device_id"], records=e["records"], results=e["results"],
            stream_results=tuple(sorted(e["stream_results"].items())), first_seq=e["first_seq"],
            last_seq=e["last_seq"], missing_evicted=e["missing"]["evicted"],
            missing_rejected=e["missing"]["rejected"], missing_lost=e["missing"]["lost"], uptime_s=e["uptime_s"],
            model_digests=tuple(bytes.fromhex(d) for d in e["model_digests"]),
            first_index=e["log_index"]["first"], last_index=e["log_index"]["last"])
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise LedgerError(f"ledger entry malformed: {e!r:.200}") from e


def check_document(doc: Any) -> tuple[NoteFields, list[DeviceEntry]]:
    """Check a ledger document's internal consistency (not its signature): each entry's named fields equal
    its leaf value, each proof leads from the leaf to the root, and the note states the same root, period,
    log position and entry count. Returns the note fields and the entries; raises ``LedgerError``."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LedgerError(f"not a {FORMAT} document")
    if doc.get("leaf_encoding") != list(LEAF_ENCODING) or doc.get("leaf_fields") != list(LEAF_FIELDS):
        raise LedgerError("ledger leaf encoding is not this version's")
    note = doc.get("note")
    if not isinstance(note, str):
        raise LedgerError("ledger document has no note")
    fields = parse_note_text(note_body(note))
    root_text = doc.get("root")
    if not isinstance(root_text, str) or not _ROOT_RE.match(root_text) or bytes.fromhex(root_text[2:]) != fields.root:
        raise LedgerError("ledger document root differs from its note's root")
    period = doc.get("period") or {}
    log = doc.get("log") or {}
    if period.get("label") != fields.period.label or log.get("size") != fields.log_size \
            or doc.get("origin") != fields.origin:
        raise LedgerError("ledger document period, origin or log size differs from its note")
    entries_json = doc.get("entries")
    if not isinstance(entries_json, list) or len(entries_json) != fields.entries:
        raise LedgerError(f"ledger document has {len(entries_json) if isinstance(entries_json, list) else 0} "
                          f"entries, its note says {fields.entries}")
    entries = []
    for n, ej in enumerate(entries_json):
        entry = entry_from_json(ej)
        value = entry.leaf(fields.period)
        if value_from_json(LEAF_ENCODING, ej.get("value")) != tuple(value):
            raise LedgerError(f"ledger entry {n} ({entry.device_id}): named fields differ from its leaf value")
        leaf = leaf_hash(LEAF_ENCODING, value)
        proof = ej.get("proof")
        if not isinstance(proof, list) or not all(isinstance(h, str) and _ROOT_RE.match(h) for h in proof):
            raise LedgerError(f"ledger entry {n} ({entry.device_id}): proof must be a list of 0x hashes")
        if process_proof(leaf, [bytes.fromhex(h[2:]) for h in proof]) != fields.root:
            raise LedgerError(f"ledger entry {n} ({entry.device_id}): its proof does not lead to the root")
        entries.append(entry)
    if len({e.device_id for e in entries}) != len(entries):
        raise LedgerError("ledger document names a device twice")
    return fields, entries


def note_body(signed_note: str) -> str:
    """The text part of a signed note (up to and including the newline before the last blank line)."""
    cut = signed_note.rfind("\n\n")
    if cut < 0:
        raise LedgerError("a signed note needs a blank line between text and signatures")
    return signed_note[:cut + 1]


def dump_for(ledger: Ledger) -> dict[str, Any] | None:
    """The OpenZeppelin ``standard-v1`` dump (``None`` for a period without entries)."""
    tree = ledger.tree()
    return tree.dump() if tree is not None else None
