"""The log's integrator: one worker at a time gives stored records their indices and signs checkpoints.

Driven by the store thread (``tick`` between batches), on the store's own connection. Leadership is the
store's ``log_try_lead`` (PostgreSQL: a session advisory lock, freed when the worker's connection dies;
SQLite: the single writer); the integration transaction itself is serialised on the ``log_state`` row,
so even two workers that both believe they lead never assign an index twice. A checkpoint is signed when
the tree grew and ``checkpoint_interval_s`` has passed since the newest stored one (whoever signed it),
and only after checking, from the stored tiles, that the new tree extends the last signed one: the log's
key never signs a fork, whatever happened to the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aggregator.config import LogSettings
from aggregator.errors import LogError, StoreError
from aggregator.store import SavedCheckpoint, Store
from aggregator.tlog.tiles import TileCache
from envelope import Checkpoint, InvalidProof, NoteSigner
from envelope.merkle import TileBuilder, consistency_proof, tree_root, verify_consistency
from envelope.note import sign_checkpoint

log = logging.getLogger(__name__)

INTEGRATE_EVERY_MS = 50


class LogIntegrator:
    """Leads, integrates and checkpoints; ``publish(note)`` sends a new checkpoint (retained MQTT)."""

    def __init__(self, signer: NoteSigner, settings: LogSettings, issuer: str,
                 publish: Callable[[bytes], None] | None = None) -> None:
        self.signer = signer
        self.settings = settings
        self.issuer = issuer
        self.publish = publish
        self.leader = False
        self.latest: SavedCheckpoint | None = None
        self.counters = {"integrated": 0, "checkpoints": 0, "forks_refused": 0, "errors": 0}
        self._store: Store | None = None
        self._builder: TileBuilder | None = None
        self._next_ms = 0
        self._fork_logged = False

    def tick(self, store: Store, now_ms: int, *, force: bool = False) -> SavedCheckpoint | None:
        """Do what is due; returns a checkpoint signed now (already saved and handed to ``publish``)."""
        if not force and now_ms < self._next_ms:
            return None
        self._next_ms = now_ms + min(INTEGRATE_EVERY_MS, int(self.settings.checkpoint_interval_s * 500) or 1)
        if store is not self._store:  # a new connection: the lock and the cached tree went with the old one
            self._store, self._builder, self.leader = store, None, False
        try:
            if not store.log_try_lead():
                self.leader = False
                return None
            if not self.leader:
                self.leader = True
                self.latest = store.log_latest_checkpoint()
                log.info("this worker (%s) integrates the log now (latest checkpoint: size %s)", self.issuer,
                         self.latest.size if self.latest else None)
            self._integrate(store, now_ms)
            return self._checkpoint(store, now_ms)
        except StoreError as e:
            self.counters["errors"] += 1
            self._builder = None
            log.error("log integration failed (will retry): %s", e)
            return None

    def _integrate(self, store: Store, now_ms: int) -> None:
        while True:
            self._builder, appended = store.log_integrate(self._builder, self.settings.integrate_max, now_ms)
            if appended is None:
                return
            self.counters["integrated"] += appended.count
            if appended.count < self.settings.integrate_max:
                return

    def _checkpoint(self, store: Store, now_ms: int) -> SavedCheckpoint | None:
        size, root = store.log_state()
        last = self.latest
        if size == 0 or (last is not None and (size <= last.size or
                                               now_ms - last.issued_ms < self.settings.checkpoint_interval_s * 1000)):
            return None
        newest = store.log_latest_checkpoint()  # another worker may have signed since we looked
        if newest is not None and (last is None or newest.size > last.size):
            self.latest = newest
            return self._checkpoint(store, now_ms) if newest.size < size else None
        tiles = TileCache(store.log_tile, max_tiles=64)
        try:
            if tree_root(size, tiles.node) != root:
                raise LogError(f"the stored tiles do not rebuild the stored root of size {size}")
            if last is not None:
                verify_consistency(last.size, size, consistency_proof(last.size, size, tiles.node), last.root, root)
        except (LogError, InvalidProof) as e:
            self.counters["forks_refused"] += 1
            if not self._fork_logged:
                log.error("NOT signing a checkpoint of size %d: %s; the store was modified behind the log "
                          "(checkpoint %s stays the latest)", size, e, last.size if last else None)
                self._fork_logged = True
            return None
        note = sign_checkpoint(Checkpoint(self.signer.name, size, root), self.signer)
        cp = SavedCheckpoint(size, root, now_ms, self.issuer, note.decode())
        store.log_save_checkpoint(cp, self.settings.keep_checkpoints)
        self.latest = cp
        self.counters["checkpoints"] += 1
        log.debug("checkpoint of size %d signed", size)
        if self.publish is not None:
            self.publish(note)
        return cp
