"""Writing a period's ledger to a folder: the thin I/O shell around ``aggregator.ledger.export``.

Three files per period, each written atomically (temp file, fsync, rename) so a reader never sees half a
ledger: ``ledger-<period>.json`` (every figure, a leaf value, leaf hash and proof per device, the signed note),
``ledger-<period>.oz.json`` (the OpenZeppelin ``standard-v1`` dump; absent for a period without entries) and
``ledger-<period>.note`` (the signed note alone: what a reward contract's operator submits the root from).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aggregator.ledger.compute import Ledger
from aggregator.ledger.errors import LedgerError
from aggregator.ledger.export import LogBinding, dump_for, ledger_document, note_text
from aggregator.ledger.period import Period
from provisioning import atomic_write

NoteSigner = Callable[[str], str]  # note text -> signed note (text, blank line, signature lines)


@dataclass(frozen=True)
class LedgerFiles:
    """Where one period's ledger went."""

    document: Path
    note: Path
    dump: Path | None


def file_stem(period: Period) -> str:
    """``ledger-2026-12-01``; an interval's ``/`` and ``:`` become ``_`` and nothing (safe file names)."""
    return "ledger-" + re.sub(r"[^0-9A-Za-z._-]", "", period.label.replace("/", "_"))


def write_ledger(out_dir: str | Path, ledger: Ledger, log: LogBinding, sign: NoteSigner) -> LedgerFiles:
    """Sign the period's root, then write the three files into ``out_dir`` (created if missing)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LedgerError(f"{out}: cannot create the ledger folder: {e.strerror or e}") from e
    signed = sign(note_text(ledger, log))
    doc = ledger_document(ledger, log, signed)
    dump = dump_for(ledger)
    stem = file_stem(ledger.period)
    files = LedgerFiles(out / f"{stem}.json", out / f"{stem}.note", out / f"{stem}.oz.json" if dump else None)
    try:
        atomic_write(files.document, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
        atomic_write(files.note, signed.encode())
        if files.dump is not None:
            atomic_write(files.dump, (json.dumps(dump, indent=2) + "\n").encode())
        elif (out / f"{stem}.oz.json").exists():
            (out / f"{stem}.oz.json").unlink()  # a rebuilt period that lost its entries has no tree
    except OSError as e:
        raise LedgerError(f"{out}: cannot write the ledger of {ledger.period.label}: {e.strerror or e}") from e
    return files
