"""Release commands of ``edge-provision models``: init, golden, add, revoke, publish, resign-timestamp, status.

The release operator's side of signed model updates (DESIGN §11, docs/model-updates.md). ``init`` makes the
repository and its keys; ``add`` and ``revoke`` sign a new targets version with the offline targets key(s);
``publish`` makes it visible with the online snapshot and timestamp keys; ``resign-timestamp`` is the daily
job of ``edge-models-timestamp.timer``; ``golden`` computes golden vectors on the release build machine
when that is not the machine that signs.
"""

from __future__ import annotations

import argparse
import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from provisioning.cli import EXIT_FAIL, Output
from provisioning.errors import InvalidInput
from provisioning.fsutil import atomic_write

_Sub = Any
DEFAULT_REPO = "/var/lib/edge-models/repository"


def _package_version() -> str:
    try:
        return importlib_metadata.version("depin-edge-agent")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.1.0"


def _repo(args: argparse.Namespace) -> Any:
    from provisioning.model_repo import ModelRepository  # noqa: PLC0415

    return ModelRepository(Path(args.repo))


def _expiry(args: argparse.Namespace) -> Any:
    from provisioning.model_repo import Expiry  # noqa: PLC0415

    given = {f"{role}_days": getattr(args, f"{role}_days", None) for role in ("root", "targets", "snapshot",
                                                                              "timestamp")}
    return Expiry(**{k: v for k, v in given.items() if v is not None})


def _signers(paths: list[Path] | None) -> list[Any]:
    from provisioning.model_repo import key_signer  # noqa: PLC0415

    return [key_signer(Path(p)) for p in paths or []]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {what} {path}: {e.strerror}") from e


def cmd_init(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    from provisioning.model_repo import ModelRepository  # noqa: PLC0415

    repo, files = ModelRepository.create(Path(args.repo), Path(args.keys_dir), root_keys=args.root_keys,
                                         root_threshold=args.root_threshold, targets_keys=args.targets_keys,
                                         targets_threshold=args.targets_threshold, expiry=_expiry(args))
    root = repo.file_of("root", 1)
    out.say(f"model repository created in {repo.dir}")
    out.say(f"trusted root for fleet images: {root} (ship it as [updates] root)")
    out.say(f"root keys ({args.root_threshold} of {args.root_keys}): " + ", ".join(map(str, files["root"])))
    out.say(f"targets keys ({args.targets_threshold} of {args.targets_keys}): "
            + ", ".join(map(str, files["targets"])))
    out.say("move the root and targets keys to offline media now; keep snapshot.pem and timestamp.pem on the "
            "release host (docs/model-updates.md)")
    return {"repository": str(repo.dir), "trusted_root": str(root),
            "keys": {role: [str(p) for p in paths] for role, paths in files.items()}}


def cmd_golden(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    from provisioning.model_golden import golden_file  # noqa: PLC0415

    doc = golden_file(_read(Path(args.model), "model"), args.runtime, args.count, args.seed)
    atomic_write(Path(args.output), (json.dumps(doc, indent=1) + "\n").encode())
    out.say(f"{args.output}: {args.count} golden vectors of {args.model} for runtime {args.runtime}")
    return {"output": str(args.output), "runtime": args.runtime, "vectors": args.count, "sha256": doc["sha256"]}


def _tolerances(items: list[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            steps = int(value)
        except ValueError:
            steps = -1
        if not sep or not key or steps < 0:
            raise InvalidInput(f"--tolerance {item!r}: expected RUNTIME[/ARCH]=STEPS, e.g. cpu/aarch64=1")
        out[key] = steps
    return out


def _share_bp(share: float) -> int:
    if not 0.0 <= share <= 1.0:
        raise InvalidInput(f"--rollout-share {share}: expected a fraction within 0..1 (0.1 = 10 % of devices)")
    return round(share * 10000)


def cmd_add(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    import hashlib  # noqa: PLC0415

    from provisioning.model_golden import compute_golden, load_golden_file  # noqa: PLC0415
    from provisioning.model_target import Rollout  # noqa: PLC0415

    model_path = Path(args.model)
    model = _read(model_path, "model")
    meta_path = Path(args.metadata) if args.metadata else model_path.with_suffix(".json")
    try:
        meta = json.loads(_read(meta_path, "model metadata"))
    except ValueError as e:
        raise InvalidInput(f"{meta_path}: expected JSON model metadata: {e}") from e
    if not isinstance(meta, dict):
        raise InvalidInput(f"{meta_path}: expected a JSON object")
    model_id = args.model_id or str(meta.get("name", ""))
    sha = hashlib.sha256(model).hexdigest()
    if args.golden:
        inputs, outputs = load_golden_file([Path(p) for p in args.golden], sha)
    else:
        ins, outs, _facts = compute_golden(model, args.golden_count, args.golden_seed)
        inputs, outputs = ins, {"cpu": outs}
    repo = _repo(args)
    target = repo.add_model(model, meta, model_id=model_id, version=args.version,
                            min_agent_version=args.min_agent_version or _package_version(), inputs=inputs,
                            outputs=outputs, tolerance=_tolerances(args.tolerance),
                            rollout=Rollout(args.rollout_id or f"{model_id}-{args.version}",
                                            _share_bp(args.rollout_share)),
                            signers=_signers(args.key), expiry=_expiry(args))
    tv = repo.versions("targets")[-1]
    out.say(f"signed targets v{tv}: {target.path} (sha256 {target.sha256[:16]}..., {target.length} bytes, "
            f"{len(target.golden.inputs)} golden vectors, rollout {target.rollout.share:.0%} as {target.rollout.id})")
    out.say("not yet visible to devices: run `edge-provision models publish`")
    return {"target": target.path, "sha256": target.sha256, "targets_version": tv, "model_id": target.model_id,
            "version": target.version, "rollout": {"id": target.rollout.id, "share": target.rollout.share}}


def cmd_revoke(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    repo = _repo(args)
    path = repo.revoke(args.model_id, args.version, _signers(args.key), expiry=_expiry(args))
    tv = repo.versions("targets")[-1]
    out.say(f"signed targets v{tv} without {path}; run `edge-provision models publish` to release it")
    return {"revoked": path, "targets_version": tv}


def cmd_publish(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    repo = _repo(args)
    (snap,), (ts,) = _signers([args.snapshot_key]), _signers([args.timestamp_key])
    sv, tv = repo.publish(snap, ts, expiry=_expiry(args))
    st = repo.status()
    out.say(f"published targets v{st['published_targets_version']} (snapshot v{sv}, timestamp v{tv}): "
            + (", ".join(f"{m['model_id']} v{m['version']}" for m in st["models"]) or "no models"))
    return {"snapshot_version": sv, "timestamp_version": tv, "targets_version": st["published_targets_version"]}


def cmd_resign_timestamp(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    repo = _repo(args)
    (ts,) = _signers([args.timestamp_key])
    snap = _signers([args.snapshot_key])[0] if args.snapshot_key else None
    res: dict[str, Any] = repo.resign_timestamp(ts, snapshot_signer=snap, expiry=_expiry(args))
    out.say(f"timestamp v{res['timestamp_version']} (snapshot v{res['snapshot_version']}"
            f"{', renewed' if res['snapshot_renewed'] else ''}) valid until {res['expires']}")
    return res


def cmd_status(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    st: dict[str, Any] = _repo(args).status()
    for role, r in st["roles"].items():
        extra = f", {r['threshold']} of {r['keys']} keys" if "threshold" in r else ""
        out.say(f"{role:9} v{r['version']}, expires {r['expires']} ({r['days_left']} days){extra}")
        if r["days_left"] < (1.0 if role == "timestamp" else 14.0):
            out.warn(f"{role} metadata expires in {r['days_left']} days: devices refuse expired metadata")
            out.exit_code = EXIT_FAIL
    for m in st["models"]:
        out.say(f"model {m['model_id']} v{m['version']} sha256 {m['sha256'][:16]}... rollout "
                f"{m['rollout']['share']:.0%} ({m['rollout']['id']})")
    if st["unpublished_targets_version"]:
        out.warn(f"targets v{st['unpublished_targets_version']} is signed but not published "
                 "(edge-provision models publish)")
    return st


def add_models_commands(sub: _Sub, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``edge-provision models ...``."""
    repo = argparse.ArgumentParser(add_help=False)
    repo.add_argument("--repo", default=DEFAULT_REPO, help=f"repository directory (default {DEFAULT_REPO})")
    exp = argparse.ArgumentParser(add_help=False)
    for role, default in (("root", 365), ("targets", 365), ("snapshot", 30), ("timestamp", 3)):
        exp.add_argument(f"--{role}-days", type=float, default=None, help=f"{role} validity (default {default} days)")
    both = [*parents, repo, exp]

    p = sub.add_parser("init", help="create a repository and its keys (release operator, once)", parents=both)
    p.add_argument("--keys-dir", required=True, help="where to write the new keys (then move root and targets "
                                                    "keys offline)")
    p.add_argument("--root-keys", type=int, default=3, help="root keys (default 3)")
    p.add_argument("--root-threshold", type=int, default=2, help="root signatures required (default 2)")
    p.add_argument("--targets-keys", type=int, default=1, help="targets keys (default 1)")
    p.add_argument("--targets-threshold", type=int, default=1, help="targets signatures required (default 1)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("golden", help="compute golden vectors of a model with this host's runtime",
                       parents=parents)
    p.add_argument("--model", required=True, help=".tflite file (the release build)")
    p.add_argument("--runtime", default="cpu", help="runtime name the outputs are for (cpu or a delegate name)")
    p.add_argument("--count", type=int, default=4, help="vectors (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    p.add_argument("-o", "--output", required=True, help="golden vector JSON to write")
    p.set_defaults(func=cmd_golden)

    p = sub.add_parser("add", help="sign a new targets version with one more model version (offline key)",
                       parents=both)
    p.add_argument("--model", required=True, help=".tflite file")
    p.add_argument("--metadata", default=None, help="model metadata JSON (default: the model path with .json)")
    p.add_argument("--model-id", default=None, help="model id (default: the metadata's name)")
    p.add_argument("--version", type=int, required=True, help="monotonic version of this model id")
    p.add_argument("--min-agent-version", default=None, help="oldest agent that may run it (default: this one)")
    p.add_argument("--golden", action="append", type=Path, help="golden vector file(s) from `models golden` "
                                                                "(default: computed here with the CPU runtime)")
    p.add_argument("--golden-count", type=int, default=4, help="vectors computed here (default 4)")
    p.add_argument("--golden-seed", type=int, default=0, help="seed of the computed vectors' inputs")
    p.add_argument("--tolerance", action="append", help="RUNTIME[/ARCH]=STEPS allowed (default 0), repeatable")
    p.add_argument("--rollout-share", type=float, default=1.0, help="fraction of devices that take it (0..1)")
    p.add_argument("--rollout-id", default=None, help="rollout id (default <model id>-<version>)")
    p.add_argument("--key", action="append", type=Path, required=True, help="targets key file, repeatable")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("revoke", help="sign a targets version without a model version (offline key)",
                       parents=both)
    p.add_argument("--model-id", required=True, help="the model id whose version is revoked")
    p.add_argument("--version", type=int, required=True, help="the version to revoke (never offered again)")
    p.add_argument("--key", action="append", type=Path, required=True, help="targets key file, repeatable")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("publish", help="release the latest targets version (online snapshot + timestamp keys)",
                       parents=both)
    p.add_argument("--snapshot-key", type=Path, required=True, help="the online snapshot key file")
    p.add_argument("--timestamp-key", type=Path, required=True, help="the online timestamp key file")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("resign-timestamp", help="re-sign the timestamp (daily job; renews a due snapshot)",
                       parents=both)
    p.add_argument("--timestamp-key", type=Path, required=True, help="the online timestamp key file")
    p.add_argument("--snapshot-key", type=Path, default=None, help="lets the job renew the snapshot when due")
    p.set_defaults(func=cmd_resign_timestamp)

    p = sub.add_parser("status", help="versions, expiries and models of a repository (exit 1 if expiring)",
                       parents=[*parents, repo])
    p.set_defaults(func=cmd_status)
