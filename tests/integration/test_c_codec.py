"""The C99 codec (firmware_bridge/c) against the shared vectors, both directions.

C encodes → Python decodes, Python encodes → C decodes, and both decoders report the same result for
every malformed vector. Compiled with ``gcc -std=c99 -Wall -Wextra -Werror`` into a temp dir, with the
default 1 KB CRC table and with the small nibble table (``-DFB_CRC_SMALL``).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_bridge import cobs_encode, decode_frame, encode_frame
from tests.vectors.frames import load, message_from_json

C_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "c"
GCC = shutil.which("gcc")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
VECTORS = load()["vectors"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(GCC is None, reason="gcc is not installed"),
]


@pytest.fixture(scope="module", params=["table", "small"])
def driver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fbc") / "fb_vector_driver"
    extra = ["-DFB_CRC_SMALL"] if request.param == "small" else []
    assert GCC is not None
    subprocess.run(
        [GCC, *CFLAGS, *extra, "-o", str(out), str(C_DIR / "test" / "fb_vector_driver.c"), str(C_DIR / "fb_proto.c")],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return out


def run(driver: Path, mode: str, lines: list[str]) -> list[str]:
    p = subprocess.run([str(driver), mode], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr, p.stderr
    return p.stdout.splitlines()


def spec(v: dict) -> str:
    """The driver's encode line for a vector."""
    m, c, f = v["message"], v["counter"], v["flags"]
    head = f"{m['type']} {c} {f}"
    if m["type"] == "hello":
        parts = [*map(str, m["fw_version"]), str(m["boot_id"]), str(m["t_us"]), m["uid"] or "-", str(len(m["sensors"]))]
        for s in m["sensors"]:
            parts += [str(s["id"]), str(s["kind"]), str(s["format"]), str(s["channels"]),
                      float(s["rate_hz"]).hex(), float(s["scale"]).hex(), float(s["offset"]).hex(),
                      s["unit"].encode().hex() or "-"]
        return head + " " + " ".join(parts)
    if m["type"] == "samples":
        vals = [float(x).hex() if m["format"] == 3 else str(x) for x in m["values"]]
        count = len(m["values"]) // m["channels"]
        return f"{head} {m['sensor_id']} {m['format']} {m['channels']} {count} {m['t_us']} " + " ".join(vals)
    if m["type"] == "heartbeat":
        return f"{head} {m['t_us']} {m['dropped_samples']}"
    if m["type"] == "error":
        return f"{head} {m['code']} {m['text'].encode().hex() or '-'}"
    if m["type"] == "pong":
        return f"{head} {m['nonce']} {m['t_us']}"
    body = bytes.fromhex(v["body"])  # host → MCU types: the generic frame encoder
    return f"raw {c} {f} {body[1]} {body[5:-4].hex() or '-'}"


def test_c_encodes_what_python_decodes(driver: Path) -> None:
    valid = [v for v in VECTORS if "message" in v]
    got = run(driver, "encode", [spec(v) for v in valid])
    assert len(got) == len(valid)
    for v, wire_hex in zip(valid, got, strict=True):
        assert wire_hex == v["wire"], v["name"]
        msg = decode_frame(bytes.fromhex(wire_hex))
        assert encode_frame(msg) == encode_frame(message_from_json(v["message"], v["counter"], v["flags"]))


def test_c_decodes_what_python_encodes(driver: Path) -> None:
    lines = run(driver, "decode", [v["wire"] for v in VECTORS])
    per_vector: list[list[str]] = [[]]
    for line in lines:
        if line == "end":
            per_vector.append([])
        else:
            per_vector[-1].append(line.rstrip())
    per_vector.pop()
    assert len(per_vector) == len(VECTORS)
    for v, got in zip(VECTORS, per_vector, strict=True):
        if v["c"]:
            assert got == [r.rstrip() for r in v["results"]], v["name"]
        else:  # MCU → host payloads are not type-checked in C: it reports the intact frame
            assert len(got) == 1 and got[0].startswith("ok "), v["name"]


def test_c_and_python_decoders_agree_on_noise(driver: Path) -> None:
    rnd = random.Random(8)
    chunks = []
    for _ in range(300):
        junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 80)))
        chunks.append(junk.hex() + "00")
    c_lines = [x for x in run(driver, "decode", chunks) if x != "end"]
    from tests.vectors.frames import python_results

    py_lines = python_results(b"".join(bytes.fromhex(c) for c in chunks))
    assert c_lines == py_lines
    assert len(c_lines) > 250 and all(x.startswith("error ") for x in c_lines)


def test_cobs_identical(driver: Path) -> None:
    rnd = random.Random(9)
    inputs = [b"", b"\x00", b"\x00\x00", bytes(range(1, 255)), bytes(range(1, 256)), b"\x01" * 508,
              b"\x01" * 254 + b"\x00", b"\x00" + b"\x02" * 254, os.urandom(1000)]
    inputs += [bytes(rnd.choice([0, 1, 2, 255]) for _ in range(rnd.randint(0, 700))) for _ in range(100)]
    got = run(driver, "cobs", [(x.hex() or "-") for x in inputs])
    assert got == [cobs_encode(x).hex() for x in inputs]


def test_example_compiles(tmp_path: Path) -> None:
    assert GCC is not None
    subprocess.run(
        [GCC, *CFLAGS, "-c", "-o", str(tmp_path / "ex.o"), str(C_DIR / "examples" / "fb_sensor_node.c")],
        check=True, timeout=120, cwd=C_DIR,
    )


@pytest.mark.parametrize("text", ["é" * 150, "a" + "€" * 100, "x" * 199 + "😀", "ok" * 150])
def test_c_cuts_long_error_text_at_a_character_boundary(driver: Path, text: str) -> None:
    """The C encoder cuts ERROR text to 200 bytes without splitting a UTF-8 sequence: the host refuses invalid
    UTF-8 (issue 12, item 14), so a cut in the middle of a character would lose the whole report."""
    (wire_hex,) = run(driver, "encode", [f"error 0 0 7 {text.encode().hex()}"])
    msg = decode_frame(bytes.fromhex(wire_hex))
    raw = msg.text.encode()  # type: ignore[union-attr]
    assert len(raw) <= 200 and text.encode().startswith(raw) and len(raw) > 196
