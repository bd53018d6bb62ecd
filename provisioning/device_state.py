"""What a device remembers about its own provisioning: ``<state_dir>/provisioning.json`` and fixed paths.

Layout of the state directory (default ``/var/lib/edge-agent``)::

    device-id            the device id, persisted at first boot
    provisioning.json    device id, fleet, key URI, CA certificate path, pending rotated key (if any)
    keys/device.key      file-tier key (0600 in a 0700 directory); keys/device.next.key while rotating
    keys/device.crt      installed certificate chain (leaf, then intermediates)
    device.csr           the CSR to send to the fleet CA (device.next.csr while rotating)
    fleet-ca.pem         the fleet CA certificate(s) the installed certificate was checked against
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioning.errors import CaStateError
from provisioning.fsutil import atomic_write

STATE_FILE = "provisioning.json"
DEFAULT_STATE_DIR = Path("/var/lib/edge-agent")
DEFAULT_CA_CERT = Path("/etc/edge-agent/fleet-ca.pem")


@dataclass
class DeviceState:
    """The device's provisioning record."""

    device_id: str
    id_source: str
    fleet: str
    key_uri: str
    pending_key_uri: str | None = None

    @staticmethod
    def path(state_dir: Path) -> Path:
        return state_dir / STATE_FILE

    @classmethod
    def load(cls, state_dir: Path) -> DeviceState:
        p = cls.path(state_dir)
        try:
            data = json.loads(p.read_text())
            return cls(**data)
        except FileNotFoundError:
            raise CaStateError(
                f"{p} does not exist: this device is not provisioned yet (run `edge-provision device init`)"
            ) from None
        except (OSError, ValueError, TypeError) as e:
            raise CaStateError(f"{p} is unreadable or damaged: {e}") from e

    def save(self, state_dir: Path) -> None:
        atomic_write(self.path(state_dir), (json.dumps(asdict(self), indent=2) + "\n").encode())


def csr_path(state_dir: Path, pending: bool = False) -> Path:
    return state_dir / ("device.next.csr" if pending else "device.csr")


def cert_path(state_dir: Path) -> Path:
    return state_dir / "keys" / "device.crt"


def ca_path(state_dir: Path) -> Path:
    return state_dir / "fleet-ca.pem"


def default_key_uri(state_dir: Path) -> str:
    return f"file:{state_dir.resolve() / 'keys' / 'device.key'}"
