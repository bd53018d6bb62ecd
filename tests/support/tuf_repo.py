"""A real model repository for tests: made with ``edge-provision models`` code, served by ``http.server``.

``ReleaseRepo`` creates keys and a repository in a temp dir (1-of-1 root unless told otherwise, so tests
stay fast) and adds/publishes models like the release operator does. ``RepoServer`` serves the directory on
a free loopback port from a thread, with fault hooks an attacker or a bad network would provide: a path can
be answered by a function (endless data, slow bytes, other bytes), the server can go away and come back.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioning.model_golden import compute_golden
from provisioning.model_repo import Expiry, ModelRepository, key_signer
from provisioning.model_target import Rollout

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_V1 = REPO_ROOT / "models" / "vibration-int8.tflite"
MODEL_V2 = REPO_ROOT / "models" / "vibration-int8-v2.tflite"

Responder = Callable[[http.server.BaseHTTPRequestHandler], None]


def make_model_version(model: bytes, *, version: int, bias_shift: int = 0, bias_class: int = 0) -> bytes:
    """``tools/make_model_version.transform`` (tools/ is scripts, not a package: loaded from its file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_make_model_version", REPO_ROOT / "tools" / "make_model_version.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out: bytes = mod.transform(model, version=version, bias_shift=bias_shift, bias_class=bias_class)
    return out


@dataclass
class ReleaseRepo:
    """A repository and its keys under ``base``; methods mirror the release commands."""

    base: Path
    root_keys: int = 1
    root_threshold: int = 1
    targets_keys: int = 1
    targets_threshold: int = 1
    expiry: Expiry = field(default_factory=Expiry)
    repo: ModelRepository = field(init=False)
    keys: dict[str, list[Path]] = field(init=False)

    def __post_init__(self) -> None:
        self.repo, self.keys = ModelRepository.create(
            self.base / "repository", self.base / "keys", root_keys=self.root_keys,
            root_threshold=self.root_threshold, targets_keys=self.targets_keys,
            targets_threshold=self.targets_threshold, expiry=self.expiry)

    @property
    def dir(self) -> Path:
        return self.repo.dir

    @property
    def root_json(self) -> Path:
        return self.repo.file_of("root", 1)

    def signers(self, role: str) -> list[Any]:
        return [key_signer(p) for p in self.keys[role]]

    def add(self, model: Path | bytes = MODEL_V2, version: int = 2, *, share_bp: int = 10000,
            rollout_id: str | None = None, golden: tuple[list[bytes], dict[str, list[list[int]]]] | None = None,
            tolerance: dict[str, int] | None = None, meta: dict[str, Any] | None = None,
            min_agent_version: str = "0.1.0", publish: bool = True, model_id: str = "vibration") -> str:
        """Sign (and by default publish) one model version; returns its sha256 hex."""
        data = model if isinstance(model, bytes) else model.read_bytes()
        if meta is None:
            src = model if isinstance(model, Path) else MODEL_V1
            meta = json.loads(src.with_suffix(".json").read_text())
            meta.pop("sha256", None)
        if golden is None:
            ins, outs, _ = compute_golden(data, 3, 0)
            golden = (ins, {"cpu": outs})
        self.repo.add_model(data, meta, model_id=model_id, version=version, min_agent_version=min_agent_version,
                            inputs=golden[0], outputs=golden[1], tolerance=tolerance or {},
                            rollout=Rollout(rollout_id or f"{model_id}-{version}", share_bp),
                            signers=self.signers("targets"), expiry=self.expiry)
        if publish:
            self.publish()
        return hashlib.sha256(data).hexdigest()

    def revoke(self, version: int, *, publish: bool = True, model_id: str = "vibration") -> None:
        self.repo.revoke(model_id, version, self.signers("targets"), expiry=self.expiry)
        if publish:
            self.publish()

    def publish(self) -> None:
        self.repo.publish(self.signers("snapshot")[0], self.signers("timestamp")[0], expiry=self.expiry)

    def snapshot_files(self) -> dict[str, bytes]:
        """Every file of the repository (relative path -> bytes): to replay an old state later."""
        return {str(p.relative_to(self.dir)): p.read_bytes() for p in self.dir.rglob("*") if p.is_file()}

    def restore(self, files: dict[str, bytes]) -> None:
        """Put the repository back to a state from ``snapshot_files`` (an attacker replaying it)."""
        shutil.rmtree(self.dir)
        for rel, data in files.items():
            p = self.dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.requests.append(path)
        hook = self.server.hooks.get(path)
        if hook is None:
            for prefix, h in self.server.prefix_hooks.items():
                if path.startswith(prefix):
                    hook = h
                    break
        if hook is not None:
            hook(self)
            return
        super().do_GET()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hooks: dict[str, Responder]
    prefix_hooks: dict[str, Responder]
    requests: list[str]


class RepoServer:
    """Serve ``directory`` on 127.0.0.1 (a free port, kept across ``stop()``/``start()``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.hooks: dict[str, Responder] = {}
        self.prefix_hooks: dict[str, Responder] = {}
        self.requests: list[str] = []
        self.port = 0
        self._srv: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RepoServer:
        directory = str(self.directory)

        def handler(*a: Any, **kw: Any) -> _Handler:
            return _Handler(*a, directory=directory, **kw)

        srv = _Server(("127.0.0.1", self.port), handler)
        srv.hooks, srv.prefix_hooks, srv.requests = self.hooks, self.prefix_hooks, self.requests
        self.port = srv.server_address[1]
        self._srv = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> RepoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    """Answer 200 with no Content-Length and bytes until the client hangs up (the endless-data attack)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.end_headers()
    chunk = b"\0" * 65536
    try:
        for _ in range(16 * 1024):  # at most 1 GiB, so a broken client cannot hang the test forever
            handler.wfile.write(chunk)
    except (TimeoutError, BrokenPipeError, ConnectionResetError, OSError):
        pass


def serve_bytes(data: bytes, *, delay_per_chunk_s: float = 0.0, chunk: int = 4096,
                started: threading.Event | None = None) -> Responder:
    """Answer with ``data`` (optionally slowly, chunk by chunk), e.g. tampered model bytes."""
    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        try:
            for i in range(0, len(data), chunk):
                handler.wfile.write(data[i:i + chunk])
                handler.wfile.flush()
                if started is not None:
                    started.set()
                if delay_per_chunk_s:
                    time.sleep(delay_per_chunk_s)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
    return respond
