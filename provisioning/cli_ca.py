"""Operator commands of ``edge-provision``: ``ca ...``, ``fleet ...`` and ``broker-config``."""

from __future__ import annotations

import argparse
import json
import pwd
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from envelope import kid_for
from provisioning import broker, certs
from provisioning.ca import CRL_WARN_DAYS, FleetCa, issue_decision
from provisioning.cli import EXIT_REJECTS, Output
from provisioning.csr import load_csr
from provisioning.errors import InvalidInput
from provisioning.file_key import write_private_key
from provisioning.fsutil import atomic_write
from provisioning.progress import ProgressBar
from provisioning.registry import registry_json
from provisioning.verify import load_crl

_Sub = Any  # argparse's private _SubParsersAction


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {what} {path}: {e.strerror}") from e


def _crl_status(crl: x509.CertificateRevocationList, now: datetime, out: Output) -> dict[str, Any]:
    nxt = crl.next_update_utc
    days_left = (nxt - now).total_seconds() / 86400 if nxt else None
    if nxt is not None and nxt < now:
        out.warn(f"the CRL expired at {nxt.isoformat()}: Mosquitto refuses every client until a new CRL is "
                 "installed; run `edge-provision ca crl` now")
    elif days_left is not None and days_left < CRL_WARN_DAYS:
        out.warn(f"the CRL's next update is in {days_left:.1f} days ({nxt.isoformat() if nxt else ''}); "
                 "an expired CRL makes Mosquitto refuse every client: re-issue with `edge-provision ca crl`")
    return {
        "next_update": nxt.isoformat() if nxt else None,
        "days_left": round(days_left, 2) if days_left is not None else None,
        "crl_entries": len(list(crl)),
    }


# --- ca ------------------------------------------------------------------------------------------------


def cmd_ca_init(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    now = _now()
    with FleetCa.init(args.ca_dir, args.fleet, now=now, intermediate=args.intermediate, root_days=args.days,
                      default_days=args.cert_days, crl_days=args.crl_days) as ca:
        atomic_write(args.ca_dir / "ca-bundle.pem", ca.ca_bundle)
        result = {
            "fleet": ca.fleet,
            "ca_dir": str(args.ca_dir),
            "root_cert": str(args.ca_dir / "root.crt"),
            "ca_bundle": str(args.ca_dir / "ca-bundle.pem"),
            "ca_fingerprint": ca.fingerprint,
            "intermediate": ca.settings.intermediate,
            "crl": str(args.ca_dir / "crl.pem"),
        }
    out.say(f"fleet CA for {result['fleet']!r} created in {args.ca_dir}")
    out.say(f"  root certificate  {result['root_cert']}  ({result['ca_fingerprint']})")
    if args.intermediate:
        out.say(f"  issuing CA        {args.ca_dir / 'issuing.crt'}")
    out.say(f"  CRL               {result['crl']}")
    out.say("Put root.crt in the device image as /etc/edge-agent/fleet-ca.pem; keep this directory offline.")
    return result


def _default_cert_out(csr_file: Path) -> Path:
    return csr_file.with_suffix(".crt") if csr_file.suffix == ".csr" else csr_file.with_name(csr_file.name + ".crt")


def cmd_ca_sign(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    csr = load_csr(_read_input(args.csr, "CSR file"), source=str(args.csr))
    target: Path = args.out or _default_cert_out(args.csr)
    if not target.parent.is_dir():
        raise InvalidInput(f"output directory {target.parent} does not exist")
    now = _now()
    with FleetCa.open(args.ca_dir) as ca:
        identity, key = ca.check_request(csr, role=args.role, source=str(args.csr))
        decision = issue_decision(ca.index, identity, kid_for(key).hex(), args.role, now, reissue=args.reissue)
        if decision.action == "refuse":
            raise decision.refusal(str(args.csr), identity)
        if decision.action == "existing":
            row = next(r for r in reversed(decision.previous) if r.kid == kid_for(key).hex())
            cert = ca.issued_cert(row.serial)
        else:
            row, cert = ca.issue(identity, key, now=now, days=args.days, role=args.role)
            ca.save()
        atomic_write(target, ca.chain_pem(cert))
    previous = [format(r.serial, "x") for r in decision.previous if r.serial != row.serial]
    if decision.action == "existing":
        out.say(f"{identity} already holds a valid {args.role} certificate for this key: serial {row.serial:x}, "
                f"valid until {row.not_after}; nothing issued (--reissue for a new one)")
    else:
        out.say(f"issued {args.role} certificate for {identity}: serial {row.serial:x}, valid until {row.not_after}")
    if previous:
        out.warn(f"{identity} also holds valid certificate(s) {', '.join(previous)}: revoke them "
                 f"(`edge-provision ca revoke SERIAL`) once the device uses the new one")
    out.say(f"  claim code {row.claim_code} (must match the code `device init` showed on the device)")
    out.say(f"  written to {target}")
    return {"device_id": identity, "role": args.role, "serial": format(row.serial, "x"), "kid": row.kid,
            "claim_code": row.claim_code, "not_after": row.not_after, "cert": str(target),
            "issued": decision.action == "issue", "previous_serials": previous}


def cmd_ca_revoke(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    now = _now()
    with FleetCa.open(args.ca_dir) as ca:
        rows = ca.find(args.target)  # validates before anything is written
        rows = ca.revoke(args.target, now=now)
        crl = ca.write_crl(now=now, days=args.crl_days)
        status = _crl_status(crl, now, out)
    for r in rows:
        out.say(f"revoked {r.identity} serial {r.serial:x}")
    out.say(f"CRL written to {args.ca_dir / 'crl.pem'} ({status['crl_entries']} revoked); copy it to every broker "
            "(then SIGHUP mosquitto) and aggregator")
    return {"revoked": [{"device_id": r.identity, "serial": format(r.serial, "x")} for r in rows],
            "crl": str(args.ca_dir / "crl.pem"), **status}


def cmd_ca_crl(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    now = _now()
    path = args.ca_dir / "crl.pem"
    if args.check:
        if not (args.ca_dir / "fleet.json").is_file():
            raise InvalidInput(f"{args.ca_dir} holds no fleet CA")
        status = _crl_status(load_crl(path), now, out)
        out.say(f"CRL {path}: next update {status['next_update']} ({status['days_left']} days), "
                f"{status['crl_entries']} revoked")
        return {"crl": str(path), "written": False, **status}
    with FleetCa.open(args.ca_dir) as ca:
        crl = ca.write_crl(now=now, days=args.days)
    status = _crl_status(crl, now, out)
    out.say(f"CRL written to {path}: next update {status['next_update']}, {status['crl_entries']} revoked")
    return {"crl": str(path), "written": True, **status}


def add_ca_commands(sub: _Sub, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", parents=parents, help="create the fleet CA (P-256 root, optional intermediate)")
    p.add_argument("--fleet", required=True, help="fleet trust-domain name, e.g. acme-sensors.example")
    p.add_argument("--intermediate", action="store_true", help="issue devices from an intermediate CA")
    p.add_argument("--days", type=int, default=3650, help="root validity in days (default 3650)")
    p.add_argument("--cert-days", type=int, default=365, help="default device certificate validity (365)")
    p.add_argument("--crl-days", type=int, default=30, help="default CRL lifetime in days (30)")
    p.set_defaults(func=cmd_ca_init)

    p = sub.add_parser("sign", parents=parents, help="check a CSR and issue its certificate")
    p.add_argument("csr", type=Path, help="CSR file (PEM or DER)")
    p.add_argument("--out", type=Path, help="certificate chain output (default: CSR path with .crt)")
    p.add_argument("--days", type=int, help="validity in days (default: the CA's --cert-days)")
    p.add_argument("--role", choices=("device", "aggregator"), default="device",
                   help="what the certificate is for: a device (signs records) or an aggregator (signs receipts "
                   "and may write ack topics); must match the CSR's SAN spiffe://<fleet>/<role>/<id> "
                   "(default device)")
    p.add_argument("--reissue", action="store_true", help="issue even if the identity already holds a valid "
                   "certificate for another key (key rotation: sign device.next.csr)")
    p.set_defaults(func=cmd_ca_sign)

    p = sub.add_parser("revoke", parents=parents, help="revoke a device's certificates (or one serial)")
    p.add_argument("target", metavar="DEVICE|SERIAL", help="device id (all its active certs) or hex serial")
    p.add_argument("--crl-days", type=int, help="lifetime of the new CRL (default: the CA's)")
    p.set_defaults(func=cmd_ca_revoke)

    p = sub.add_parser("crl", parents=parents, help="issue a fresh CRL (or --check the current one)")
    p.add_argument("--days", type=int, help="days until next update (default: the CA's --crl-days)")
    p.add_argument("--check", action="store_true", help="only report the current CRL's next update")
    p.set_defaults(func=cmd_ca_crl)


# --- fleet --------------------------------------------------------------------------------------------


def _already_signed(target: Path, key_kid: str, ca: FleetCa) -> bool:
    if not target.exists():
        return False
    try:
        leaf = x509.load_pem_x509_certificates(target.read_bytes())[0]
    except (OSError, ValueError):
        return False
    pub = leaf.public_key()
    if not isinstance(pub, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        return False
    return leaf.issuer == ca.issuing.cert.subject and kid_for(pub).hex() == key_kid


def cmd_fleet_sign(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    src: Path = args.dir
    if not src.is_dir():
        raise InvalidInput(f"{src} is not a directory of CSRs")
    files = sorted(p for p in src.iterdir() if p.suffix == ".csr" and p.is_file())
    if not files:
        raise InvalidInput(f"no *.csr files in {src}")
    dest: Path = args.out or src
    dest.mkdir(parents=True, exist_ok=True)
    now = _now()
    signed: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    reissued: list[dict[str, Any]] = []  # also in signed: devices that already held a valid certificate
    rejects: list[dict[str, Any]] = []
    batch_ids: dict[str, str] = {}
    bar = ProgressBar(len(files), "signing", enabled=not args.no_progress)
    with FleetCa.open(args.ca_dir) as ca:
        for f in files:
            try:
                csr = load_csr(f.read_bytes(), source=f.name)
                identity, key = ca.check_request(csr, source=f.name)
                if identity in batch_ids:
                    raise InvalidInput(f"{f.name}: device {identity!r} also requested by {batch_ids[identity]}",
                                       reason="duplicate_id")
                batch_ids[identity] = f.name
                target = dest / f"{identity}.crt"
                kid = kid_for(key).hex()
                decision = issue_decision(ca.index, identity, kid, "device", now, reissue=args.reissue)
                if decision.action == "refuse":
                    raise decision.refusal(f.name, identity)
                if decision.action == "existing":  # a re-run: hand out the certificate it already has
                    row = next(r for r in reversed(decision.previous) if r.kid == kid)
                    if not _already_signed(target, kid, ca):
                        atomic_write(target, ca.chain_pem(ca.issued_cert(row.serial)))
                    skipped.append({"file": f.name, "device_id": identity, "serial": format(row.serial, "x"),
                                    "cert": str(target)})
                    bar.advance()
                    continue
                row, cert = ca.issue(identity, key, now=now, days=args.days)
                atomic_write(target, ca.chain_pem(cert))
                entry: dict[str, Any] = {"file": f.name, "device_id": identity, "serial": format(row.serial, "x"),
                                         "kid": row.kid, "claim_code": row.claim_code, "cert": str(target)}
                if decision.previous:
                    entry["previous_serials"] = [format(r.serial, "x") for r in decision.previous]
                    reissued.append(entry)
                signed.append(entry)
                bar.advance()
            except InvalidInput as e:
                rejects.append({"file": f.name, "reason": e.reason, "error": str(e)})
                bar.advance(rejected=True)
        ca.save()
        bar.finish()
        registry_path = None
        if args.registry:
            atomic_write(args.registry, registry_json(ca.registry(now=now)).encode())
            registry_path = str(args.registry)
    report = {"signed": signed, "skipped": skipped, "reissued": reissued, "rejected": rejects, "out": str(dest),
              "registry": registry_path}
    report_path = dest / "fleet-sign-report.json"
    atomic_write(report_path, (json.dumps(report, indent=2) + "\n").encode())
    out.say(f"signed {len(signed)}, already signed {len(skipped)}, rejected {len(rejects)} of {len(files)} CSRs; "
            f"certificates in {dest}")
    for r in reissued:
        out.say(f"  REISSUED {r['file']}: {r['device_id']} now holds serial {r['serial']} besides "
                f"{', '.join(r['previous_serials'])}: revoke the old one once the device uses the new key")
    for r in rejects:
        out.say(f"  REJECTED {r['file']}: [{r['reason']}] {r['error']}")
    if any(r["reason"] == "already_certified" for r in rejects):
        out.say("  (already_certified: those devices hold a valid certificate for another key; "
                "re-run with --reissue to issue a second one)")
    out.say(f"report: {report_path}")
    if rejects:
        out.exit_code = EXIT_REJECTS
    return {**report, "report": str(report_path), "total": len(files)}


def cmd_fleet_export(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    now = _now()
    target: Path = args.out or (args.ca_dir / "registry.json")
    with FleetCa.open(args.ca_dir) as ca:
        reg = ca.registry(now=now)
        atomic_write(target, registry_json(reg).encode())
    active = sum(1 for e in reg.entries if e.status == "active")
    out.say(f"registry of fleet {reg.fleet!r} written to {target}: {len(reg.entries)} certificates "
            f"({active} active, {len(reg.entries) - active} revoked)")
    return {"registry": str(target), "fleet": reg.fleet, "ca_fingerprint": reg.ca_fingerprint,
            "entries": len(reg.entries), "active": active}


def add_fleet_commands(sub: _Sub, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sign", parents=parents, help="sign every *.csr in a directory")
    p.add_argument("dir", type=Path, help="directory of CSRs collected from devices")
    p.add_argument("--out", type=Path, help="where <device-id>.crt files go (default: the CSR directory)")
    p.add_argument("--days", type=int, help="validity in days (default: the CA's)")
    p.add_argument("--registry", type=Path, help="also export the registry to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--reissue", action="store_true", help="issue a certificate even to a device that already "
                   "holds a valid one for another key (rotation); reported as reissued")
    p.set_defaults(func=cmd_fleet_sign)

    p = sub.add_parser("export-registry", parents=parents, help="write the aggregators' device registry (JSON)")
    p.add_argument("--out", type=Path, help="output file (default <ca-dir>/registry.json)")
    p.set_defaults(func=cmd_fleet_export)


# --- broker-config ---------------------------------------------------------------------------------------


def _server_cert_ok(cert_file: Path, ca: FleetCa, hostnames: list[str], now: datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    names = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    names |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return (cert.issuer == ca.issuing.cert.subject and set(hostnames) <= names
            and cert.not_valid_after_utc - now > timedelta(days=30))


def cmd_broker_config(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    prefix = broker.validate_prefix(args.prefix)
    hostnames: list[str] = args.hostname or ["localhost", "127.0.0.1"]
    owner = None
    if args.owner:
        try:
            owner = pwd.getpwnam(args.owner)
        except KeyError:
            raise InvalidInput(f"--owner: no user named {args.owner!r} on this host") from None
    dest: Path = args.out
    install = Path(args.install_dir) if args.install_dir else dest.resolve()
    now = _now()
    with FleetCa.open(args.ca_dir) as ca:
        aggregators = sorted({r.identity for r in ca.index if r.role == "aggregator" and r.status == "active"}
                             | set(args.aggregator or []))
        known = {r.identity for r in ca.index if r.role == "aggregator"}
        unknown = [a for a in (args.aggregator or []) if a not in known]
        acl = broker.render_acl(prefix, aggregators)
        paths = broker.BrokerPaths(
            cafile=str(install / "ca.pem"), certfile=str(install / "server.crt"),
            keyfile=str(install / "server.key"), crlfile=str(install / "crl.pem"),
            acl_file=str(install / "edge.acl"),
        )
        conf = broker.render_listener(paths, port=args.port, bind=args.bind, fleet=ca.fleet,
                                      ca_fingerprint=ca.fingerprint, lock_client_id=not args.no_client_id_lock)
        crl = load_crl(args.ca_dir / "crl.pem")
        crl_state = _crl_status(crl, now, out)
        dest.mkdir(parents=True, exist_ok=True)
        key_file, cert_file = dest / "server.key", dest / "server.crt"
        if not (key_file.exists() and _server_cert_ok(cert_file, ca, hostnames, now)):
            key = ec.generate_private_key(ec.SECP256R1())
            server = certs.issue_server(ca.issuing, hostnames=hostnames, public_key=key.public_key(), now=now,
                                        days=args.server_days)
            write_private_key(key_file, key, overwrite=True)
            atomic_write(cert_file, certs.pem(server, *ca.intermediates))
        atomic_write(dest / "ca.pem", ca.ca_bundle)
        atomic_write(dest / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
        atomic_write(dest / "edge.acl", acl.encode())
        atomic_write(dest / "edge-mtls.conf", conf.encode())
        fleet = ca.fleet
    if owner is not None:
        for f in (key_file, cert_file, dest / "ca.pem", dest / "crl.pem", dest / "edge.acl", dest / "edge-mtls.conf"):
            shutil.chown(f, owner.pw_uid, owner.pw_gid)
    for a in unknown:
        out.warn(f"aggregator {a!r} has no certificate from this CA yet (issue one with `ca sign --role aggregator`)")
    out.say(f"Mosquitto config for fleet {fleet!r} written to {dest}:")
    out.say(f"  edge-mtls.conf  listener {args.port} (include it from mosquitto.conf, or copy it into conf.d/)")
    out.say(f"  edge.acl        devices: {prefix}/<id>/<record topics> write, {prefix}/<id>/ack read; "
            f"ack writers (aggregators): {', '.join(aggregators) or 'none'}")
    out.say("  ca.pem crl.pem server.crt server.key  (must be readable by the mosquitto user)")
    return {"out": str(dest), "config": str(dest / "edge-mtls.conf"), "acl": str(dest / "edge.acl"),
            "aggregators": aggregators, "port": args.port, "crl": crl_state, "unknown_aggregators": unknown}


def add_broker_command(top: _Sub, parents: list[argparse.ArgumentParser]) -> None:
    p = top.add_parser("broker-config", parents=parents,
                       help="write a Mosquitto mTLS listener fragment, ACL, server certificate and CRL")
    p.add_argument("--out", type=Path, required=True, help="directory to write the broker files into")
    p.add_argument("--install-dir", help="where the files will live on the broker (default: --out, absolute)")
    p.add_argument("--hostname", action="append", help="broker DNS name or IP for its certificate (repeatable; "
                   "default localhost and 127.0.0.1)")
    p.add_argument("--port", type=int, default=8883, help="TLS listener port (default 8883)")
    p.add_argument("--bind", help="listen address (default: all)")
    p.add_argument("--prefix", default="edge/v1", help="topic prefix (default edge/v1)")
    p.add_argument("--aggregator", action="append",
                   help="extra aggregator identity (CN); certificates issued with --role aggregator are included")
    p.add_argument("--owner", help="chown the files to this user (e.g. mosquitto, which mosquitto drops to)")
    p.add_argument("--server-days", type=int, default=825, help="server certificate validity (825)")
    p.add_argument("--no-client-id-lock", action="store_true",
                   help="do not force the MQTT client id to equal the certificate CN")
    p.set_defaults(func=cmd_broker_config)
