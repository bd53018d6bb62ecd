"""The signed model repository (DESIGN §11): TUF metadata made with ``tuf.api.metadata``, served as static files.

Layout of a repository directory (any web server serves it; the agent's ``[updates] repository_url`` points
at its root)::

    metadata/1.root.json, 2.root.json ...   root versions (offline keys, threshold default 2 of 3)
    metadata/<n>.targets.json                one per change of the model list (offline targets key(s))
    metadata/<n>.snapshot.json               one per publish (online snapshot key)
    metadata/timestamp.json                  re-signed at every publish and daily (online timestamp key)
    targets/<model id>/<version>/<sha256>.<model id>.tflite

Consistent snapshots are on: every metadata file a client fetches after the timestamp is versioned and every
target file is prefixed with its hash, so a publish never changes a file a client may be reading and a
half-uploaded repository is never seen as a whole. A new targets version is invisible until ``publish``
writes the snapshot and the timestamp naming it: adding a model (offline key) and releasing it (online keys)
are two steps, as in the ceremony of docs/model-updates.md.

Keys are Ed25519, one PKCS#8 PEM file per key (0600). ``init`` writes them all into one directory; the
operator then moves the root and targets keys to offline media. Every signing step checks that the keys it
was given belong to the role and reach its threshold, and says which are missing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from provisioning.errors import CaStateError, InvalidInput, KeyStoreError
from provisioning.fsutil import atomic_write
from provisioning.model_target import Golden, InputSpec, ModelTarget, Rollout, target_path

__all__ = ["Expiry", "ModelRepository", "RoleSigners", "key_signer", "write_key"]

ROLES = ("root", "targets", "snapshot", "timestamp")
_VERSIONED = re.compile(r"^(\d+)\.(root|targets|snapshot)\.json$")
SPEC_VERSION = "1.0.31"


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid after it is signed (days)."""

    root_days: float = 365.0
    targets_days: float = 365.0
    snapshot_days: float = 30.0
    timestamp_days: float = 3.0  # re-signed daily by edge-models-timestamp.timer: two missed days tolerated
    snapshot_renew_days: float = 10.0  # resign-timestamp renews the snapshot when it expires sooner than this

    def of(self, role: str) -> timedelta:
        return timedelta(days=float(getattr(self, f"{role}_days")))


def _tuf() -> Any:
    from tuf.api import metadata  # noqa: PLC0415 - only model commands pay for tuf

    return metadata


def write_key(path: Path) -> Any:
    """A new Ed25519 key in ``path`` (PKCS#8 PEM, 0600, refusing to overwrite); returns its signer."""
    if path.exists():
        raise CaStateError(f"{path} already exists: refusing to overwrite a signing key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    atomic_write(path, pem, mode=0o600)
    return _signer(key)


def _signer(key: Any) -> Any:
    from securesystemslib.signer import CryptoSigner  # noqa: PLC0415

    return CryptoSigner(key)


def key_signer(path: Path) -> Any:
    """The signer of a key file written by ``write_key`` (any PKCS#8 Ed25519 or P-256 key works)."""
    from provisioning.file_key import check_key_file_permissions  # noqa: PLC0415

    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyStoreError(f"cannot read signing key {path}: {e.strerror}") from e
    check_key_file_permissions(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyStoreError(f"{path}: expected an unencrypted PKCS#8 PEM private key: {e}") from e
    return _signer(key)


@dataclass
class RoleSigners:
    """Signers given for one role, already checked against the root (keyid -> signer)."""

    role: str
    signers: dict[str, Any]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class ModelRepository:
    """One repository directory: read its metadata, add or remove models, publish, re-sign the timestamp."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.metadata_dir = self.dir / "metadata"
        self.targets_dir = self.dir / "targets"

    # ----- reading ------------------------------------------------------------------------------------
    def versions(self, role: str) -> list[int]:
        """Every version of ``role`` on disk, ascending (timestamp: [] or [its version])."""
        if role == "timestamp":
            p = self.metadata_dir / "timestamp.json"
            return [self.load("timestamp").signed.version] if p.exists() else []
        out = []
        try:
            names = [p.name for p in self.metadata_dir.iterdir()]
        except FileNotFoundError:
            return []
        for name in names:
            m = _VERSIONED.match(name)
            if m and m.group(2) == role:
                out.append(int(m.group(1)))
        return sorted(out)

    def file_of(self, role: str, version: int | None = None) -> Path:
        if role == "timestamp":
            return self.metadata_dir / "timestamp.json"
        if version is None:
            vs = self.versions(role)
            if not vs:
                raise CaStateError(f"{self.dir} has no {role} metadata; run `edge-provision models init`")
            version = vs[-1]
        return self.metadata_dir / f"{version}.{role}.json"

    def load(self, role: str, version: int | None = None) -> Any:
        """``Metadata`` of ``role`` (latest version unless given)."""
        path = self.file_of(role, version)
        try:
            return _tuf().Metadata.from_file(str(path))
        except FileNotFoundError:
            raise CaStateError(f"{path} does not exist; is {self.dir} a model repository "
                               "(edge-provision models init)?") from None
        except Exception as e:
            raise CaStateError(f"{path} is not valid TUF metadata: {e}") from e

    def root_bytes(self, version: int = 1) -> bytes:
        """The exact bytes of a root version: version 1 is what fleet images ship as the trusted root."""
        return self.file_of("root", version).read_bytes()

    def model_targets(self, targets: Any | None = None) -> list[ModelTarget]:
        """The models listed by a targets metadata (latest on disk by default), checked, by (id, version)."""
        md = targets or self.load("targets")
        out = [ModelTarget.from_target(path, tf.length, tf.hashes, tf.custom)
               for path, tf in md.signed.targets.items()]
        return sorted(out, key=lambda t: (t.model_id, t.version))

    def used_versions(self, model_id: str) -> set[int]:
        """Every version of ``model_id`` any targets metadata ever listed (revoked ones too)."""
        seen: set[int] = set()
        for v in self.versions("targets"):
            for tf in self.load("targets", v).signed.targets.values():
                custom: Mapping[str, Any] = tf.custom if isinstance(tf.custom, Mapping) else {}
                edge = custom.get("edge")
                if isinstance(edge, Mapping) and edge.get("model_id") == model_id \
                        and isinstance(edge.get("version"), int):
                    seen.add(int(edge["version"]))
        return seen

    # ----- signing ------------------------------------------------------------------------------------
    def signers_for(self, role: str, signers: Sequence[Any], root: Any | None = None) -> RoleSigners:
        """Check that ``signers`` are keys of ``role`` in the current root and reach its threshold."""
        root = root or self.load("root").signed
        r = root.roles[role]
        chosen: dict[str, Any] = {}
        strangers = []
        for s in signers:
            kid = s.public_key.keyid
            if kid in r.keyids:
                chosen[kid] = s
            else:
                strangers.append(kid[:16])
        if strangers:
            raise InvalidInput(f"key(s) {', '.join(strangers)} are not {role} keys of root v{root.version} "
                               f"(its {role} keys: {', '.join(k[:16] for k in sorted(r.keyids))})",
                               reason="wrong_key")
        if len(chosen) < r.threshold:
            raise InvalidInput(f"{role} needs {r.threshold} signature(s) from its {len(r.keyids)} key(s); "
                               f"{len(chosen)} distinct {role} key(s) given", reason="below_threshold")
        return RoleSigners(role, chosen)

    def _write(self, md: Any, role: str, signers: RoleSigners) -> Path:
        from tuf.api.serialization.json import JSONSerializer  # noqa: PLC0415

        md.signatures.clear()
        for s in signers.signers.values():
            md.sign(s, append=True)
        path = self.file_of(role, md.signed.version) if role != "timestamp" else self.file_of(role)
        atomic_write(path, md.to_bytes(JSONSerializer(compact=False)))
        return path

    # ----- init ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, keys_dir: Path, *, root_keys: int = 3, root_threshold: int = 2,
               targets_keys: int = 1, targets_threshold: int = 1, expiry: Expiry | None = None,
               now: datetime | None = None) -> tuple[ModelRepository, dict[str, list[Path]]]:
        """A new repository with fresh keys: root v1, an empty targets v1, snapshot and timestamp v1."""
        md = _tuf()
        expiry = expiry or Expiry()
        now = now or _now()
        for n, t, role in ((root_keys, root_threshold, "root"), (targets_keys, targets_threshold, "targets")):
            if not 1 <= t <= n:
                raise InvalidInput(f"{role} threshold {t} with {n} key(s): expected 1 <= threshold <= keys")
        repo = cls(directory)
        if repo.versions("root"):
            raise CaStateError(f"{directory} already holds a model repository (metadata/1.root.json)")
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for p in [keys_dir / f"root-{i + 1}.pem" for i in range(root_keys)] + \
                 [keys_dir / f"targets-{i + 1}.pem" for i in range(targets_keys)] + \
                 [keys_dir / "snapshot.pem", keys_dir / "timestamp.pem"]:
            if p.exists():
                raise CaStateError(f"{p} already exists: refusing to overwrite a signing key")
        repo.metadata_dir.mkdir(parents=True, exist_ok=True)
        repo.targets_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, list[Path]] = {r: [] for r in ROLES}
        signers: dict[str, list[Any]] = {r: [] for r in ROLES}
        counts = {"root": root_keys, "targets": targets_keys, "snapshot": 1, "timestamp": 1}
        for role in ROLES:
            for i in range(counts[role]):
                name = f"{role}-{i + 1}.pem" if role in ("root", "targets") else f"{role}.pem"
                files[role].append(keys_dir / name)
                signers[role].append(write_key(keys_dir / name))
        root = md.Root(expires=now + expiry.of("root"), consistent_snapshot=True, spec_version=SPEC_VERSION)
        for role in ROLES:
            for s in signers[role]:
                root.add_key(s.public_key, role)
        root.roles["root"].threshold = root_threshold
        root.roles["targets"].threshold = targets_threshold
        root_md = md.Metadata(root)
        repo._write(root_md, "root", RoleSigners("root", {s.public_key.keyid: s for s in signers["root"]}))
        targets = md.Metadata(md.Targets(expires=now + expiry.of("targets"), spec_version=SPEC_VERSION))
        repo._write(targets, "targets", RoleSigners("targets", {s.public_key.keyid: s for s in signers["targets"]}))
        repo.publish(signers["snapshot"][0], signers["timestamp"][0], expiry=expiry, now=now)
        return repo, files

    # ----- targets (offline key) ----------------------------------------------------------------------
    def add_model(self, model: bytes, metadata: Mapping[str, Any], *, model_id: str, version: int,
                  min_agent_version: str, inputs: Sequence[bytes], outputs: Mapping[str, Sequence[Sequence[int]]],
                  tolerance: Mapping[str, int], rollout: Rollout, signers: Sequence[Any],
                  expiry: Expiry | None = None, now: datetime | None = None) -> ModelTarget:
        """Store the model file and sign a new targets version listing it (not yet published)."""
        md = _tuf()
        expiry = expiry or Expiry()
        now = now or _now()
        used = self.used_versions(model_id)
        if used and version <= max(used):
            raise InvalidInput(f"model {model_id}: version {version} is not above the highest version ever "
                               f"released ({max(used)}); versions are monotonic (devices refuse going back)",
                               reason="version_not_monotonic")
        role = self.signers_for("targets", signers)
        sha = hashlib.sha256(model).hexdigest()
        meta = dict(metadata)
        if meta.get("sha256") not in (None, sha):
            raise InvalidInput(f"the metadata's sha256 {meta['sha256']} is not the model's {sha} "
                               "(model and metadata are from different builds)")
        meta["sha256"] = sha
        meta["version"] = version
        channels: Any = meta.get("channels")
        try:
            spec = InputSpec(shape=tuple(int(x) for x in meta["input_shape"]), dtype=str(meta["input_dtype"]),
                             window=int(meta["window"]),
                             channels=len(channels) if isinstance(channels, list) else int(channels))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"model metadata: expected input_shape, input_dtype, window and channels: {e!r}") \
                from e
        path = target_path(model_id, version)
        target = ModelTarget(path=path, length=len(model), sha256=sha, model_id=model_id, version=version,
                             min_agent_version=min_agent_version, input=spec,
                             metadata_json=json.dumps(meta, indent=1, ensure_ascii=False),
                             golden=Golden(tuple(inputs), {k: tuple(tuple(v) for v in vs) for k, vs in outputs.items()},
                                           dict(tolerance)),
                             rollout=rollout)
        # Round trip through the parser the agent uses: what we sign is what a device will accept.
        custom = target.custom()
        ModelTarget.from_target(path, len(model), {"sha256": sha}, custom)
        dirname, _, base = path.rpartition("/")
        dest = self.targets_dir / dirname / f"{sha}.{base}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, model)
        tmd = self.load("targets")
        tmd.signed.targets[path] = md.TargetFile(length=len(model), hashes={"sha256": sha}, path=path,
                                                 unrecognized_fields={"custom": custom})
        tmd.signed.version += 1
        tmd.signed.expires = now + expiry.of("targets")
        self._write(tmd, "targets", role)
        return target

    def revoke(self, model_id: str, version: int, signers: Sequence[Any], *, expiry: Expiry | None = None,
               now: datetime | None = None) -> str:
        """Sign a targets version without that model version (not yet published). Returns its path."""
        expiry = expiry or Expiry()
        now = now or _now()
        role = self.signers_for("targets", signers)
        tmd = self.load("targets")
        path = target_path(model_id, version)
        if path not in tmd.signed.targets:
            raise InvalidInput(f"{path} is not a target of targets v{tmd.signed.version}", reason="no_such_target")
        del tmd.signed.targets[path]
        tmd.signed.version += 1
        tmd.signed.expires = now + expiry.of("targets")
        self._write(tmd, "targets", role)
        return path

    # ----- snapshot + timestamp (online keys) ---------------------------------------------------------
    def publish(self, snapshot_signer: Any, timestamp_signer: Any, *, expiry: Expiry | None = None,
                now: datetime | None = None) -> tuple[int, int]:
        """A new snapshot naming the latest targets, then a new timestamp naming it: (snapshot, timestamp)."""
        md = _tuf()
        expiry = expiry or Expiry()
        now = now or _now()
        root = self.load("root").signed
        snap_role = self.signers_for("snapshot", [snapshot_signer], root)
        ts_role = self.signers_for("timestamp", [timestamp_signer], root)
        tpath = self.file_of("targets")
        tdata = tpath.read_bytes()
        tversion = self.versions("targets")[-1]
        snaps = self.versions("snapshot")
        snapshot = md.Snapshot(version=(snaps[-1] + 1) if snaps else 1, expires=now + expiry.of("snapshot"),
                               spec_version=SPEC_VERSION,
                               meta={"targets.json": md.MetaFile(version=tversion, length=len(tdata),
                                                                 hashes={"sha256": hashlib.sha256(tdata).hexdigest()})})
        self._write(md.Metadata(snapshot), "snapshot", snap_role)
        return snapshot.version, self._timestamp(ts_role, snapshot.version, expiry, now)

    def _timestamp(self, role: RoleSigners, snapshot_version: int, expiry: Expiry, now: datetime) -> int:
        md = _tuf()
        sdata = self.file_of("snapshot", snapshot_version).read_bytes()
        old = self.versions("timestamp")
        ts = md.Timestamp(version=(old[-1] + 1) if old else 1, expires=now + expiry.of("timestamp"),
                          spec_version=SPEC_VERSION,
                          snapshot_meta=md.MetaFile(version=snapshot_version, length=len(sdata),
                                                    hashes={"sha256": hashlib.sha256(sdata).hexdigest()}))
        self._write(md.Metadata(ts), "timestamp", role)
        return int(ts.version)

    def resign_timestamp(self, timestamp_signer: Any, *, snapshot_signer: Any | None = None,
                         expiry: Expiry | None = None, now: datetime | None = None) -> dict[str, Any]:
        """A new timestamp for the current snapshot (daily job); renews the snapshot too when it is due.

        Never publishes a targets change: the snapshot it renews names the same targets version.
        """
        md = _tuf()
        expiry = expiry or Expiry()
        now = now or _now()
        root = self.load("root").signed
        ts_role = self.signers_for("timestamp", [timestamp_signer], root)
        current = self.load("timestamp").signed.snapshot_meta.version
        snap = self.load("snapshot", current)
        renewed = False
        if snap.signed.expires - now < timedelta(days=expiry.snapshot_renew_days):
            if snapshot_signer is None:
                raise InvalidInput(f"snapshot v{current} expires at {snap.signed.expires.isoformat()}: give "
                                   "--snapshot-key so the daily job can renew it", reason="snapshot_due")
            role = self.signers_for("snapshot", [snapshot_signer], root)
            new = md.Metadata(md.Snapshot(version=self.versions("snapshot")[-1] + 1,
                                          expires=now + expiry.of("snapshot"), spec_version=SPEC_VERSION,
                                          meta=dict(snap.signed.meta)))
            self._write(new, "snapshot", role)
            current = new.signed.version
            renewed = True
        version = self._timestamp(ts_role, current, expiry, now)
        return {"timestamp_version": version, "snapshot_version": current, "snapshot_renewed": renewed,
                "expires": (now + expiry.of("timestamp")).isoformat()}

    # ----- status -------------------------------------------------------------------------------------
    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """Versions and expiries of every role, the published models, and what is signed but unpublished."""
        now = now or _now()
        ts = self.load("timestamp").signed
        snap = self.load("snapshot", ts.snapshot_meta.version).signed
        published_targets = snap.meta["targets.json"].version
        root = self.load("root").signed
        latest_targets = self.versions("targets")[-1]
        tmd = self.load("targets", published_targets)
        roles = {}
        for name, signed in (("root", root), ("targets", tmd.signed), ("snapshot", snap), ("timestamp", ts)):
            left = (signed.expires - now).total_seconds() / 86400
            roles[name] = {"version": signed.version, "expires": signed.expires.isoformat(),
                           "days_left": round(left, 2)}
            if name in ROLES[:2]:
                roles[name]["threshold"] = root.roles[name].threshold
                roles[name]["keys"] = len(root.roles[name].keyids)
        return {
            "repository": str(self.dir),
            "roles": roles,
            "published_targets_version": published_targets,
            "unpublished_targets_version": latest_targets if latest_targets > published_targets else None,
            "models": [{"model_id": t.model_id, "version": t.version, "sha256": t.sha256, "length": t.length,
                        "rollout": {"id": t.rollout.id, "share": t.rollout.share, "share_bp": t.rollout.share_bp},
                        "min_agent_version": t.min_agent_version,
                        "golden": {"vectors": len(t.golden.inputs), "runtimes": sorted(t.golden.outputs),
                                   "tolerance": dict(t.golden.tolerance)}}
                       for t in self.model_targets(tmd)],
        }
