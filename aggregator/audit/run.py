"""The audit's I/O shell: fetch the checkpoint, tiles and entries over HTTP, keep the state file, load ledgers.

Reads any C2SP tlog-tiles server (``<url>/checkpoint``, ``<url>/tile/...``) with one keep-alive connection
(stdlib ``http.client``: an auditor installs nothing beyond the project), a size limit per resource and a
timeout per request. A partial tile that is gone (the log grew since) is read from the full tile, as the
spec allows. The state file keeps every checkpoint the log ever showed this auditor (signed, so they are
evidence); it is replaced atomically.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import http.client
import json
import logging
import multiprocessing
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aggregator.audit.core import (
    AuditError,
    Auditor,
    Checkpoint,
    PublishedLedger,
    Report,
    SeenCheckpoint,
    parse_checkpoint,
)
from aggregator.audit.tiles import HASH_SIZE, TILE_WIDTH, Tile, parse_bundle
from aggregator.audit.verify import Outcome, Verified, append_births, worker_check, worker_init
from provisioning import atomic_write

log = logging.getLogger(__name__)

STATE_FORMAT = "depin-edge-audit-state/v1"
MAX_CHECKPOINT_BYTES = 64 * 1024
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + 65_535)


class FetchError(Exception):
    """A resource could not be fetched: ``status`` is the HTTP status, 0 for a transport failure."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TileClient:
    """GET resources under one tlog-tiles URL prefix over a persistent HTTP(S) connection."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AuditError(f"log URL {url!r}: expected http(s)://host[:port]/prefix")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0
        self.bytes = 0

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, path: str, max_bytes: int) -> bytes:
        """The body of ``<prefix>/<path>``; raises ``FetchError``."""
        url = f"{self._prefix}/{path}"
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            conn = self._connect()
            try:
                conn.request("GET", url, headers={"Accept-Encoding": "gzip, identity"})
                resp = conn.getresponse()
                body = resp.read(max_bytes + 1)
                if resp.will_close:
                    self.close()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if attempt == 2:
                    raise FetchError(0, f"GET {url}: {e}") from e
                continue
            self.requests += 1
            self.bytes += len(body)
            if resp.status != 200:
                raise FetchError(resp.status, f"GET {url}: HTTP {resp.status}")
            if resp.getheader("Content-Encoding", "identity").lower() == "gzip":
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError) as e:
                    raise FetchError(resp.status, f"GET {url}: bad gzip body: {e}") from e
            if len(body) > max_bytes:
                raise FetchError(resp.status, f"GET {url}: more than {max_bytes} bytes")
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def tile(self, tile: Tile) -> bytes:
        """A hash tile or entry bundle of ``tile.width``; a partial one that is gone is cut from the full one."""
        limit = MAX_BUNDLE_BYTES if tile.entries else TILE_WIDTH * HASH_SIZE
        try:
            return self.get(tile.path, limit)
        except FetchError as e:
            if not tile.partial or e.status != 404:
                raise
        full = self.get(Tile(tile.level, tile.index, TILE_WIDTH).path, limit)
        if not tile.entries:
            return full[:tile.width * HASH_SIZE]
        try:
            entries = parse_bundle(full, TILE_WIDTH)[:tile.width]
        except ValueError as e:
            raise FetchError(200, f"full bundle for {tile.path}: {e}") from e
        return b"".join(len(x).to_bytes(2, "big") + x for x in entries)


# ---- state ---------------------------------------------------------------------------------------------


@dataclass
class State:
    """Checkpoints this auditor verified before, for one log."""

    origin: str
    seen: list[SeenCheckpoint]
    notes: dict[tuple[int, bytes], str]

    def add(self, cp: Checkpoint) -> None:
        key = (cp.size, cp.root)
        if key not in self.notes:
            self.seen.append(SeenCheckpoint(cp.size, cp.root))
            self.notes[key] = cp.note


def load_state(path: Path | None, origin: str) -> State:
    """The state file's checkpoints (none when it does not exist yet); raises ``AuditError`` when unusable."""
    if path is None or not path.exists():
        return State(origin, [], {})
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != STATE_FORMAT:
            raise ValueError(f"format is not {STATE_FORMAT}")
        if doc.get("origin") != origin:
            raise ValueError(f"it is the state of log {doc.get('origin')!r}, not {origin!r}")
        state = State(origin, [], {})
        for n, c in enumerate(doc["checkpoints"]):
            root = base64.b64decode(c["root"], validate=True)
            if not isinstance(c["size"], int) or len(root) != 32 or not isinstance(c["note"], str):
                raise ValueError(f"checkpoints[{n}] malformed")
            state.seen.append(SeenCheckpoint(c["size"], root))
            state.notes[(c["size"], root)] = c["note"]
        return state
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as e:
        raise AuditError(f"{path}: cannot use the audit state file: {e}") from e


def save_state(path: Path, state: State) -> None:
    doc = {"format": STATE_FORMAT, "origin": state.origin, "checkpoints": [
        {"size": s.size, "root": base64.b64encode(s.root).decode(), "note": state.notes[(s.size, s.root)]}
        for s in sorted(state.seen, key=lambda s: (s.size, s.root))]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
    except OSError as e:
        raise AuditError(f"{path}: cannot write the audit state file: {e.strerror or e}") from e


# ---- ledgers -------------------------------------------------------------------------------------------


def load_ledgers(sources: Sequence[str]) -> list[PublishedLedger]:
    """Ledger documents from files, or every ``ledger-*.json`` in a folder (not the ``.oz.json`` dumps)."""
    out = []
    for source in sources:
        p = Path(source)
        files = sorted(f for f in p.glob("ledger-*.json") if not f.name.endswith(".oz.json")) if p.is_dir() else [p]
        for f in files:
            try:
                out.append(PublishedLedger(str(f), json.loads(f.read_text())))
            except (OSError, ValueError) as e:
                raise AuditError(f"{f}: cannot read the ledger: {e}") from e
    return out


# ---- the run -------------------------------------------------------------------------------------------


def run_audit(url: str, vkey: str, cas: Sequence[x509.Certificate],
              crls: Sequence[x509.CertificateRevocationList] = (), state_path: Path | None = None,
              ledgers: Sequence[PublishedLedger] = (), timeout_s: float = 30.0, jobs: int = 1) -> Report:
    """Audit the log at ``url`` against its latest checkpoint; returns the report (``report.clean``).

    ``jobs`` > 1: signature checks run in that many worker processes (bundles in flight: twice as many).
    """
    client = TileClient(url, timeout_s)
    started = time.monotonic()
    try:
        try:
            text = client.get("checkpoint", MAX_CHECKPOINT_BYTES).decode("utf-8")
        except (FetchError, UnicodeDecodeError) as e:
            raise AuditError(f"cannot read the checkpoint: {e}") from e
        cp = parse_checkpoint(text, vkey)
        state = load_state(state_path, cp.origin)
        auditor = Auditor(cp, vkey, cas, crls, state.seen, ledgers)
        if jobs > 1 and cp.size > 4 * TILE_WIDTH:
            _in_pool(client, auditor, cas, crls, jobs)
        else:
            for bundle in auditor.bundles():
                entries = _fetch_bundle(client, auditor, bundle)
                auditor.outcomes(auditor.checker.check(bundle.start, entries))
        report = auditor.finish()
        if state_path is not None:
            state.add(cp)
            save_state(state_path, state)
    finally:
        client.close()
    log.info("audited %d entries of %s in %.1f s (%d requests, %d bytes): %s", cp.size, cp.origin,
             time.monotonic() - started, client.requests, client.bytes,
             "clean" if report.clean else f"{sum(report.counts.values())} discrepancies")
    return report


def _fetch_bundle(client: TileClient, auditor: Auditor, bundle: Tile) -> list[bytes]:
    """Fetch one bundle and its level-0 tile, feed them, then the upper tiles that became checkable."""
    entries = hashes = None
    error = None
    try:
        entries = client.tile(bundle)
        hashes = client.tile(Tile(0, bundle.index, bundle.width))
    except FetchError as e:
        error = str(e)
    out = auditor.bundle(bundle, entries, hashes, error)
    for t in auditor.upper_tiles_ready():
        try:
            auditor.tile(t, client.tile(t))
        except FetchError as e:
            auditor.tile(t, None, str(e))
    return out


def _in_pool(client: TileClient, auditor: Auditor, cas: Sequence[x509.Certificate],
             crls: Sequence[x509.CertificateRevocationList], jobs: int) -> None:
    """Fetch and hash here, check signatures in ``jobs`` worker processes, feed outcomes back in order."""
    ca_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas)
    crl_ders = [c.public_bytes(serialization.Encoding.DER) for c in crls]
    with tempfile.TemporaryDirectory(prefix="edge-audit-") as tmp:
        births = str(Path(tmp) / "births")
        Path(births).touch()
        births_len = 0
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=worker_init,
                                 initargs=(ca_pem, crl_ders, births)) as pool:
            pending: deque[Future[list[Outcome]]] = deque()

            def drain(keep: int) -> None:
                nonlocal births_len
                while len(pending) > keep:
                    outcomes = pending.popleft().result()
                    new = [o.birth for o in outcomes if isinstance(o, Verified) and o.birth is not None]
                    if new:
                        births_len = append_births(births, new)
                    auditor.outcomes(outcomes)

            for bundle in auditor.bundles():
                entries = _fetch_bundle(client, auditor, bundle)
                if entries:
                    pending.append(pool.submit(worker_check, bundle.start, entries, births_len))
                drain(4 * jobs)
            drain(0)


def report_text(report: Report) -> str:
    """The report for a terminal: a summary line, then one line per finding."""
    head = (f"{report.origin}: {report.size} entries, {report.records} records and {report.receipts} receipts "
            f"verified, {report.devices} devices, {report.ledgers_checked} ledgers checked: ")
    if report.clean:
        return head + "clean"
    lines = [head + ", ".join(f"{k} {n}" for k, n in sorted(report.counts.items()))]
    for f in report.findings:
        where = f" [index {f.index}]" if f.index is not None else ""
        lines.append(f"  {f.kind}{where}: {f.detail}")
    shown = len(report.findings)
    total = sum(report.counts.values())
    if shown < total:
        lines.append(f"  ... {total - shown} more (at most 1000 shown per kind)")
    return "\n".join(lines)

