"""The log over HTTP, read-only, in C2SP tlog-tiles layout: ``<prefix>/checkpoint`` and ``<prefix>/tile/...``.

``routes(store)`` returns Starlette routes to mount under the log's prefix (the aggregator's web app mounts
them at ``/log``): the latest signed checkpoint (text, not cached beyond a second), hash tiles
``tile/<L>/<N>[.p/<W>]`` (the stored tile's row 0, or its first ``W`` hashes: a prefix of a partial tile is
the partial tile of an earlier size) and entry bundles ``tile/entries/<N>[.p/<W>]`` (each record as received,
behind a big-endian uint16 length; gzip when the client accepts it). Tiles and bundles are immutable and
cached for a year. A request for something the tree does not have yet is a 404.

The store connection is shared by Starlette's thread pool, so every read holds one lock; full tiles are
cached in memory (they never change).
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.errors import LogError, StoreError
from aggregator.store import Store, open_store
from aggregator.tlog.tiles import TileCache
from envelope.merkle import TILE_WIDTH, StoredTile, parse_tile_path

IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE = "no-cache, max-age=1"
MAX_ENTRY_BYTES = 0xFFFF


class LogReader:
    """Thread-safe reads of the log from one store connection (opened on first use with ``lazy``)."""

    def __init__(self, store: Store | None = None, opener: Callable[[], Store] | None = None) -> None:
        self._store = store
        self._opener = opener
        self._lock = threading.Lock()
        self._tiles = TileCache(self._read_tile, max_tiles=1024)

    def _read_tile(self, level: int, index: int) -> StoredTile | None:
        return self.store.log_tile(level, index)  # the store may be (re)opened between reads

    @classmethod
    def lazy(cls, url: str, schema: str | None = None) -> LogReader:
        """A reader that opens its own read-only connection at the first request (and again after a failure)."""
        return cls(opener=lambda: open_store(url, schema=schema, create=False))

    @property
    def store(self) -> Store:
        if self._store is None:
            if self._opener is None:
                raise StoreError("no store")
            self._store = self._opener()
        return self._store

    def _failed(self) -> None:
        if self._opener is not None and self._store is not None:
            self._store.close()
            self._store = None

    def checkpoint(self) -> str | None:
        with self._lock:
            try:
                cp = self.store.log_latest_checkpoint()
            except StoreError:
                self._failed()
                raise
            except Exception as e:  # a dropped connection surfaces as the driver's error
                self._failed()
                raise StoreError(str(e)) from e
        return None if cp is None else cp.note

    def tile(self, level: int, index: int, width: int) -> bytes | None:
        with self._lock:
            try:
                t = self._tiles.tile(level, index, width)
            except LogError:
                return None
            except Exception as e:
                self._failed()
                raise StoreError(str(e)) from e
        return t.row0(width) if width < TILE_WIDTH or t.width == TILE_WIDTH else None

    def bundle(self, index: int, width: int) -> bytes | None:
        start = index * TILE_WIDTH
        with self._lock:
            try:
                size, _ = self.store.log_state()
                if start + width > size:
                    return None
                entries = self.store.log_entries(start, start + width)
            except Exception as e:
                self._failed()
                raise StoreError(str(e)) from e
        out = bytearray()
        for entry in entries:  # a row missing from the store is missing here too: an auditor sees it
            if len(entry.record) > MAX_ENTRY_BYTES:
                raise LogError(f"log entry {entry.index} is {len(entry.record)} bytes: too large for a bundle")
            out += len(entry.record).to_bytes(2, "big") + entry.record
        return bytes(out)


def _binary(data: bytes, request: Request, *, compress: bool = False) -> Response:
    headers = {"Cache-Control": IMMUTABLE}
    if compress and "gzip" in request.headers.get("accept-encoding", ""):
        data = gzip.compress(data, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Response(data, media_type="application/octet-stream", headers=headers)


def _not_found(why: str) -> Response:
    return Response(why + "\n", status_code=404, media_type="text/plain; charset=utf-8",
                    headers={"Cache-Control": MUTABLE})


def routes(store: Store | LogReader) -> list[Any]:
    """The read-only tlog-tiles routes over ``store`` (mount them under the log's URL prefix)."""
    reader = store if isinstance(store, LogReader) else LogReader(store)

    def checkpoint(request: Request) -> Response:
        try:
            note = reader.checkpoint()
        except StoreError:
            return Response("store unavailable\n", status_code=503, media_type="text/plain; charset=utf-8")
        if note is None:
            return _not_found("no checkpoint yet")
        return Response(note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": MUTABLE})

    def tile(request: Request) -> Response:
        try:
            ref = parse_tile_path("tile/" + request.path_params["rest"])
        except ValueError as e:
            return _not_found(str(e))
        try:
            if ref.level == "entries":
                data = reader.bundle(ref.index, ref.width)
                return _not_found("no such entry bundle") if data is None else _binary(data, request, compress=True)
            assert isinstance(ref.level, int)
            data = reader.tile(ref.level, ref.index, ref.width)
        except StoreError:
            return Response("store unavailable\n", status_code=503, media_type="text/plain; charset=utf-8")
        return _not_found("no such tile") if data is None else _binary(data, request)

    return [
        Route("/checkpoint", checkpoint, methods=["GET"]),
        Route("/tile/{rest:path}", tile, methods=["GET"]),
    ]
