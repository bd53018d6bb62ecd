"""Aggregator identity commands of ``edge-provision``: ``aggregator init | install-cert | status``.

An aggregator signs receipts (DESIGN §8) with its own key, certified by the fleet CA with the SAN URI
``spiffe://<fleet>/aggregator/<id>``. These commands mirror the device ones (``provisioning.cli_device``):
``init`` makes the key (file or PKCS#11) and the CSR, the operator runs ``ca sign --role aggregator``,
``install-cert`` checks the certificate against the key and the fleet root and installs it, ``status``
reports and exits 1 when something is wrong. The identity directory holds ``identity.json``, the CSR, the
certificate and, for file keys, the key (0600); ``[identity]`` of the aggregator config points at them.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from envelope import kid_for
from provisioning.certs import cert_identity, fingerprint, fleet_of_ca, load_certificates, pem
from provisioning.chain import verify_chain
from provisioning.cli import EXIT_FAIL, Output
from provisioning.csr import build_csr, claim_code, csr_pem, validate_fleet_name
from provisioning.device_id import validate_device_id
from provisioning.errors import (
    CaStateError,
    InvalidDeviceId,
    InvalidInput,
    KeyStoreError,
    NotFound,
    ProvisioningError,
)
from provisioning.fsutil import atomic_write
from provisioning.key_uri import parse_key_uri
from provisioning.signers import close_signer, create_key, key_exists, key_tier, open_signer

_Sub = Any
DEFAULT_DIR = "/etc/edge-aggregator/identity"
STATE_FILE = "identity.json"
CSR_FILE = "aggregator.csr"
CERT_FILE = "aggregator.crt"
CA_FILE = "fleet-ca.pem"


@dataclass
class AggregatorState:
    """What ``aggregator init`` decided, kept in ``identity.json``."""

    aggregator_id: str
    fleet: str
    key_uri: str

    @staticmethod
    def path(folder: Path) -> Path:
        return folder / STATE_FILE

    @classmethod
    def load(cls, folder: Path) -> AggregatorState:
        try:
            doc = json.loads(cls.path(folder).read_text())
            return cls(doc["aggregator_id"], doc["fleet"], doc["key_uri"])
        except FileNotFoundError:
            raise CaStateError(f"{folder} holds no aggregator identity; run `edge-provision aggregator init`") \
                from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CaStateError(f"{cls.path(folder)} is unreadable or incomplete: {e}") from e

    def save(self, folder: Path) -> None:
        atomic_write(self.path(folder), (json.dumps(asdict(self), indent=2) + "\n").encode())


def _anchors(path: Path) -> list[x509.Certificate]:
    try:
        return load_certificates(path.read_bytes(), source=f"fleet CA certificate {path}")
    except OSError as e:
        raise InvalidInput(f"cannot read the fleet CA certificate {path}: {e.strerror}") from e


def _kid(uri: str) -> str:
    signer = open_signer(uri)
    try:
        return kid_for(signer.public_key()).hex()
    finally:
        close_signer(signer)


def config_lines(folder: Path, st: AggregatorState) -> list[str]:
    """The ``[identity]`` lines of the aggregator config for this identity."""
    return ["[identity]", f'key = "{st.key_uri}"', f'cert_file = "{folder / CERT_FILE}"']


def cmd_init(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    folder: Path = args.dir
    if AggregatorState.path(folder).exists():
        raise CaStateError(f"{folder} already holds an aggregator identity ({AggregatorState.path(folder)})")
    validate_device_id(args.id)  # aggregator ids follow the device-id rule (they are certificate CNs)
    anchors = _anchors(args.ca_cert) if args.ca_cert else []
    fleet = args.fleet or (fleet_of_ca(anchors[0]) if anchors else None)
    if fleet is None:
        raise InvalidInput("the fleet name is unknown: pass --fleet NAME or --ca-cert FILE")
    validate_fleet_name(fleet)
    key_uri = args.key or f"file:{(folder / 'aggregator.key').resolve()}"
    parse_key_uri(key_uri)
    if key_exists(key_uri):
        raise KeyStoreError(f"a key already exists at {key_uri}; refusing to replace it")
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    signer = create_key(key_uri, args.key_type)
    try:
        csr = build_csr(signer, args.id, fleet, role="aggregator")
        kid, code = kid_for(signer.public_key()).hex(), claim_code(signer.public_key())
    finally:
        close_signer(signer)
    atomic_write(folder / CSR_FILE, csr_pem(csr))
    if anchors:
        atomic_write(folder / CA_FILE, pem(*anchors))
    st = AggregatorState(args.id, fleet, key_uri)
    st.save(folder)
    out.say(f"aggregator  {args.id}  (spiffe://{fleet}/aggregator/{args.id})")
    out.say(f"key         {key_uri}  ({key_tier(key_uri)} tier, kid {kid})")
    out.say(f"CSR         {folder / CSR_FILE}")
    out.say(f"claim code  {code}")
    out.say("Have the operator run: edge-provision ca sign --role aggregator " + str(folder / CSR_FILE))
    return {"created": True, "aggregator_id": args.id, "fleet": fleet, "key_uri": key_uri,
            "key_tier": key_tier(key_uri), "kid": kid, "csr": str(folder / CSR_FILE), "claim_code": code}


def cmd_install_cert(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    folder: Path = args.dir
    st = AggregatorState.load(folder)
    try:
        chain = load_certificates(args.cert.read_bytes(), source=f"certificate file {args.cert}")
    except OSError as e:
        raise InvalidInput(f"cannot read certificate file {args.cert}: {e.strerror}") from e
    ca_file: Path = args.ca_cert or folder / CA_FILE
    anchors = _anchors(ca_file)
    leaf_kid = kid_for(chain[0].public_key()).hex()  # type: ignore[arg-type]
    if leaf_kid != _kid(st.key_uri):
        raise InvalidInput(f"certificate {args.cert} is for key {leaf_kid}, not this aggregator's key "
                           f"{st.key_uri}", reason="key_mismatch")
    der = [c.public_bytes(Encoding.DER) for c in chain]
    fleet, _, ident = verify_chain(der, anchors, [], datetime.now(timezone.utc), "aggregator")
    if ident != st.aggregator_id or fleet != st.fleet:
        raise InvalidDeviceId(f"certificate names aggregator {ident!r} of fleet {fleet!r}, this identity is "
                              f"{st.aggregator_id!r} of {st.fleet!r}")
    atomic_write(folder / CERT_FILE, pem(*chain))
    if args.ca_cert:
        atomic_write(folder / CA_FILE, pem(*anchors))
    out.say(f"installed certificate for aggregator {ident} (serial {chain[0].serial_number:x}, valid until "
            f"{chain[0].not_valid_after_utc.isoformat()}) at {folder / CERT_FILE}")
    out.say("aggregator config:")
    for line in config_lines(folder, st):
        out.say(f"  {line}")
    return {"aggregator_id": ident, "cert": str(folder / CERT_FILE), "serial": format(chain[0].serial_number, "x"),
            "not_after": chain[0].not_valid_after_utc.isoformat(), "kid": leaf_kid,
            "ca_fingerprint": fingerprint(anchors[0]), "config": config_lines(folder, st)}


def cmd_status(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    folder: Path = args.dir
    if not AggregatorState.path(folder).exists():
        raise NotFound(f"no aggregator identity at {AggregatorState.path(folder)}: run `edge-provision aggregator "
                       "init`, or give --dir")
    st = AggregatorState.load(folder)
    problems: list[str] = []
    result: dict[str, Any] = {"aggregator_id": st.aggregator_id, "fleet": st.fleet, "key_uri": st.key_uri,
                              "key_tier": key_tier(st.key_uri), "cert": None}
    kid = None
    try:
        kid = _kid(st.key_uri)
        result["key"] = "ok"
    except ProvisioningError as e:
        result["key"] = "unusable"
        problems.append(f"key: {e}")
    result["kid"] = kid
    certp = folder / CERT_FILE
    if certp.exists():
        try:
            chain = load_certificates(certp.read_bytes(), source=str(certp))
            leaf = chain[0]
            now = datetime.now(timezone.utc)
            days = (leaf.not_valid_after_utc - now).total_seconds() / 86400
            fleet, role, ident = cert_identity(leaf)
            matches = kid is not None and kid_for(leaf.public_key()).hex() == kid  # type: ignore[arg-type]
            result["cert"] = {"path": str(certp), "spiffe": f"spiffe://{fleet}/{role}/{ident}",
                              "serial": format(leaf.serial_number, "x"), "not_after": leaf.not_valid_after_utc
                              .isoformat(), "days_left": round(days, 1), "matches_key": matches}
            if role != "aggregator" or ident != st.aggregator_id:
                problems.append(f"certificate is for {role} {ident!r}, not aggregator {st.aggregator_id!r}")
            if days < 0:
                problems.append("certificate has expired: make a new identity and have it signed")
            elif days < 30:
                problems.append(f"certificate expires in {days:.0f} days")
            if kid is not None and not matches:
                problems.append("installed certificate does not match the key")
            if (folder / CA_FILE).exists():
                try:
                    verify_chain([c.public_bytes(Encoding.DER) for c in chain], _anchors(folder / CA_FILE), [], now,
                                 "aggregator")
                except InvalidInput as e:
                    problems.append(f"certificate does not verify against {folder / CA_FILE}: {e}")
        except InvalidInput as e:
            problems.append(str(e))
    else:
        problems.append(f"no certificate installed yet ({certp}): send {folder / CSR_FILE} to the fleet CA "
                        "(ca sign --role aggregator)")
    result["config"] = config_lines(folder, st)
    result["problems"] = problems
    result["healthy"] = not problems
    out.say(f"aggregator {st.aggregator_id} (fleet {st.fleet})")
    out.say(f"key        {st.key_uri} [{result['key_tier']}] {result['key']}" + (f", kid {kid}" if kid else ""))
    c = result["cert"]
    out.say(f"cert       {c['spiffe']} serial {c['serial']}, expires {c['not_after']} ({c['days_left']} days)"
            if c else "cert       none")
    for p in problems:
        out.say(f"  ! {p}")
    if problems:
        out.exit_code = EXIT_FAIL
    return result


def add_aggregator_commands(sub: _Sub, parents: list[argparse.ArgumentParser]) -> None:
    """``aggregator init | install-cert | status``."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, default=Path(os.environ.get("EDGE_AGGREGATOR_IDENTITY_DIR")
                                                        or DEFAULT_DIR),
                       help=f"identity directory (default $EDGE_AGGREGATOR_IDENTITY_DIR or {DEFAULT_DIR})")
    p = sub.add_parser("init", parents=[*parents, where], help="create the aggregator key and CSR")
    p.add_argument("--id", required=True, help="aggregator id (CN and SAN spiffe://<fleet>/aggregator/<id>), "
                   "e.g. agg-1; each worker instance has its own")
    p.add_argument("--key", help="key URI: file:/path or pkcs11:token=...;object=... "
                   "(default file:<dir>/aggregator.key)")
    p.add_argument("--key-type", choices=("p256", "ed25519"), default="p256", help="file keys only (p256)")
    p.add_argument("--fleet", help="fleet name (default: read from --ca-cert)")
    p.add_argument("--ca-cert", type=Path, help="fleet root CA certificate (also kept for install-cert)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("install-cert", parents=[*parents, where], help="check and install the issued certificate")
    p.add_argument("cert", type=Path, help="certificate chain PEM from `ca sign --role aggregator`")
    p.add_argument("--ca-cert", type=Path, help="fleet root CA certificate (default <dir>/fleet-ca.pem)")
    p.set_defaults(func=cmd_install_cert)

    p = sub.add_parser("status", parents=[*parents, where],
                       help="key, certificate, expiry, config lines; exit 1 when something is wrong")
    p.set_defaults(func=cmd_status)
