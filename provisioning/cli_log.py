"""Transparency-log key commands of ``edge-provision``: ``log init | vkey``.

The log (DESIGN §9) signs its checkpoints with an Ed25519 key of its own, named by the checkpoint origin
``<fleet>/<log name>``. ``init`` makes the key (PKCS#8 PEM, 0600) and writes the verifier key string
``<origin>+<key id>+<key>`` beside it: the one line devices (``[receipts] log_vkey``) and auditors are given.
Every aggregator worker of the deployment gets a copy of the key (whichever leads signs). ``vkey`` prints
the verifier key of an existing key file again.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from envelope import MalformedNote, NoteSigner, note
from provisioning.cli import Output
from provisioning.csr import validate_fleet_name
from provisioning.errors import InvalidInput, KeyStoreError
from provisioning.file_key import create_file_key, load_file_signer
from provisioning.fsutil import atomic_write

_Sub = Any
DEFAULT_DIR = "/etc/edge-aggregator/log"
KEY_FILE = "log.key"
VKEY_FILE = "log.vkey"


def _origin(args: argparse.Namespace) -> str:
    origin: str = args.origin
    fleet, sep, name = origin.partition("/")
    if not sep or not name:
        raise InvalidInput(f"--origin must be <fleet>/<log name>, got {origin!r}")
    validate_fleet_name(fleet)
    try:
        note.check_key_name(origin)
    except MalformedNote as e:
        raise InvalidInput(f"--origin: {e}") from e
    return origin


def _signer(key_file: Path, origin: str) -> NoteSigner:
    key = load_file_signer(key_file).private_key
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyStoreError(f"{key_file} holds a {type(key).__name__}, not an Ed25519 log key")
    return NoteSigner(origin, key)


def config_lines(folder: Path, origin: str) -> list[str]:
    return ["[log]", f'key_file = "{folder / KEY_FILE}"', f'origin = "{origin}"']


def cmd_init(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    folder: Path = args.dir
    origin = _origin(args)
    key_file = folder / KEY_FILE
    if key_file.exists():
        raise KeyStoreError(f"{key_file} already exists; refusing to replace a log key (its checkpoints would "
                            "no longer verify)")
    create_file_key(key_file, "ed25519")
    signer = _signer(key_file, origin)
    atomic_write(folder / VKEY_FILE, (signer.vkey + "\n").encode(), mode=0o644)
    out.say(f"log key     {key_file} (Ed25519, mode 0600)")
    out.say(f"verifier    {signer.vkey}")
    out.say(f"            (also in {folder / VKEY_FILE}: give it to devices as [receipts] log_vkey, and to auditors)")
    out.say("aggregator config (every worker, with a copy of the key):")
    for line in config_lines(folder, origin):
        out.say(f"  {line}")
    return {"created": True, "origin": origin, "key_file": str(key_file), "vkey": signer.vkey,
            "vkey_file": str(folder / VKEY_FILE), "config": config_lines(folder, origin)}


def cmd_vkey(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    origin = _origin(args)
    key_file: Path = args.key or args.dir / KEY_FILE
    signer = _signer(key_file, origin)
    out.say(signer.vkey)
    return {"origin": origin, "key_file": str(key_file), "vkey": signer.vkey}


def add_log_commands(sub: _Sub, parents: list[argparse.ArgumentParser]) -> None:
    """``log init | vkey``."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, default=Path(os.environ.get("EDGE_AGGREGATOR_LOG_DIR") or DEFAULT_DIR),
                       help=f"log key directory (default $EDGE_AGGREGATOR_LOG_DIR or {DEFAULT_DIR})")
    where.add_argument("--origin", required=True,
                       help="checkpoint origin and key name: <fleet>/<log name>, e.g. acme-fleet/log1")
    p = sub.add_parser("init", parents=[*parents, where], help="create the log's Ed25519 key and verifier key")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("vkey", parents=[*parents, where], help="print the verifier key of the log key")
    p.add_argument("--key", type=Path, help=f"key file (default <dir>/{KEY_FILE})")
    p.set_defaults(func=cmd_vkey)
