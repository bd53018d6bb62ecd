"""Start a private Mosquitto on a free loopback port with a config written for the test, and stop it.

Started as root, mosquitto drops to user ``mosquitto``: the temp dir and every file it reads are made
readable by that user.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.wait import free_port, port_open, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Mosquitto:
    """A running broker. ``extra`` lines go into the listener's config (TLS, ACL, limits)."""

    extra: str = ""
    port: int = 0
    persistence: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mosq-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> Path:
        if not self.port:
            self.port = free_port()
        os.chmod(self.workdir, 0o755)
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Tests count every message: never let the broker drop QoS 1 messages for a slow subscriber.
            "max_queued_messages 0",
        ]
        if self.persistence:
            pdir = self.workdir / "persist"
            pdir.mkdir(exist_ok=True)
            os.chmod(pdir, 0o777)
            lines += ["persistence true", f"persistence_location {pdir}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        if "allow_anonymous" not in self.extra and "require_certificate" not in self.extra:
            lines.append("allow_anonymous true")
        lines.append(self.extra)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.log_path.touch()
        os.chmod(self.log_path, 0o666)
        os.chmod(conf, 0o644)
        return conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        conf = self.write_config()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: self._alive_and_listening(), timeout=timeout, what=f"mosquitto on port {self.port}")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log()}") from None
        return self

    def _alive_and_listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log()}")
        return port_open(self.port)

    def kill(self) -> None:
        """SIGKILL the broker (crash test); ``start()`` again reuses port and config."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def reload(self) -> None:
        """SIGHUP: re-read config, ACL and CRL."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def restart(self) -> None:
        """Start again on the same port with the same config."""
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
