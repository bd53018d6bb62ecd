"""Device ids: their shape, and how a device finds its own (docs/provisioning.md, "Device id").

A device id is 3–64 characters of ``[a-z0-9-]`` starting with a letter or digit: safe as an MQTT topic
segment, a certificate CN and a file name. Order of derivation on the device:

1. an explicit override (``--device-id``, or the ``EDGE_DEVICE_ID`` environment variable);
2. an id persisted earlier in ``<state_dir>/device-id`` (so the id never changes once chosen);
3. the board serial: Raspberry Pi ``/proc/device-tree/serial-number`` or the ``Serial`` line of
   ``/proc/cpuinfo`` → ``rpi-<serial>``; NVIDIA Jetson device-tree serial → ``jetson-<serial>``;
   any other board with a device-tree serial → ``dt-<serial>``;
4. else a random ``edge-<12 hex>``.

The result of 3 or 4 is persisted atomically, so a later board-detection change cannot rename a device.
Every path is taken relative to ``root`` so tests point it at a temp dir.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import InvalidDeviceId
from provisioning.fsutil import atomic_write

log = logging.getLogger(__name__)

DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")
DEVICE_ID_FILE = "device-id"
_ZERO_SERIALS = {"", "0", "00000000", "0000000000000000"}


def validate_device_id(value: str) -> str:
    """Return ``value`` if it is a valid device id, else raise ``InvalidDeviceId`` saying what is expected."""
    if not isinstance(value, str) or not DEVICE_ID_RE.match(value):
        raise InvalidDeviceId(
            f"device id must be 3-64 characters of a-z, 0-9 and '-', starting with a letter or digit; "
            f"got {value!r}"
        )
    return value


def is_valid_device_id(value: str) -> bool:
    """True when ``value`` has the device-id shape."""
    return isinstance(value, str) and DEVICE_ID_RE.match(value) is not None


def _clean_serial(raw: str) -> str:
    s = raw.strip("\x00 \t\r\n").lower()
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s


def id_from_serial(prefix: str, raw_serial: str) -> str | None:
    """``<prefix>-<serial>`` made safe, or ``None`` when the serial is empty or all zeros."""
    s = _clean_serial(raw_serial)
    if s in _ZERO_SERIALS or not s.strip("0-"):
        return None
    candidate = f"{prefix}-{s}"[:64].rstrip("-")
    return candidate if is_valid_device_id(candidate) else None


@dataclass(frozen=True)
class DeviceIdSource:
    """Which rule produced a device id, for `device status` and logs."""

    device_id: str
    source: str  # override | persisted | raspberry-pi | jetson | device-tree | random


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("ascii", errors="replace")
    except OSError:
        return None


def board_serial_id(root: Path = Path("/")) -> DeviceIdSource | None:
    """The id derived from the board serial under ``root``, or ``None`` on boards without one."""
    model = (_read(root / "proc/device-tree/model") or _read(root / "sys/firmware/devicetree/base/model") or "")
    model_l = model.lower()
    dt_serial = _read(root / "proc/device-tree/serial-number") or _read(
        root / "sys/firmware/devicetree/base/serial-number"
    )
    if ("jetson" in model_l or "nvidia" in model_l) and dt_serial and (did := id_from_serial("jetson", dt_serial)):
        return DeviceIdSource(did, "jetson")
    cpuinfo = _read(root / "proc/cpuinfo") or ""
    is_pi = "raspberry pi" in model_l or "raspberry pi" in cpuinfo.lower()
    if is_pi:
        if dt_serial and (did := id_from_serial("rpi", dt_serial)):
            return DeviceIdSource(did, "raspberry-pi")
        m = re.search(r"^Serial\s*:\s*([0-9A-Fa-f]+)\s*$", cpuinfo, re.MULTILINE)
        if m and (did := id_from_serial("rpi", m.group(1))):
            return DeviceIdSource(did, "raspberry-pi")
    if dt_serial and (did := id_from_serial("dt", dt_serial)):
        return DeviceIdSource(did, "device-tree")
    return None


def random_device_id() -> str:
    """A fresh random id ``edge-<12 hex>``."""
    return "edge-" + secrets.token_hex(6)


def _persist(path: Path, device_id: str) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    atomic_write(path, (device_id + "\n").encode(), mode=0o644)


def persist_device_id(state_dir: Path, device_id: str) -> Path:
    """Write ``<state_dir>/device-id`` (what the agent's ``device_id_file`` reads) unless it already holds it."""
    path = state_dir / DEVICE_ID_FILE
    if (_read(path) or "").strip() != device_id:
        _persist(path, validate_device_id(device_id))
    return path


def resolve_device_id(
    state_dir: Path,
    *,
    override: str | None = None,
    root: Path = Path("/"),
    persist: bool = True,
) -> DeviceIdSource:
    """Find this device's id by the documented order; persists a derived or random id in ``state_dir``."""
    if override is None:
        override = os.environ.get("EDGE_DEVICE_ID") or None
    if override is not None:
        return DeviceIdSource(validate_device_id(override), "override")
    id_file = state_dir / DEVICE_ID_FILE
    stored = _read(id_file)
    if stored is not None:
        value = stored.strip()
        try:
            return DeviceIdSource(validate_device_id(value), "persisted")
        except InvalidDeviceId as e:
            raise InvalidDeviceId(f"{id_file} holds an invalid device id: {e}") from e
    found = board_serial_id(root) or DeviceIdSource(random_device_id(), "random")
    if persist:
        _persist(id_file, found.device_id)
        log.info("device id %s (from %s) persisted in %s", found.device_id, found.source, id_file)
    return found
