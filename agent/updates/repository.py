"""The device's view of the signed model repository: python-tuf's ``ngclient`` with our clock and our limits.

``tuf.ngclient.Updater`` does the whole TUF client workflow (root rotation, timestamp, snapshot, targets;
signatures and thresholds, versions never going back, expiry, lengths and hashes, consistent snapshots).
This shell adds three things ngclient leaves to the application:

* **the clock** it judges expiry by: the latest of the system clock, the persisted last good time and the
  aggregator's signed receipt time (``policy.reference_time``). ngclient takes ``datetime.now()`` when an
  Updater is made; we set the trusted set's ``reference_time`` before ``refresh()`` (``_set_reference_time``,
  pinned by tests/unit/test_tuf_shim.py against the installed python-tuf);
* **the list** of targets: ngclient answers by path only; we read the verified top-level targets of the
  refresh that just succeeded (``_trusted_targets``, same pin);
* **limits**: every metadata length and the model size come from ``[updates]``; a target longer than
  ``max_model_bytes`` is refused before any byte is fetched, and ngclient stops reading at a target's
  signed length (endless data).

Errors are sorted by who is at fault: ``RepositoryUnreachable`` (network, HTTP status, timeouts: retry
later, nothing wrong with anyone's data) and ``RepositoryRefused`` (the data failed verification: an attack
or a broken release; ``cause`` names the check).
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.settings import UpdatesConfig

log = logging.getLogger(__name__)

__all__ = ["RepositoryClient", "RepositoryRefused", "RepositoryUnreachable", "Snapshot"]


class RepositoryUnreachable(AgentError):
    """The repository could not be reached or answered with an HTTP error (``cause``: short code)."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


class RepositoryRefused(AgentError):
    """Metadata or a target failed verification (``cause``: the TUF check that failed)."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


_CAUSES = (  # tuf.api.exceptions class name -> short cause (most specific first)
    ("UnsignedMetadataError", "bad_signature"),
    ("EqualVersionNumberError", "rollback"),
    ("BadVersionNumberError", "rollback"),
    ("ExpiredMetadataError", "expired"),
    ("LengthOrHashMismatchError", "hash_mismatch"),
    ("DownloadLengthMismatchError", "too_long"),
    ("RepositoryError", "invalid_metadata"),
)


def _classify(e: BaseException) -> AgentError:
    """A typed error for anything refresh or download raised."""
    import urllib3  # noqa: PLC0415
    from tuf.api import exceptions as tx  # noqa: PLC0415

    names = {c.__name__ for c in type(e).__mro__}
    if isinstance(e, tx.DownloadLengthMismatchError):
        return RepositoryRefused("too_long", f"more data than its signed length ({e})")
    if isinstance(e, tx.DownloadHTTPError):
        return RepositoryUnreachable(f"http_{e.status_code}", str(e))
    if isinstance(e, tx.SlowRetrievalError):
        # urllib3's NewConnectionError is a ConnectTimeoutError, so ngclient calls a refused connection slow
        reason = getattr(e.__cause__, "reason", None)
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return RepositoryUnreachable("connect", str(reason)[:200])
        return RepositoryUnreachable("timeout", "the repository did not answer in time")
    if isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        reason = getattr(e, "reason", None) or e
        return RepositoryUnreachable("connect", str(reason)[:200])
    if isinstance(e, tx.DownloadError):
        return RepositoryUnreachable("download", str(e)[:200])
    for name, cause in _CAUSES:
        if name in names:
            return RepositoryRefused(cause, f"{type(e).__name__}: {e}"[:300])
    return RepositoryRefused("invalid_metadata", f"{type(e).__name__}: {e}"[:300])


def _set_reference_time(updater: Any, when: datetime.datetime) -> None:
    """Make ngclient judge expiry by ``when`` (see the module docstring)."""
    ts = getattr(updater, "_trusted_set", None)
    if ts is None or not hasattr(ts, "reference_time"):
        raise AgentError("the installed python-tuf has no TrustedMetadataSet.reference_time: this agent cannot "
                         "judge metadata expiry by its own clock (tested with tuf 5-7)")
    ts.reference_time = when


def _trusted_targets(updater: Any) -> dict[str, Any]:
    """The verified top-level targets of the last refresh: path -> ``TargetFile``."""
    ts = updater._trusted_set  # private: see the module docstring
    return dict(ts.targets.targets)


@dataclass
class Snapshot:
    """One successful refresh: the verified targets and the Updater that can download them."""

    targets: dict[str, Any]  # path -> tuf TargetFile
    updater: Any
    reference_time: float


class RepositoryClient:
    """Refresh and download against one repository with one trusted root (``[updates]``)."""

    def __init__(self, cfg: UpdatesConfig) -> None:
        self.cfg = cfg
        self.metadata_dir = Path(cfg.dir) / "tuf"
        self.staging_dir = Path(cfg.dir) / "staging"
        try:
            with open(cfg.root, "rb") as f:
                self._root = f.read(cfg.max_metadata_bytes + 1)
        except OSError as e:
            raise AgentError(f"[updates] root {cfg.root}: cannot read the trusted root: {e.strerror or e}") from e
        if len(self._root) > cfg.max_metadata_bytes:
            raise AgentError(f"[updates] root {cfg.root}: larger than max_metadata_bytes {cfg.max_metadata_bytes}")
        base = cfg.repository_url.rstrip("/")
        self.metadata_url = f"{base}/metadata/"
        self.targets_url = f"{base}/targets/"

    def clean_staging(self) -> None:
        """Remove half-downloaded files (a kill -9 during a download leaves one)."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def refresh(self, reference_time: float) -> Snapshot:
        """Verify the repository's current metadata as of ``reference_time`` (Unix seconds)."""
        from tuf.ngclient import Updater, UpdaterConfig  # noqa: PLC0415
        from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher  # noqa: PLC0415

        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        limit = self.cfg.max_metadata_bytes
        ucfg = UpdaterConfig(max_root_rotations=32, max_delegations=1, root_max_length=limit,
                             timestamp_max_length=min(limit, 16384), snapshot_max_length=limit,
                             targets_max_length=limit, app_user_agent="edge-agent")
        fetcher = Urllib3Fetcher(socket_timeout=max(1, int(self.cfg.fetch_timeout_s)), app_user_agent="edge-agent")
        try:
            up = Updater(str(self.metadata_dir), self.metadata_url, str(self.staging_dir), self.targets_url,
                         fetcher=fetcher, config=ucfg, bootstrap=self._root)
        except Exception as e:
            raise AgentError(f"[updates] root {self.cfg.root}: not a valid TUF root: {e}") from e
        _set_reference_time(up, datetime.datetime.fromtimestamp(reference_time, datetime.timezone.utc))
        try:
            up.refresh()
        except OSError as e:
            if isinstance(e, (ConnectionError, TimeoutError)):
                raise _classify(e) from e
            raise AgentError(f"[updates] dir {self.cfg.dir}: cannot write TUF metadata: {e}") from e
        except Exception as e:
            raise _classify(e) from e
        return Snapshot(_trusted_targets(up), up, reference_time)

    def download(self, snap: Snapshot, path: str) -> Path:
        """Fetch one target of ``snap`` into the staging dir, verified (length, sha256) by ngclient."""
        info = snap.targets[path]
        if info.length > self.cfg.max_model_bytes:
            raise RepositoryRefused("too_large", f"{path} is {info.length} bytes, more than [updates] "
                                                 f"max_model_bytes {self.cfg.max_model_bytes}")
        dest = self.staging_dir / (info.hashes.get("sha256", "x") + ".tflite")
        try:
            return Path(snap.updater.download_target(info, str(dest)))
        except OSError as e:
            with_suppress_unlink(dest)
            if isinstance(e, (ConnectionError, TimeoutError)):
                raise _classify(e) from e
            raise AgentError(f"[updates] dir {self.cfg.dir}: cannot write {dest}: {e}") from e
        except Exception as e:
            with_suppress_unlink(dest)
            raise _classify(e) from e


def with_suppress_unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
