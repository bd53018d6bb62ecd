"""Runs the web app in the aggregator process: uvicorn on its own thread and event loop.

``WebServer(service, tracker, settings)`` reads the token file, builds the app over a read-only pool of store
connections, hooks the live updates to the fleet tracker and the commit timer to the service, and starts
uvicorn; ``start()`` returns once the socket is bound (or raises ``WebError`` naming what failed: a busy
port, an unreadable or loose token file, a TLS key that does not load). uvicorn's signal handlers stay out
of it (the aggregator's CLI owns SIGTERM); its access log is off, because ``/auth?token=`` would put the
token in it.
"""

from __future__ import annotations

import logging
import ssl
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from aggregator.config import WebSettings
from aggregator.errors import AggregatorError
from aggregator.web.app import WebContext, build_app
from aggregator.web.db import Pool
from aggregator.web.metrics import AggregatorMetrics
from aggregator.web.query import Thresholds
from aggregator.web.reader import FleetReader

log = logging.getLogger(__name__)


class WebError(AggregatorError):
    """The web page cannot start: its port, TLS files or token file (operator's to fix)."""


def read_token(path: str) -> str:
    """The bearer token from ``web.token_file``: one line, at least 16 characters, not readable by others."""
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text().strip()
    except OSError as e:
        raise WebError(f"{path}: cannot read web.token_file: {e.strerror or e}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WebError(f"{path}: web.token_file is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                       f"chmod 600 it")
    if len(text) < 16 or any(c.isspace() for c in text):
        raise WebError(f"{path}: web.token_file must hold one token of at least 16 characters without spaces")
    return text


def check_tls(cert: str, key: str) -> None:
    """Load the TLS pair once so a bad file fails at start with its name, not in uvicorn's thread."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise WebError(f"web.tls_cert_file {cert} / web.tls_key_file {key}: cannot load: {e}") from e


class AppServer:
    """An ASGI app served by uvicorn on a background thread with its own event loop."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, tls_cert_file: str | None = None,
                 tls_key_file: str | None = None) -> None:
        self.app, self.host, self.port = app, host, port
        self.tls_cert_file, self.tls_key_file = tls_cert_file, tls_key_file
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert_file else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Bind and serve; returns once the socket listens, raises ``WebError`` otherwise."""
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_config=None, access_log=False,
                                lifespan="on", ssl_certfile=self.tls_cert_file, ssl_keyfile=self.tls_key_file,
                                timeout_graceful_shutdown=3, server_header=False, proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="aggregator-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            self.stop()
            why = f": {self._failed}" if self._failed else " (see the log above)"
            raise WebError(f"web page could not listen on {self.host}:{self.port}{why}")
        sockets = [sock for srv in self._server.servers for sock in srv.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def _run(self) -> None:
        assert self._server is not None
        try:
            self._server.run()
        except SystemExit as e:  # uvicorn exits when it cannot bind
            self._failed = RuntimeError(f"uvicorn exited ({e.code})")
        except BaseException as e:
            self._failed = e
            log.exception("web server failed")

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("web server did not stop within %.0fs", timeout)
                if self._server is not None:
                    self._server.force_exit = True
                    self._thread.join(2)
        self._thread = None


class WebServer:
    """The web app of one aggregator worker: reader, hub, metrics and app over an ``AppServer``."""

    def __init__(self, service: Any, tracker: Any, settings: WebSettings, *, extra_routes: Sequence[Any] = (),
                 nav: Sequence[tuple[str, str]] = ()) -> None:
        self.settings = settings
        token = read_token(settings.token_file) if settings.token_file else None
        if settings.tls_cert_file and settings.tls_key_file:
            check_tls(settings.tls_cert_file, settings.tls_key_file)
        cfg = service.config
        self.pool = Pool(cfg.store.url, cfg.store.schema)
        self.reader = FleetReader(self.pool, Thresholds(settings.attention_outbox_depth, settings.attention_cert_days,
                                                        settings.attention_window_s))
        self.ctx = WebContext(self.reader, settings, token=token, link_state=service.link_state,
                              alive=lambda: service.alive)
        self.metrics = AggregatorMetrics(service.stats, devices=self.reader.online_count, link=service.link_state,
                                         clients=self._clients)
        self.ctx.metrics = self.metrics
        self.app = build_app(self.ctx, extra_routes, nav)
        assert self.ctx.hub is not None
        self.hub = self.ctx.hub
        self._tracker = tracker
        self._service = service
        self.server = AppServer(self.app, settings.host, settings.port, tls_cert_file=settings.tls_cert_file,
                                tls_key_file=settings.tls_key_file)

    def _clients(self) -> dict[str, int]:
        return {"fleet": self.hub.clients("fleet"), "device": self.hub.clients("device")}

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, timeout: float = 15.0) -> None:
        try:
            self.server.start(timeout)
        except Exception:
            self.pool.close()
            raise
        self._tracker.add_listener(self.hub.notify)
        self._service.add_observer(self.metrics)

    def stop(self, timeout: float = 10.0) -> None:
        self._tracker.remove_listener(self.hub.notify)
        self.server.stop(timeout)
        self.pool.close()
