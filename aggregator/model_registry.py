"""Which model digests are signed releases: the aggregator's reading of the devices' model repository.

A result record carries the digest of the exact model bytes that computed it (DESIGN §3), but a digest alone
says nothing about whether the release keys ever signed that model: anyone who can write a device's model
file changes what it computes. The aggregator reads the same TUF repository the devices update from (same
trusted root, python-tuf's ``ngclient``) and flags results whose digest is not a signed target: they are
stored like any other (the device signed them; losing them helps nobody) but counted apart, per digest, in
``stats()`` and ``edge-aggregator models``. An unknown digest wakes a refresh: devices may see a release a
moment before the aggregator does, and flags are judged against the latest list, not at arrival.

Only the latest verified list counts: a revoked version's digest becomes unlisted at the next refresh. Until
the first refresh succeeds, nothing is flagged (``listed`` answers None: unknown is not unlisted). A
background thread refreshes every ``[models] refresh_s``; a failed refresh keeps the previous list and is
logged once per change of condition, never per attempt.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator.config import ModelsSettings
from provisioning.model_target import InvalidTarget, ModelTarget

log = logging.getLogger(__name__)

__all__ = ["ListedModel", "ModelRegistry"]

MIN_REFRESH_GAP_S = 1.0


@dataclass(frozen=True)
class ListedModel:
    """A signed model version."""

    model_id: str
    version: int
    path: str


class ModelRegistry:
    """The signed digests of one repository, refreshed on a thread (``start``/``stop``) or by ``refresh()``."""

    def __init__(self, cfg: ModelsSettings, store_url: str = "") -> None:
        self.cfg = cfg
        if cfg.cache_dir:
            self.cache_dir = Path(cfg.cache_dir)
        elif store_url and not store_url.startswith(("postgres", ":memory:")):
            self.cache_dir = Path(store_url).parent / "models-tuf"
        else:
            self.cache_dir = Path(tempfile.mkdtemp(prefix="edge-aggregator-models-"))
        self._listed: dict[bytes, ListedModel] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.condition = "never_checked"
        self.refreshes = 0
        self.failures = 0

    def listed(self, digest: bytes) -> ListedModel | bool | None:
        """The signed model with this digest; False when unlisted; None while no list was ever verified."""
        with self._lock:
            if self._listed is None:
                return None
            return self._listed.get(bytes(digest), False)

    def snapshot(self) -> dict[str, ListedModel]:
        with self._lock:
            return {d.hex(): m for d, m in (self._listed or {}).items()}

    @property
    def known(self) -> bool:
        return self._listed is not None

    def refresh(self) -> bool:
        """Verify the repository now; True when the list was replaced."""
        from tuf.ngclient import Updater, UpdaterConfig  # noqa: PLC0415
        from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher  # noqa: PLC0415

        try:
            assert self.cfg.root_file is not None
            root = Path(self.cfg.root_file).read_bytes()
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            base = self.cfg.repository_url.rstrip("/")
            up = Updater(str(self.cache_dir), f"{base}/metadata/", None, f"{base}/targets/", bootstrap=root,
                         config=UpdaterConfig(max_delegations=1),
                         fetcher=Urllib3Fetcher(socket_timeout=int(self.cfg.fetch_timeout_s)))
            up.refresh()
            targets: dict[str, Any] = dict(up._trusted_set.targets.targets)  # as in agent/updates/repository.py
        except Exception as e:  # any failure keeps the previous list; the condition says why
            self.failures += 1
            self._set_condition(f"failed: {type(e).__name__}: {str(e)[:160]}")
            return False
        listed: dict[bytes, ListedModel] = {}
        for path, tf in targets.items():
            try:
                t = ModelTarget.from_target(path, tf.length, tf.hashes, tf.custom)
            except InvalidTarget as e:
                log.warning("model repository: %s", e)
                continue
            listed[bytes.fromhex(t.sha256)] = ListedModel(t.model_id, t.version, t.path)
        with self._lock:
            changed = self._listed != listed
            self._listed = listed
        self.refreshes += 1
        self._set_condition("ok")
        if changed:
            log.info("model repository %s: %d signed model version(s): %s", self.cfg.repository_url, len(listed),
                     ", ".join(f"{m.model_id} v{m.version}" for m in sorted(listed.values(),
                                                                            key=lambda m: (m.model_id, m.version))))
        return changed

    def _set_condition(self, cond: str) -> None:
        if cond[:40] == self.condition[:40]:  # same condition, same cause: said already
            return
        self.condition = cond
        if cond == "ok":
            log.info("model repository %s verified", self.cfg.repository_url)
        else:
            log.warning("model repository %s: %s (keeping the previous list of signed models)",
                        self.cfg.repository_url, cond)

    def wake(self) -> None:
        """Refresh soon (a digest nobody listed arrived: maybe a release the devices saw first)."""
        self._wake.set()

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="model-registry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.cfg.fetch_timeout_s + 5)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.cfg.refresh_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            self.refresh()
            self._stop.wait(MIN_REFRESH_GAP_S)  # a flood of unknown digests refreshes at most this often


# ----- ``edge-aggregator models`` ---------------------------------------------------------------------------

def models_report(registry: ModelRegistry, counts: list[tuple[str, bytes, int]]) -> dict[str, Any]:
    """Stored results per model digest, each marked as a signed target (id, version) or unlisted. Pure."""
    by_digest: dict[str, dict[str, Any]] = {}
    for device_id, digest, n in counts:
        h = digest.hex()
        entry = by_digest.get(h)
        if entry is None:
            listed = registry.listed(digest)
            entry = by_digest[h] = {
                "sha256": h, "listed": None if listed is None else listed is not False,
                "model_id": listed.model_id if isinstance(listed, ListedModel) else None,
                "version": listed.version if isinstance(listed, ListedModel) else None,
                "results": 0, "devices": {}}
        entry["results"] += n
        entry["devices"][device_id] = entry["devices"].get(device_id, 0) + n
    models = sorted(by_digest.values(), key=lambda e: (e["listed"] is not False, e["model_id"] or "",
                                                       e["version"] or 0))
    return {"repository": registry.cfg.repository_url, "verified": registry.known,
            "condition": registry.condition, "signed": {h: {"model_id": m.model_id, "version": m.version}
                                                        for h, m in registry.snapshot().items()},
            "models": models, "unlisted_results": sum(e["results"] for e in models if e["listed"] is False)}


def cmd_models(args: Any) -> int:
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from aggregator.config import load_config  # noqa: PLC0415
    from aggregator.errors import ConfigError  # noqa: PLC0415
    from aggregator.store import open_store  # noqa: PLC0415

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    if not cfg.models.repository_url:
        print(f"{args.config}: no [models] repository_url: nothing to check digests against", file=sys.stderr)
        return 2
    registry = ModelRegistry(cfg.models, cfg.store.url)
    registry.refresh()
    store = open_store(cfg.store.url, schema=cfg.store.schema)
    try:
        report = models_report(registry, store.model_digest_counts())
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"repository {report['repository']}: {report['condition']}, "
              f"{len(report['signed'])} signed model version(s)")
        for m in report["models"]:
            what = ("UNLISTED (not a signed target)" if m["listed"] is False else
                    "unknown (repository never verified)" if m["listed"] is None else
                    f"{m['model_id']} v{m['version']}")
            print(f"{m['sha256'][:16]}  {what:40} {m['results']:>10} results from {len(m['devices'])} device(s)")
    if not registry.known:
        return 1
    return 1 if report["unlisted_results"] else 0


def add_models_parser(sub: Any) -> None:
    """Register ``edge-aggregator models`` (called by ``aggregator.cli``)."""
    p = sub.add_parser("models", help="stored results per model digest, signed target or UNLISTED "
                                      "(exit 1 if any result is unlisted)")
    p.add_argument("--config", required=True, help="aggregator config with [models] and [store]")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)
