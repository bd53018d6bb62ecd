"""Device ids: the shape, and derivation from board serials under an injectable root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioning import InvalidDeviceId, is_valid_device_id, resolve_device_id, validate_device_id
from provisioning.device_id import board_serial_id, id_from_serial

SPEC = re.compile(r"[a-z0-9][a-z0-9-]{2,63}")


@given(st.text(alphabet="abcxyz0189-_A /.", max_size=70))
def test_validity_matches_the_documented_rule(s: str) -> None:
    assert is_valid_device_id(s) == bool(SPEC.fullmatch(s))


@given(st.text(max_size=80))
def test_id_from_any_serial_is_valid_or_none(raw: str) -> None:
    did = id_from_serial("rpi", raw)
    assert did is None or is_valid_device_id(did)


@pytest.mark.parametrize("bad", ["", "ab", "-abc", "ABC", "a_b_c", "a" * 65, "dev/1", "dev 1", "dév-1"])
def test_invalid_ids_are_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(InvalidDeviceId, match="3-64 characters"):
        validate_device_id(bad)


def _write(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def test_raspberry_pi_device_tree_serial(tmp_path: Path) -> None:
    _write(tmp_path, "proc/device-tree/model", b"Raspberry Pi 4 Model B Rev 1.4\x00")
    _write(tmp_path, "proc/device-tree/serial-number", b"10000000ABCDEF01\x00")
    src = board_serial_id(tmp_path)
    assert src is not None and src.device_id == "rpi-10000000abcdef01" and src.source == "raspberry-pi"


def test_raspberry_pi_cpuinfo_serial(tmp_path: Path) -> None:
    _write(tmp_path, "proc/cpuinfo", b"processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: 00000000c0ffee42\n"
                                     b"Model\t\t: Raspberry Pi 3 Model B Rev 1.2\n")
    src = board_serial_id(tmp_path)
    assert src is not None and src.device_id == "rpi-00000000c0ffee42"


def test_jetson_device_tree_serial(tmp_path: Path) -> None:
    _write(tmp_path, "proc/device-tree/model", b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    _write(tmp_path, "proc/device-tree/serial-number", b"1421323012345\x00")
    src = board_serial_id(tmp_path)
    assert src is not None and src.device_id == "jetson-1421323012345" and src.source == "jetson"


def test_zero_serial_falls_back_to_random_and_persists(tmp_path: Path) -> None:
    _write(tmp_path, "proc/cpuinfo", b"Model : Raspberry Pi\nSerial : 0000000000000000\n")
    state = tmp_path / "state"
    first = resolve_device_id(state, root=tmp_path)
    assert first.source == "random" and first.device_id.startswith("edge-")
    again = resolve_device_id(state, root=tmp_path)
    assert again.device_id == first.device_id and again.source == "persisted"


def test_override_wins_and_is_checked(tmp_path: Path) -> None:
    assert resolve_device_id(tmp_path, override="site-7-pump", root=tmp_path).source == "override"
    with pytest.raises(InvalidDeviceId):
        resolve_device_id(tmp_path, override="Bad!", root=tmp_path)
    assert not (tmp_path / "device-id").exists()


def test_corrupt_persisted_id_is_reported(tmp_path: Path) -> None:
    (tmp_path / "device-id").write_text("NOT VALID\n")
    with pytest.raises(InvalidDeviceId, match="holds an invalid device id"):
        resolve_device_id(tmp_path, root=tmp_path)
