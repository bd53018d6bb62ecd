"""A loopback TCP proxy that can stop forwarding: a dead link that still looks open (no FIN, no RST).

``stall()`` freezes every connection open at that moment (bytes are neither read nor forwarded, sockets
stay open), the way a NAT box or a mobile uplink silently drops a flow. Connections made afterwards are
forwarded normally, so a client that notices and reconnects recovers. ``accepts`` records when each
client connection arrived (monotonic), which is how a test sees the reconnect.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from tests.support.wait import free_port


class StallingProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.accepts: list[float] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._frozen: list[threading.Event] = []
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stall(self) -> float:
        """Freeze every current connection; returns the monotonic time it happened."""
        with self._lock:
            for ev in self._frozen:
                ev.set()
        return time.monotonic()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepts.append(time.monotonic())
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            frozen = threading.Event()
            with self._lock:
                self._frozen.append(frozen)
                self._socks += [client, upstream]
            t = threading.Thread(target=self._pump, args=(client, upstream, frozen), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, a: socket.socket, b: socket.socket, frozen: threading.Event) -> None:
        peers = {a: b, b: a}
        while not self._stop.is_set():
            if frozen.is_set():
                self._stop.wait(0.2)  # hold both sockets open, move nothing
                continue
            try:
                readable, _, _ = select.select([a, b], [], [], 0.2)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        a.close()
                        b.close()
                        return
                    if not frozen.is_set():
                        peers[s].sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass
        for t in self._threads:
            t.join(2)
