"""``edge-aggregator``: run a worker, verify one record, show stats, export records.

Exit codes: 0 success / valid, 1 invalid record or runtime failure, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import dataclasses
import json
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aggregator.audit.cli import add_parser as add_audit_parser
from aggregator.config import AggregatorConfig, load_config
from aggregator.errors import AggregatorError, ConfigError, Rejected, StoreNotFound
from aggregator.ledger.cli import add_parser as add_ledger_parser
from aggregator.service import AggregatorService
from aggregator.store import open_store
from aggregator.topics import TopicInfo, parse_topic
from aggregator.trust import TrustStore, load_certificates, load_crl, load_registry
from aggregator.verifier import Verifier, embedded_key, gap_info, skew_flags
from envelope import DEFAULT_LIMITS, EnvelopeError, Record, open_record
from provisioning.cliutil import run_main
from provisioning.sdnotify import Notifier

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# ---- run ---------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.client_id:
        from dataclasses import replace  # noqa: PLC0415

        cfg = replace(cfg, mqtt=replace(cfg.mqtt, client_id=args.client_id))
    logging.getLogger().setLevel(cfg.log_level.upper())
    service = AggregatorService(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    notifier = Notifier()
    service.start()
    notifier.ready("verifying and storing")
    watchdog_s = (notifier.watchdog_s or 0.0) / 2  # ping at half the timeout
    interval = watchdog_s if watchdog_s > 0 else 5.0
    try:
        while not stop.wait(interval):
            if not service.alive:
                log.error("store thread is not running; exiting so the service manager restarts us")
                return 1
            if watchdog_s > 0 and time.monotonic() - service.heartbeat < 2 * watchdog_s:
                notifier.watchdog()
            s = service.stats()
            log.info("received %d verified %d stored %d duplicates %d rejected %d queue %d", s.received,
                     s.verified, s.stored, s.duplicates, s.rejected_total, s.queue_depth)
    finally:
        notifier.stopping()
        service.stop()
        notifier.close()
    return 0


# ---- verify ------------------------------------------------------------------------------------------


def _read_record(source: str) -> bytes:
    data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    if data[:1] == b"\xd2":
        return data
    text = data.strip()
    if re.fullmatch(rb"[0-9a-fA-F\s]+", text):
        return binascii.unhexlify(re.sub(rb"\s", b"", text))
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return data


def _record_json(record: Record) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": record.kind, "device_id": record.device_id, "stream": record.stream, "seq": record.seq,
        "epoch": record.epoch, "iat": record.iat, "capture_ms": record.capture_ms,
        "clock_state": record.clock_state, "alg": record.alg, "kid": record.kid.hex(),
        "model_sha256": record.model_sha256.hex() if record.model_sha256 else None,
        "input_sha256": record.input_sha256.hex() if record.input_sha256 else None,
        "x5chain_certs": len(record.x5chain),
    }
    try:
        out["payload"] = _jsonable(record.payload())
    except EnvelopeError:
        out["payload_hex"] = record.payload_bytes.hex()
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        data = _read_record(args.file)
    except OSError as e:
        print(f"edge-aggregator verify: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    now = datetime.now(timezone.utc)
    result: dict[str, Any] = {"valid": False}
    try:
        cas = [c for f in args.trust for c in load_certificates(f)]
        trust = TrustStore(cas, [load_crl(f) for f in args.crl])
        for f in args.registry:
            for key in load_registry(f):
                trust.add(key)
        try:
            limits = dataclasses.replace(DEFAULT_LIMITS, max_record_bytes=args.max_bytes)
            record = open_record(data, limits=limits)
        except EnvelopeError as e:
            raise Rejected(e.reason, str(e)) from e
        result["record"] = _record_json(record)
        if args.topic:
            info = parse_topic(args.topic, args.prefix)
        else:
            kind = record.kind
            info = TopicInfo(record.device_id, kind, record.stream)
        received_ms = int(now.timestamp() * 1000)
        if not cas and not args.registry:
            # No trust anchor: check the signature against the record's own certificate, and say so.
            trust.add(embedded_key(record))
            rec = dataclasses.replace(record, x5chain=())
            vr = Verifier(trust, args.prefix, limits).verify_record(rec, info, received_ms)
            result["trusted"] = False
        else:
            vr = Verifier(trust, args.prefix, limits).verify_record(record, info, received_ms)
            result["trusted"] = True
        if record.kind == "gap":
            gap_info(record.payload(), record.seq, record.device_id)
        result["valid"] = True
        result["key_source"] = vr.key.source
        result["skew_flags"] = skew_flags(record, received_ms, 300_000)
    except Rejected as e:
        result["reason"] = e.reason
        result["error"] = str(e)
    except AggregatorError as e:
        print(f"edge-aggregator verify: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=None if args.compact else 2, sort_keys=True))
    return 0 if result["valid"] else 1


# ---- stats / export ----------------------------------------------------------------------------------


def _store_from(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.store:
        return args.store, args.schema
    if not args.config:
        raise ConfigError("<command line>", [("--config", "give --config FILE or --store URL")])
    cfg: AggregatorConfig = load_config(args.config)
    return cfg.store.url, args.schema or cfg.store.schema


def _ms(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_stats(args: argparse.Namespace) -> int:
    url, schema = _store_from(args)
    store = open_store(url, schema=schema, create=False)
    try:
        devices = store.device_stats()
    finally:
        store.close()
    if args.json:
        print(json.dumps(devices, indent=2, sort_keys=True, default=_jsonable))
        return 0
    print(f"{'device':<24} {'last seq':>10} {'settled':>10} {'stored':>9} {'dups':>7} {'equivoc':>7} "
          f"{'missing':>8} {'policy gaps':>11} {'online':>6} {'skew':>7} {'unsynced':>8}  {'last seen':<20} rejects")
    for d in devices:
        rejects = ", ".join(f"{k}={v}" for k, v in sorted(d.get("rejects", {}).items())) or "-"
        if d.get("unknown_device"):
            print(f"{d['device_id'] or '(no device)':<24} {'':>10} {'':>10} {'':>9} {'':>7} {'':>7} {'':>8} "
                  f"{'':>11} {'':>6} {'':>7} {'':>8}  {'':<20} {rejects}")
            continue
        online = {1: "yes", 0: "no"}.get(d["online"], "-")
        print(f"{d['device_id']:<24} {d['max_seq']:>10} {d['contiguous_seq']:>10} {d['stored']:>9} "
              f"{d['duplicates']:>7} {d.get('equivocations', 0):>7} {d['missing']:>8} {d['policy_gap_seqs']:>11} "
              f"{online:>6} {d['skew_flagged']:>7} {d['clock_states']['unsynced']:>8}  "
              f"{_ms(d['last_seen_ms']):<20} {rejects}")
    return 0


_REL = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str | None, now: datetime | None = None) -> int:
    """``--since``: ISO-8601 time, ``@<unix seconds>``, or a duration back from now (``90s``, ``15m``, ``2h``,
    ``7d``); returns milliseconds since the Unix epoch."""
    if not text:
        return 0
    now = now or datetime.now(timezone.utc)
    m = _REL.match(text)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return int((now - timedelta(**{unit: int(m.group(1))})).timestamp() * 1000)
    if text.startswith("@"):
        return int(float(text[1:]) * 1000)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ConfigError("<command line>", [("--since", f"expected ISO-8601, @unix-seconds or a duration like "
                                              f"15m, got {text!r}")]) from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


_EXPORT_FIELDS = ["device_id", "seq", "epoch", "kind", "stream", "iat", "capture_ms", "clock_state", "skew_flags",
                  "received_ms", "kid", "model_sha256", "input_sha256", "payload"]


def _export_row(row: dict[str, Any], with_record: bool) -> dict[str, Any]:
    out = {k: _jsonable(v) for k, v in row.items() if k != "record"}
    try:
        out["payload"] = _jsonable(open_record(row["record"], max_bytes=len(row["record"])).payload())
    except EnvelopeError as e:  # stored before the payload profile was enforced: say why
        out["payload"] = None
        out["payload_error"] = f"{e.reason}: {e}"
    if with_record:
        out["record_b64"] = base64.b64encode(row["record"]).decode()
    return out


def cmd_export(args: argparse.Namespace) -> int:
    since = parse_since(args.since)
    url, schema = _store_from(args)
    store = open_store(url, schema=schema, create=False)
    out = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    n = 0
    rows = store.export(since, args.device, args.kind)
    try:
        if args.format == "jsonl":
            for row in rows:
                out.write(json.dumps(_export_row(row, not args.no_record), sort_keys=True) + "\n")
                n += 1
        else:
            writer = csv.DictWriter(out, fieldnames=_EXPORT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                r = _export_row(row, False)
                r["payload"] = json.dumps(r["payload"], sort_keys=True)
                writer.writerow(r)
                n += 1
    finally:
        rows.close()  # before the store: the export cursor ends its read first
        store.close()
        if out is not sys.stdout:
            out.close()
    print(f"exported {n} record(s)", file=sys.stderr)
    return 0


# ---- check-config ------------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config without starting anything: exit 0 valid, 2 with every problem (file: key: message)."""
    cfg = load_config(args.config)  # ConfigError -> main: exit 2
    if not args.offline:
        from aggregator.config_files import check_files  # noqa: PLC0415

        problems = check_files(cfg)
        if problems:
            print(f"edge-aggregator: invalid configuration:\n{ConfigError(str(args.config), problems)}\n"
                  "(checking the file alone, not the files it names on this machine? add --offline)",
                  file=sys.stderr)
            return 2
    mode = "schema only (--offline)" if args.offline else "files checked"
    print(f"{args.config}: valid ({mode}; store {cfg.store.url.rsplit('@', 1)[-1]}, broker {cfg.mqtt.url}, "
          f"{len(cfg.trust.ca_files)} CA file(s), receipts {'signed' if cfg.identity.key else 'OFF'})")
    return 0


# ---- entry -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-aggregator", description="Verify, store and acknowledge signed "
                                "records from depin-edge agents.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one aggregator worker until SIGTERM")
    run.add_argument("--config", required=True, help="TOML config file (see examples/aggregator.toml)")
    run.add_argument("--client-id", help="override mqtt.client_id (one per worker)")
    run.set_defaults(func=cmd_run)
    chk = sub.add_parser("check-config", help="validate a config file without starting anything (exit 2 if invalid)")
    chk.add_argument("config", help="aggregator TOML config")
    chk.add_argument("--offline", action="store_true", help="check only the file (schema, values), not the files "
                     "it names: for a config written on another machine, or the shipped example")
    chk.set_defaults(func=cmd_check_config)
    ver = sub.add_parser("verify", help="verify one record (raw, hex or base64) and print it as JSON")
    ver.add_argument("file", help="record file, or - for stdin")
    ver.add_argument("--trust", action="append", default=[], help="fleet CA certificate PEM (repeatable)")
    ver.add_argument("--crl", action="append", default=[], help="CRL file (repeatable)")
    ver.add_argument("--registry", action="append", default=[], help="device registry JSON (repeatable)")
    ver.add_argument("--topic", help="the topic the record arrived on (checked against the header)")
    ver.add_argument("--prefix", default="edge/v1", help="topic prefix (default edge/v1)")
    ver.add_argument("--max-bytes", type=int, default=DEFAULT_LIMITS.max_record_bytes,
                     help=f"size limit (default {DEFAULT_LIMITS.max_record_bytes}, as every aggregator and agent)")
    ver.add_argument("--compact", action="store_true", help="one-line JSON")
    ver.set_defaults(func=cmd_verify)
    for name, helptext in (("stats", "per device: last seq, gaps, rejects by reason, last seen"),
                           ("export", "export stored records as JSON lines or CSV")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--config", help="aggregator config (for its store)")
        sp.add_argument("--store", help="store URL or SQLite path (instead of --config)")
        sp.add_argument("--schema", help="PostgreSQL schema")
        if name == "stats":
            sp.add_argument("--json", action="store_true", help="print JSON")
            sp.set_defaults(func=cmd_stats)
        else:
            sp.add_argument("--since", help="ISO-8601 time, @unix-seconds or a duration (15m, 2h, 7d)")
            sp.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                            help="JSON lines (default) or CSV")
            sp.add_argument("--device", help="only this device")
            sp.add_argument("--kind", choices=("result", "reading", "telemetry", "status", "gap"),
                            help="only records of this kind")
            sp.add_argument("--output", "-o", help="write here instead of stdout")
            sp.add_argument("--no-record", action="store_true", help="jsonl: omit the verbatim record (base64)")
            sp.set_defaults(func=cmd_export)
    add_ledger_parser(sub)
    add_audit_parser(sub)
    from aggregator.model_registry import add_models_parser  # noqa: PLC0415 - tuf loads only for `models`

    add_models_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-aggregator`` (141, quietly, when stdout's reader went away)."""
    return run_main(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StoreNotFound as e:
        print(f"edge-aggregator {args.command}: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"edge-aggregator: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    except AggregatorError as e:
        print(f"edge-aggregator {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
