"""Technician commands of ``edge-provision``: ``device init | install-cert | status | rotate``.

They run on the device, as the agent's service user, against the state directory described in
``provisioning.device_state``. Every check runs before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from envelope import kid_for
from provisioning.agent_config_check import DeviceFacts, check_agent_config
from provisioning.certs import fingerprint, fleet_of_ca, load_certificates, pem
from provisioning.cli import EXIT_FAIL, Output
from provisioning.csr import build_csr, claim_code, csr_pem, validate_fleet_name
from provisioning.device_id import persist_device_id, resolve_device_id
from provisioning.device_state import (
    DEFAULT_CA_CERT,
    DeviceState,
    ca_path,
    cert_path,
    csr_path,
    default_key_uri,
)
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
from provisioning.signers import (
    close_signer,
    create_key,
    key_exists,
    key_tier,
    open_signer,
    promote_key,
    successor_key_uri,
)
from provisioning.verify import verify_chain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_Sub = Any
DEFAULT_AGENT_CONFIG = Path("/etc/edge-agent/agent.toml")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _load_anchors(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read the fleet CA certificate {path}: {e.strerror}") from e
    return load_certificates(data, source=f"fleet CA certificate {path}")


def _public_kid(uri: str) -> str:
    signer = open_signer(uri)
    try:
        return kid_for(signer.public_key()).hex()
    finally:
        close_signer(signer)


def _make_key_and_csr(key_uri: str, key_type: str, device_id: str, fleet: str) -> tuple[bytes, str, str]:
    signer = create_key(key_uri, key_type)
    try:
        csr = build_csr(signer, device_id, fleet)
        return csr_pem(csr), kid_for(signer.public_key()).hex(), claim_code(signer.public_key())
    finally:
        close_signer(signer)


# --- init ---------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    state_dir: Path = args.state_dir
    if DeviceState.path(state_dir).exists():
        if args.if_missing:
            st = DeviceState.load(state_dir)
            out.say(f"device {st.device_id} is already initialised; nothing to do")
            return {"created": False, "device_id": st.device_id, "key_uri": st.key_uri}
        raise CaStateError(f"{state_dir} already holds a provisioned device ({DeviceState.path(state_dir)}); "
                           "use `edge-provision device rotate` for a new key")
    key_uri = args.key or default_key_uri(state_dir)
    parse_key_uri(key_uri)
    ca_file: Path = args.ca_cert or DEFAULT_CA_CERT
    anchors = _load_anchors(ca_file) if (args.ca_cert or ca_file.exists()) else []
    fleet = args.fleet
    if fleet is None:
        fleet = fleet_of_ca(anchors[0]) if anchors else None
        if fleet is None:
            raise InvalidInput(f"the fleet name is unknown: pass --fleet NAME or install the fleet CA certificate "
                               f"at {ca_file} (or give --ca-cert)")
    validate_fleet_name(fleet)
    if key_exists(key_uri):
        raise KeyStoreError(f"a key already exists at {key_uri}; refusing to replace a device key "
                            "(use `edge-provision device rotate`)")
    ident = resolve_device_id(state_dir, override=args.device_id, root=args.sysroot)
    state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    persist_device_id(state_dir, ident.device_id)  # an override too: the agent's device_id_file reads it
    csr, kid, code = _make_key_and_csr(key_uri, args.key_type, ident.device_id, fleet)
    atomic_write(csr_path(state_dir), csr)
    if anchors:
        atomic_write(ca_path(state_dir), pem(*anchors))
    exported = None
    if args.export_dir:
        args.export_dir.mkdir(parents=True, exist_ok=True)
        exported = args.export_dir / f"{ident.device_id}.csr"
        atomic_write(exported, csr)
    DeviceState(ident.device_id, ident.source, fleet, key_uri).save(state_dir)
    out.say(f"device id   {ident.device_id}  (from {ident.source})")
    out.say(f"key         {key_uri}  ({key_tier(key_uri)} tier, kid {kid})")
    out.say(f"CSR         {csr_path(state_dir)}" + (f"  (copied to {exported})" if exported else ""))
    out.say(f"claim code  {code}")
    out.say("Send the CSR to the fleet operator; the claim code they see must match the one above.")
    return {"created": True, "device_id": ident.device_id, "id_source": ident.source, "fleet": fleet,
            "key_uri": key_uri, "key_tier": key_tier(key_uri), "kid": kid, "csr": str(csr_path(state_dir)),
            "exported_csr": str(exported) if exported else None, "claim_code": code}


# --- install-cert ----------------------------------------------------------------------------------------


def cmd_install_cert(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    state_dir: Path = args.state_dir
    st = DeviceState.load(state_dir)
    try:
        data = args.cert.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read certificate file {args.cert}: {e.strerror}") from e
    chain = load_certificates(data, source=f"certificate file {args.cert}")
    leaf, intermediates = chain[0], chain[1:]
    ca_file: Path = args.ca_cert or (ca_path(state_dir) if ca_path(state_dir).exists() else DEFAULT_CA_CERT)
    anchors = _load_anchors(ca_file)
    leaf_pub = leaf.public_key()
    leaf_kid = kid_for(leaf_pub).hex()  # type: ignore[arg-type]
    current_kid = _public_kid(st.key_uri)
    pending_kid = _public_kid(st.pending_key_uri) if st.pending_key_uri else None
    if leaf_kid == current_kid:
        mode = "install"
    elif pending_kid is not None and leaf_kid == pending_kid:
        mode = "rotate"
    else:
        expected = current_kid + (f" or the pending rotated key {pending_kid}" if pending_kid else "")
        raise InvalidInput(f"certificate {args.cert} is for key {leaf_kid}, but this device's key is {expected}: "
                           "it was issued for another device or an older key", reason="key_mismatch")
    identity = verify_chain(leaf, intermediates, anchors, None, _now(), fleet=st.fleet)
    if identity != st.device_id:
        raise InvalidDeviceId(f"certificate names device {identity!r}, but this device is {st.device_id!r}")
    if mode == "rotate":
        assert st.pending_key_uri is not None
        promote_key(st.key_uri, st.pending_key_uri)
        st.pending_key_uri = None
        if csr_path(state_dir, pending=True).exists():
            os.replace(csr_path(state_dir, pending=True), csr_path(state_dir))
    target = cert_path(state_dir)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(target, pem(leaf, *intermediates))
    if args.ca_cert:
        atomic_write(ca_path(state_dir), pem(*anchors))
    st.save(state_dir)
    out.say(f"installed certificate for {identity} (serial {leaf.serial_number:x}, valid until "
            f"{leaf.not_valid_after_utc.isoformat()}) at {target}")
    if mode == "rotate":
        out.say("the rotated key is now the device key; restart the agent to use it")
    return {"device_id": identity, "cert": str(target), "serial": format(leaf.serial_number, "x"),
            "not_after": leaf.not_valid_after_utc.isoformat(), "rotated": mode == "rotate", "kid": leaf_kid,
            "ca_fingerprint": fingerprint(anchors[0])}


# --- status -------------------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    state_dir: Path = args.state_dir
    if not DeviceState.path(state_dir).exists():
        raise NotFound(f"no device state at {DeviceState.path(state_dir)}: this device is not provisioned yet "
                       "(run `edge-provision device init`), or give --state-dir")
    st = DeviceState.load(state_dir)
    problems: list[str] = []
    now = _now()
    result: dict[str, Any] = {"device_id": st.device_id, "id_source": st.id_source, "fleet": st.fleet,
                              "key_uri": st.key_uri, "key_tier": key_tier(st.key_uri)}
    kid = None
    try:
        kid = _public_kid(st.key_uri)
        result["key"] = "ok"
    except ProvisioningError as e:
        result["key"] = "unusable"
        problems.append(f"key: {e}")
    result["kid"] = kid
    certp = cert_path(state_dir)
    result["cert"] = None
    if certp.exists():
        try:
            chain = load_certificates(certp.read_bytes(), source=str(certp))
            leaf = chain[0]
            days_left = (leaf.not_valid_after_utc - now).total_seconds() / 86400
            cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            result["cert"] = {
                "path": str(certp), "subject": leaf.subject.rfc4514_string(),
                "cn": str(cn[0].value) if cn else None, "serial": format(leaf.serial_number, "x"),
                "not_after": leaf.not_valid_after_utc.isoformat(), "days_left": round(days_left, 1),
                "matches_key": kid is not None and kid_for(leaf.public_key()).hex() == kid,  # type: ignore[arg-type]
                "fingerprint": fingerprint(leaf),
            }
            if days_left < 0:
                problems.append("certificate has expired: rotate the key (`device rotate`) and get a new one")
            elif days_left < 30:
                problems.append(f"certificate expires in {days_left:.0f} days: run `device rotate`")
            if kid is not None and not result["cert"]["matches_key"]:
                problems.append("installed certificate does not match the device key")
        except InvalidInput as e:
            problems.append(str(e))
    else:
        problems.append(f"no certificate installed yet ({certp}): send {csr_path(state_dir)} to the fleet CA")
    cap = ca_path(state_dir)
    result["ca_fingerprint"] = None
    if cap.exists():
        try:
            result["ca_fingerprint"] = fingerprint(_load_anchors(cap)[0])
        except InvalidInput as e:
            problems.append(str(e))
    result["pending_key_uri"] = st.pending_key_uri
    if st.pending_key_uri:
        problems.append(f"rotation pending: install the certificate for {csr_path(state_dir, pending=True)}")
    cfg_path: Path = args.config or DEFAULT_AGENT_CONFIG
    agent = _check_agent(cfg_path, explicit=args.config is not None, st=st, state_dir=state_dir,
                         leaf=result["cert"], problems=problems)
    result["agent_config"] = agent
    result["problems"] = problems
    result["healthy"] = not problems
    out.say(f"device     {st.device_id} (fleet {st.fleet}, id from {st.id_source})")
    out.say(f"key        {st.key_uri} [{result['key_tier']}] {result['key']}" + (f", kid {kid}" if kid else ""))
    c = result["cert"]
    out.say(f"cert       {c['cn']} serial {c['serial']}, expires {c['not_after']} ({c['days_left']} days)"
            if c else "cert       none")
    out.say(f"fleet CA   {result['ca_fingerprint'] or 'not installed'}")
    out.say(f"agent cfg  {cfg_path}" + ("" if agent["readable"] else ": not readable"))
    for c in agent["checks"]:
        out.say(f"  {c['name']:<12} {c['detail']}")
    for p in problems:
        out.say(f"  ! {p}")
    if problems:
        out.exit_code = EXIT_FAIL
    return result


def _fingerprints(path: Path) -> list[str] | None:
    try:
        return [fingerprint(c) for c in load_certificates(path.read_bytes(), source=str(path))]
    except (OSError, InvalidInput):
        return None


def _first_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _check_agent(cfg_path: Path, *, explicit: bool, st: DeviceState, state_dir: Path, leaf: dict[str, Any] | None,
                 problems: list[str]) -> dict[str, Any]:
    """The agent-config part of ``device status``: one entry per check, problems appended."""
    agent: dict[str, Any] = {"config": str(cfg_path), "readable": False, "checks": []}
    try:
        with cfg_path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise NotFound(f"agent config {cfg_path} does not exist") from None
        problems.append(f"no agent config at {cfg_path}: the agent cannot start (give --config if it is elsewhere)")
        return agent
    except OSError as e:
        problems.append(f"agent config {cfg_path} cannot be read: {e.strerror}")
        return agent
    except tomllib.TOMLDecodeError as e:
        problems.append(f"agent config {cfg_path} is not valid TOML: {e}")
        return agent
    agent["readable"] = True
    cap = ca_path(state_dir)
    facts = DeviceFacts(st.device_id, st.key_uri, cert_path(state_dir),
                        leaf_fingerprint=leaf["fingerprint"] if leaf else None,
                        ca_fingerprints=frozenset(_fingerprints(cap) or []) if cap.exists() else frozenset())
    for c in check_agent_config(doc, cfg_path, facts, fingerprints=_fingerprints, read_line=_first_line):
        agent[c.name] = c.ok
        agent["checks"].append({"name": c.name, "ok": c.ok, "detail": c.detail})
        if c.problem:
            problems.append(c.problem)
    return agent


# --- rotate -----------------------------------------------------------------------------------------------


def cmd_rotate(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    state_dir: Path = args.state_dir
    st = DeviceState.load(state_dir)
    nxt = successor_key_uri(st.key_uri)
    if st.pending_key_uri or key_exists(nxt):
        raise CaStateError(f"a rotation is already pending ({nxt}); install its certificate with "
                           f"`device install-cert`, or remove the pending key to start over")
    if not key_exists(st.key_uri):
        raise KeyStoreError(f"the current key {st.key_uri} is missing; run `device init` on a fresh state dir")
    csr, kid, code = _make_key_and_csr(nxt, args.key_type, st.device_id, st.fleet)
    atomic_write(csr_path(state_dir, pending=True), csr)
    exported = None
    if args.export_dir:
        args.export_dir.mkdir(parents=True, exist_ok=True)
        exported = args.export_dir / f"{st.device_id}.csr"
        atomic_write(exported, csr)
    st.pending_key_uri = nxt
    st.save(state_dir)
    out.say(f"new key {nxt} (kid {kid}); the current key stays in use until its certificate is installed")
    out.say(f"CSR         {csr_path(state_dir, pending=True)}" + (f"  (copied to {exported})" if exported else ""))
    out.say(f"claim code  {code}")
    return {"device_id": st.device_id, "pending_key_uri": nxt, "kid": kid,
            "csr": str(csr_path(state_dir, pending=True)), "claim_code": code,
            "exported_csr": str(exported) if exported else None}


def add_device_commands(sub: _Sub, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", parents=parents, help="create the device key and CSR (first boot)")
    p.add_argument("--key", help="key URI: file:/path or pkcs11:token=...;object=... "
                   "(default file:<state-dir>/keys/device.key)")
    p.add_argument("--key-type", choices=("p256", "ed25519"), default="p256", help="file keys only (p256)")
    p.add_argument("--device-id", help="override the derived device id (also $EDGE_DEVICE_ID)")
    p.add_argument("--fleet", help="fleet name (default: read from the fleet CA certificate)")
    p.add_argument("--ca-cert", type=Path, help=f"fleet CA certificate (default {DEFAULT_CA_CERT})")
    p.add_argument("--export-dir", type=Path, help="also copy the CSR here as <device-id>.csr (collection)")
    p.add_argument("--sysroot", type=Path, default=Path("/"), help="root for board serial lookup (tests)")
    p.add_argument("--if-missing", action="store_true", help="exit 0 without changes if already initialised")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("install-cert", parents=parents, help="check and install the issued certificate")
    p.add_argument("cert", type=Path, help="certificate chain PEM from `ca sign` / `fleet sign`")
    p.add_argument("--ca-cert", type=Path, help="fleet CA certificate to check against")
    p.set_defaults(func=cmd_install_cert)

    p = sub.add_parser("status", parents=parents, help="key tier, certificate, expiry, CA, agent config")
    p.add_argument("--config", type=Path, help=f"agent config to check (default {DEFAULT_AGENT_CONFIG})")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("rotate", parents=parents, help="new key and CSR; the old key stays until install-cert")
    p.add_argument("--key-type", choices=("p256", "ed25519"), default="p256", help="file keys only (p256)")
    p.add_argument("--export-dir", type=Path, help="also copy the CSR here as <device-id>.csr")
    p.set_defaults(func=cmd_rotate)
