"""A static C2SP tlog-tiles log for tests: files written from a list of entries, served by ``http.server``.

Independent of the project's tree code on purpose: level hashes and roots are computed here with the plain
recursive RFC 6962 definition, so the auditor's streaming recomputation is checked against another one.
``write_log`` can be told to lie (serve other bytes than the ones it hashed), as a tampering server would.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from envelope.merkle import tile_path


def leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + a + b).digest()


def mth(hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes, by its recursive definition."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node(mth(hashes[:k]), mth(hashes[k:]))


def _path(folder: Path, level: str, index: int, width: int) -> Path:
    return folder / tile_path(level if level == "entries" else int(level), index, width)


def _write(p: Path, data: bytes) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def write_log(folder: Path, entries: Sequence[bytes], sign: Callable[[str], str], origin: str, *,
              served: Sequence[bytes] | None = None, checkpoint_size: int | None = None) -> str:
    """Write checkpoint, tiles and bundles for ``entries`` into ``folder`` (replacing what was there);
    ``served`` are the bundle contents actually written (default: the entries). ``checkpoint_size``: sign an
    older size than the tiles hold (the log grew since; its partial tiles are gone). Returns the checkpoint."""
    if (folder / "tile").exists():
        shutil.rmtree(folder / "tile")
    shown = entries if served is None else served
    size = len(entries)
    level_hashes = [leaf(e) for e in entries]
    level = 0
    while level_hashes:
        for start in range(0, len(level_hashes), 256):
            chunk = level_hashes[start:start + 256]
            _write(_path(folder, str(level), start // 256, len(chunk)), b"".join(chunk))
        level_hashes = [mth(level_hashes[i:i + 256]) for i in range(0, len(level_hashes) - 255, 256)]
        level += 1
    for start in range(0, size, 256):
        bundle = shown[start:start + 256]
        _write(_path(folder, "entries", start // 256, len(bundle)),
               b"".join(len(e).to_bytes(2, "big") + e for e in bundle))
    n = size if checkpoint_size is None else checkpoint_size
    if n < size:  # the upper partial tiles made for the older checkpoint are still served (level 0's not)
        hashes = [leaf(e) for e in entries[:n]]
        for level in range(1, 8):
            hashes = [mth(hashes[i:i + 256]) for i in range(0, len(hashes) - 255, 256)]
            if len(hashes) % 256:
                _write(_path(folder, str(level), len(hashes) // 256, len(hashes) % 256),
                       b"".join(hashes[-(len(hashes) % 256):]))
    checkpoint = sign(f"{origin}\n{n}\n{base64.b64encode(mth([leaf(e) for e in entries[:n]])).decode()}\n")
    (folder / "checkpoint").write_text(checkpoint)
    return checkpoint


class _Quiet(http.server.SimpleHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on a free loopback port; yields the URL prefix."""
    handler = lambda *a, **k: _Quiet(*a, directory=str(folder), **k)  # noqa: E731
    _Quiet.protocol_version = "HTTP/1.1"  # keep-alive, as a real tile server
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def main(argv: Sequence[str]) -> None:
    """``python -m tests.support.tlog_static FOLDER``: serve a written log until killed; prints the URL."""
    import sys
    import time

    with serve(Path(argv[0])) as url:
        print(url, flush=True)
        sys.stdout.close()
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
