"""The log position a receipt carries (DESIGN §9): checkpoint, index and inclusion proof, consistency proof.

With the log on, a receipt's ``settled`` point is the seq of the record it proves: the device's newest
stored record that the latest checkpoint covers. So the device checks one record it still holds (seq =
``settled``) and never deletes a stored record the log cannot yet show. Records stored after the checkpoint
wait for the next one; such devices are handed back to the batcher when the checkpoint grows. The
consistency proof starts at the size of the checkpoint in the device's previous receipt (``log_receipts``,
shared by all workers, reset by the size the device itself reports in its birth and telemetry records, so a
device that missed a receipt is found again). Before proving a record the worker checks that the stored
bytes hash to the stored leaf: a record changed behind the log gets no receipt, so the device keeps its copy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from aggregator.errors import LogError
from aggregator.store import SavedCheckpoint, Store
from aggregator.tlog.tiles import TileCache
from envelope import LogPosition, Receipt
from envelope.merkle import consistency_proof, inclusion_proof, leaf_hash

log = logging.getLogger(__name__)


class ReceiptLog:
    """Adds log positions to due receipts, per publish round, and tracks devices waiting for a checkpoint."""

    def __init__(self) -> None:
        self.tiles: TileCache | None = None
        self._store: Store | None = None
        self.waiting: dict[str, tuple[int, int]] = {}  # device -> (settled, epoch) the batcher wanted to publish
        self.seen_size = 0
        self.counters = {"positions": 0, "capped": 0, "mismatch": 0}

    def _cache(self, store: Store) -> TileCache:
        if self.tiles is None or store is not self._store:
            self._store = store
            self.tiles = TileCache(store.log_tile)
        return self.tiles

    def poll(self, store: Store) -> dict[str, tuple[int, int]]:
        """Devices to re-note (with force) because a newer checkpoint may now cover what they wait for."""
        cp = store.log_latest_checkpoint()
        if cp is None or cp.size <= self.seen_size:
            return {}
        self.seen_size = cp.size
        out, self.waiting = self.waiting, {}
        return out

    def attach(self, store: Store, due: Sequence[Receipt]) -> list[Receipt]:
        """The receipts to publish: settled capped to the proven record, log position filled."""
        if not due:
            return []
        cp = store.log_latest_checkpoint()
        size = cp.size if cp is not None else 0
        self.seen_size = max(self.seen_size, size)
        uncovered = store.log_uncovered(size)
        prev = store.log_receipt_sizes([r.dev for r in due])
        tiles = self._cache(store)
        out = []
        for r in due:
            cap = min(r.settled, uncovered.get(r.dev, r.settled + 1) - 1)
            newest = store.log_newest_stored(r.dev, cap) if cp is not None and cap > 0 else None
            epoch = r.epoch
            if newest is None or not 0 <= newest.index < size:
                settled, position = cap, None
            else:
                assert cp is not None
                try:
                    position = self._position(cp, newest.index, newest.record, prev.get(r.dev, 0), tiles)
                except LogError as e:
                    self.counters["mismatch"] += 1
                    log.error("no receipt for %s: %s", r.dev, e)
                    continue
                settled, epoch = newest.seq, newest.epoch
            if settled < r.settled:
                self.counters["capped"] += 1
                self.waiting[r.dev] = (r.settled, r.epoch)
            out.append(dataclasses.replace(r, settled=max(0, settled), epoch=epoch, log=position))
        return out

    def _position(self, cp: SavedCheckpoint, index: int, record: bytes, prev_size: int,
                  tiles: TileCache) -> LogPosition:
        if tiles.node(0, index) != leaf_hash(record):
            raise LogError(f"the stored record at log index {index} does not hash to its leaf: the store was "
                           "changed behind the log")
        inclusion = inclusion_proof(index, cp.size, tiles.node)
        if not 0 < prev_size <= cp.size:
            prev_size = 0
        consistency = consistency_proof(prev_size, cp.size, tiles.node) if 0 < prev_size < cp.size else []
        self.counters["positions"] += 1
        return LogPosition(cp.note, index, tuple(inclusion), prev_size, tuple(consistency))

    @staticmethod
    def published(store: Store, receipts: Sequence[Receipt]) -> None:
        """Remember, for every worker, the checkpoint size each device was last given."""
        sizes = {}
        for r in receipts:
            if r.log is not None:
                sizes[r.dev] = int(r.log.checkpoint.split("\n", 2)[1])
        if sizes:
            store.log_note_receipt_sizes(sizes)
