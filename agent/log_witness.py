"""The device as a witness of the transparency log for its own data (DESIGN §9): the pure check.

A receipt with a log position says: "your record ``settled`` is leaf ``index`` of this signed checkpoint,
and this checkpoint extends the one in your previous receipt". Before the device deletes anything on the
word of such a receipt it checks, against the record bytes it still holds and the newest checkpoint it
verified before:

* the checkpoint is signed by the log's key, for the log's origin;
* a checkpoint of the same size as the newest one has the same root (two roots for one size is a fork);
* a larger one is consistent with the newest one (RFC 9162 proof from ``prev_size`` = the newest size);
* when the receipt lets rows go, the record ``settled`` is one the device holds, and its leaf hash is
  included at ``index``.

``check_log`` returns a ``Verdict``: ``ok`` (with the checkpoint to keep as the newest), ``refuse`` (the
receipt cannot be checked now: nothing is deleted, nothing is alleged) or ``inconsistent`` (a proof
failed: nothing is deleted, and the two signed checkpoints and the receipt are evidence against the log).
Pure: the outbox is reached through ``held(seq)``; no clock, no files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from envelope import Checkpoint, EnvelopeError, InvalidProof, LogPosition, NoteVerifier
from envelope.merkle import leaf_hash, verify_consistency, verify_inclusion
from envelope.note import open_checkpoint

OK, REFUSE, INCONSISTENT = "ok", "refuse", "inconsistent"


@dataclass(frozen=True)
class Verdict:
    """What to do with a receipt's log position; ``checkpoint``/``note``: the receipt's (when it parsed)."""

    kind: str
    reason: str = ""
    detail: str = ""
    checkpoint: Checkpoint | None = None
    note: str = ""


@dataclass(frozen=True)
class Held:
    """The outbox as the check sees it: the oldest and newest seq it holds (None when empty), and bytes."""

    first: int | None
    last: int
    record: Callable[[int], bytes | None]


def check_log(position: LogPosition | None, settled: int, verifier: NoteVerifier, origin: str,
              newest: Checkpoint | None, held: Held) -> Verdict:
    """Check one receipt's log position (see the module docstring)."""
    deletes = held.first is not None and settled >= held.first  # rows this receipt would let go
    if position is None:
        if deletes:
            return Verdict(REFUSE, "log_missing", "the receipt settles held records but carries no log position")
        return Verdict(OK)
    try:
        cp, _ = open_checkpoint(position.checkpoint, [verifier], origin=origin)
    except EnvelopeError as e:
        return Verdict(REFUSE, "log_bad_checkpoint", str(e))
    found = Verdict(OK, checkpoint=cp, note=position.checkpoint)
    if newest is not None and cp.size == newest.size and cp.root != newest.root:
        return Verdict(INCONSISTENT, "log_fork", f"two different signed roots for tree size {cp.size}", cp,
                       position.checkpoint)
    if deletes:
        if settled > held.last:
            return Verdict(REFUSE, "log_unverifiable", f"settled {settled} is beyond the newest record held "
                           f"({held.last})", cp, position.checkpoint)
        data = held.record(settled)
        if data is None:
            return Verdict(REFUSE, "log_unverifiable", f"record {settled} is not in the outbox", cp,
                           position.checkpoint)
        try:
            verify_inclusion(position.index, cp.size, leaf_hash(data), position.inclusion, cp.root)
        except InvalidProof as e:
            return Verdict(INCONSISTENT, "log_inclusion", f"record {settled} is not leaf {position.index} of the "
                           f"checkpoint of size {cp.size}: {e}", cp, position.checkpoint)
    if newest is None or cp.size == newest.size:
        return found
    if cp.size < newest.size:
        if deletes:
            return Verdict(REFUSE, "log_stale", f"checkpoint of size {cp.size} is older than the newest verified "
                           f"({newest.size})", cp, position.checkpoint)
        return Verdict(OK)  # an old receipt replayed: it changes nothing, and the newest stays
    if position.prev_size != newest.size:
        return Verdict(REFUSE, "log_unverifiable", f"the consistency proof starts at size {position.prev_size}, "
                       f"the newest verified checkpoint has size {newest.size}", cp, position.checkpoint)
    try:
        verify_consistency(newest.size, cp.size, position.consistency, newest.root, cp.root)
    except InvalidProof as e:
        return Verdict(INCONSISTENT, "log_consistency", f"the checkpoint of size {cp.size} does not extend the one "
                       f"of size {newest.size}: {e}", cp, position.checkpoint)
    return found
