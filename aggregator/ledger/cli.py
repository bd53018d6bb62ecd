"""``edge-aggregator ledger``: compute, sign and write one period's contribution ledger from the store.

The figures come from log entries only (``LedgerBuilder``): the entries up to the latest signed checkpoint,
checked against its root before anything is signed, and the note names that size and root. A store without a
checkpoint (the log not enabled) gives the stored records in commit order and a note saying ``log <n> -``: not
bound to a log, so not auditable. The note is signed with the log's Ed25519 key (``[log] key_file`` and
``origin``, or ``--log-key`` and ``--origin``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from typing import Any

from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.ledger.errors import LedgerError
from aggregator.ledger.params import DEFAULT_UPTIME_CREDIT_S, LedgerParams
from aggregator.ledger.period import Period
from aggregator.store import Store, open_store

log = logging.getLogger(__name__)


LOG_CHUNK = 10_000


def store_entries(store: Store) -> Iterator[tuple[int, bytes]]:
    """The stored records as log entries, in commit order (a store without the log: not auditable)."""
    for index, row in enumerate(store.export(0)):
        yield index, bytes(row["record"])


def log_entries(store: Store, size: int) -> Iterator[tuple[int, bytes]]:
    """Log entries ``[0, size)`` from the store; a missing row is an error (the store lost a record)."""
    for start in range(0, size, LOG_CHUNK):
        rows = store.log_entries(start, min(size, start + LOG_CHUNK))
        for want, e in enumerate(rows, start):
            if e.index != want:
                raise LedgerError(f"{store.where}: log entry {want} is missing from the store")
            yield e.index, e.record
        if len(rows) != min(size, start + LOG_CHUNK) - start:
            raise LedgerError(f"{store.where}: log entries after {start + len(rows) - 1} are missing from the store")


def add_parser(sub: Any) -> None:
    """Register ``ledger`` on the ``edge-aggregator`` subcommand parser."""
    p = sub.add_parser("ledger", help="write a period's contribution ledger (JSON with proofs, OpenZeppelin "
                                      "StandardMerkleTree dump, signed note)")
    p.add_argument("--period", required=True, help="YYYY-MM-DD (a UTC day), YYYY-MM, or <ISO start>/<ISO end>")
    p.add_argument("--out", default=".", help="folder for ledger-<period>.json, .oz.json and .note (default .)")
    p.add_argument("--config", help="aggregator config (its store and [log] key_file and origin)")
    p.add_argument("--store", help="store URL or SQLite path (instead of the config's)")
    p.add_argument("--schema", help="PostgreSQL schema")
    p.add_argument("--log-key", help="the log's Ed25519 key file (default: the config's log.key_file)")
    p.add_argument("--origin", help="the log's origin, the note key name (default: the config's log.origin)")
    p.add_argument("--uptime-credit-s", type=int, default=DEFAULT_UPTIME_CREDIT_S,
                   help=f"seconds of uptime each record credits (default {DEFAULT_UPTIME_CREDIT_S})")
    p.set_defaults(func=cmd_ledger)


def cmd_ledger(args: argparse.Namespace) -> int:
    # numpy, eth-abi and eth-hash load here, not when the parser is built for every other command
    from aggregator.audit.tree import StreamingTree, leaf_hash  # noqa: PLC0415
    from aggregator.ledger.compute import LedgerBuilder  # noqa: PLC0415
    from aggregator.ledger.export import LogBinding, ledger_root  # noqa: PLC0415
    from aggregator.ledger.files import write_ledger  # noqa: PLC0415
    from aggregator.tlog import load_log_signer  # noqa: PLC0415
    from envelope.note import sign_note  # noqa: PLC0415

    try:
        period = Period.parse(args.period)
        params = LedgerParams(args.uptime_credit_s)
    except LedgerError as e:
        raise ConfigError("<command line>", [("--period / --uptime-credit-s", str(e))]) from e
    cfg = load_config(args.config) if args.config else None
    if not args.store and cfg is None:
        raise ConfigError("<command line>", [("--config", "give --config FILE or --store URL")])
    url = args.store or (cfg.store.url if cfg else "")
    schema = args.schema or (cfg.store.schema if cfg and not args.store else None)
    key_file = args.log_key or (cfg.log.key_file if cfg else None)
    origin = args.origin or (cfg.log.origin if cfg else "")
    if not key_file or not origin:
        raise ConfigError(args.config or "<command line>", [("log.key_file / log.origin", "the ledger is signed "
                          "with the log's key: set [log] key_file and origin, or give --log-key and --origin")])
    signer = load_log_signer(key_file, origin)
    store = open_store(url, schema=schema)
    try:
        checkpoint = store.log_latest_checkpoint()
        builder = LedgerBuilder(params)
        if checkpoint is None:
            log.warning("%s has no signed checkpoint: the ledger is computed from the stored records in commit "
                        "order and is not bound to a log (audit reports it as ledger_unbound)", store.where)
            builder.add_all(store_entries(store))
            binding = LogBinding(origin, builder.size, None)
        else:
            tree = StreamingTree()
            for index, data in log_entries(store, checkpoint.size):
                tree.append(leaf_hash(data))
                builder.add(index, data)
            if tree.root() != checkpoint.root:
                raise LedgerError(f"{store.where}: the stored log entries do not hash to the root of the latest "
                                  f"checkpoint (size {checkpoint.size}): the store was changed")
            binding = LogBinding(origin, checkpoint.size, checkpoint.root)
    finally:
        store.close()
    ledger = builder.ledger(period)
    files = write_ledger(args.out, ledger, binding, lambda text: sign_note(text, [signer]).decode())
    for a in builder.anomalies + builder.duplicates():
        log.warning("log entry %d: %s: %s", a.index, a.kind, a.detail)
    print(json.dumps({"period": period.label, "entries": len(ledger.entries), "log_size": builder.size,
                      "bound": binding.root is not None, "root": "0x" + ledger_root(ledger).hex(),
                      "json": str(files.document), "note": str(files.note),
                      "dump": str(files.dump) if files.dump else None}, indent=2))
    return 0
