"""A microcontroller simulator on a pseudo-terminal, with fault injection; used by the demo and the tests.

It plays the MCU side of docs/serial-protocol.md: boots with a HELLO (BOOT flag), streams the vibration
signal model (``firmware_bridge.signal_model``) as int16 SAMPLES frames in real time on its own µs clock
(optionally drifting), sends HEARTBEATs, answers HELLO_REQUEST, PING, TIME_SYNC and CONFIG. Faults on
demand or on a schedule: noise bursts, bit flips, dropped frames, resets (a frame cut mid-write, a new
boot id, counters and clock from zero) and unplugs (the pty closed and later recreated behind the same
symlink, as ``/dev/serial/by-id/...`` behaves). Run it as ``python -m firmware_bridge.simulator`` or
in-process as ``Simulator(...).start()``.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import queue
import signal
import sys
import threading
import time
import tty
from dataclasses import dataclass
from types import FrameType as PyFrame
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_bridge import signal_model
from firmware_bridge.codec import FrameEncoder
from firmware_bridge.decoder import FrameDecoder
from firmware_bridge.messages import (
    FLAG_BOOT,
    Config,
    ErrorReport,
    Heartbeat,
    Hello,
    HelloRequest,
    Ping,
    Pong,
    SampleFormat,
    Samples,
    SensorInfo,
    SensorKind,
    TimeSync,
)

__all__ = ["SentBlock", "SimConfig", "Simulator", "main"]

log = logging.getLogger(__name__)

_TX_CAP = 256 * 1024  # bytes queued for a host that does not read; beyond it frames are dropped


@dataclass(frozen=True)
class SimConfig:
    """What the simulated MCU samples and how it misbehaves (``*_every_s`` 0 = never)."""

    rate_hz: float = signal_model.SAMPLE_RATE_HZ
    block_samples: int = 32
    fault: str = "normal"
    seed: int | None = None
    scale: float = 1.0 / 4096  # g per LSB (±8 g range)
    heartbeat_s: float = 1.0
    drift_ppm: float = 0.0  # MCU clock error: positive runs fast
    fw_version: tuple[int, int, int] = (1, 0, 0)
    uid: bytes = b"SIM-MCU-0001"
    record: int = 0  # keep the last N sent sample blocks in ``history`` (tests)
    noise_every_s: float = 0.0
    noise_bytes: int = 64
    flip_every_s: float = 0.0
    drop_every_s: float = 0.0
    reset_every_s: float = 0.0
    unplug_every_s: float = 0.0
    unplug_for_s: float = 1.0


@dataclass(frozen=True)
class SentBlock:
    """One SAMPLES frame as sent: ``intact`` is False when it was dropped, flipped or lost to an unplug."""

    boot_id: int
    t_us: int
    raw: npt.NDArray[np.int16]
    intact: bool


@dataclass
class _Faults:
    flip: int = 0
    drop: int = 0


class Simulator:
    """The simulated MCU; ``path`` is what a host opens (the symlink when ``link`` is given)."""

    def __init__(self, link: str | None = None, cfg: SimConfig | None = None) -> None:
        self.cfg = cfg or SimConfig()
        self.link = link
        self.rng = np.random.default_rng(self.cfg.seed)
        self.counts: dict[str, int] = collections.defaultdict(int)
        self.history: collections.deque[SentBlock] = collections.deque(maxlen=max(self.cfg.record, 1))
        self.slave_path = ""
        self._master = -1
        self._slave = -1
        self._tx = bytearray()
        self._cmds: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._faults = _Faults()
        self._unplugged_until: float | None = None
        self._reset_on_replug = False
        self._rate = float(self.cfg.rate_hz)
        self._boot(first=True)

    # -------------------------------------------------------------------------------------- lifecycle

    @property
    def path(self) -> str:
        return self.link or self.slave_path

    def start(self) -> Simulator:
        """Create the pty (and symlink), send the boot HELLO and run in a background thread."""
        self._plug()
        self._send_hello(boot=True)
        self._thread = threading.Thread(target=self._run, name="mcu-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, close the pty and remove the symlink."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self._unplug_now()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ faults

    def noise(self, nbytes: int = 64) -> None:
        """Write ``nbytes`` random bytes (zeros included) between two frames."""
        self._command("noise", nbytes)

    def flip_bits(self, frames: int = 1) -> None:
        """Flip one random bit in each of the next ``frames`` frames (delimiter included)."""
        self._command("flip", frames)

    def drop(self, frames: int = 1) -> None:
        """Do not send the next ``frames`` frames (their counters are still used up)."""
        self._command("drop", frames)

    def reset(self) -> None:
        """Reset the MCU: cut the current frame, new boot id, counter and clock from zero, boot HELLO."""
        self._command("reset")

    def unplug(self, down_s: float = 1.0, reset: bool = False) -> None:
        """Close the pty now and recreate it behind the same symlink after ``down_s`` (USB unplug)."""
        self._command("unplug", down_s, reset)

    def set_fault(self, fault: str) -> None:
        """Change the simulated machine condition (a signal_model class) from the next sample."""
        self._command("fault", fault)

    def _command(self, name: str, *args: Any) -> None:
        self._cmds.put((name, args))
        self._wake.set()

    # ------------------------------------------------------------------------------------------- state

    def _boot(self, first: bool = False) -> None:
        self.boot_id = int(self.rng.integers(0, 2**32))
        self._enc = FrameEncoder()
        self._boot_mono = time.monotonic()
        self._stream = signal_model.VibrationStream(self.cfg.fault, self.rng, rate_hz=self._rate)
        self._stream_t0_us = 10_000  # first sample 10 ms after boot
        self._index = 0
        self._next_hb_us = 0
        self._dropped_samples = 0
        if not first:
            self.counts["resets"] += 1

    def mcu_us(self, now: float | None = None) -> int:
        """The simulated MCU's clock: µs since boot, running ``drift_ppm`` fast."""
        t = (time.monotonic() if now is None else now) - self._boot_mono
        return int(t * 1e6 * (1 + self.cfg.drift_ppm * 1e-6))

    def _sensor(self) -> SensorInfo:
        return SensorInfo(0, SensorKind.ACCELEROMETER, SampleFormat.I16, 3, self._rate, self.cfg.scale, 0.0, "g")

    # --------------------------------------------------------------------------------------------- pty

    def _plug(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.slave_path = os.ttyname(self._slave)
        self._rx = FrameDecoder()
        self._tx.clear()
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.symlink(self.slave_path, tmp)
            os.replace(tmp, self.link)
        log.info("simulator pty %s%s", self.slave_path, f" (link {self.link})" if self.link else "")

    def _unplug_now(self) -> None:
        if self.link:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1

    # ----------------------------------------------------------------------------------------- sending

    def _emit(self, wire: bytes, *, fault_ok: bool = True) -> bool:
        """Queue one frame's bytes, applying pending drop/flip faults; False if it was not sent intact."""
        self.counts["frames"] += 1
        if self._master < 0:
            self.counts["frames_unplugged"] += 1
            return False
        if fault_ok and self._faults.drop:
            self._faults.drop -= 1
            self.counts["frames_dropped"] += 1
            return False
        intact = True
        if fault_ok and self._faults.flip:
            self._faults.flip -= 1
            buf = bytearray(wire)
            bit = int(self.rng.integers(0, len(buf) * 8))
            buf[bit // 8] ^= 1 << (bit % 8)
            wire, intact = bytes(buf), False
            self.counts["frames_flipped"] += 1
        return self._write(wire) and intact

    def _write(self, data: bytes) -> bool:
        if self._master < 0:
            return False
        if len(self._tx) + len(data) > _TX_CAP:
            self.counts["tx_overflow"] += 1
            return False
        self._tx += data
        self._flush()
        return True

    def _flush(self) -> None:
        while self._tx and self._master >= 0:
            try:
                n = os.write(self._master, self._tx)
            except BlockingIOError:
                return
            except OSError:
                return
            del self._tx[:n]

    def _send_hello(self, boot: bool = False) -> None:
        hello = Hello(self.cfg.fw_version, self.boot_id, self.mcu_us(), self.cfg.uid, (self._sensor(),))
        if boot:
            self._write(b"\x00")  # ends whatever partial frame the line held
        self._emit(self._enc.encode(hello, flags=FLAG_BOOT if boot else 0), fault_ok=not boot)

    # ------------------------------------------------------------------------------------------- loop

    def _run(self) -> None:
        schedule = {
            "noise": self.cfg.noise_every_s,
            "flip": self.cfg.flip_every_s,
            "drop": self.cfg.drop_every_s,
            "reset": self.cfg.reset_every_s,
            "unplug": self.cfg.unplug_every_s,
        }
        due = {k: time.monotonic() + v for k, v in schedule.items() if v > 0}
        while not self._stop.is_set():
            now = time.monotonic()
            for name, at in list(due.items()):
                if now >= at:
                    due[name] = now + schedule[name]
                    args = {"noise": (self.cfg.noise_bytes,), "unplug": (self.cfg.unplug_for_s, False)}
                    self._cmds.put((name, args.get(name, (1,) if name in ("flip", "drop") else ())))
            self._do_commands()
            if self._unplugged_until is not None and now >= self._unplugged_until:
                self._unplugged_until = None
                self._plug()
                if self._reset_on_replug:
                    self._boot()
                self._send_hello(boot=self._reset_on_replug)
            self._receive()
            wait_s = self._produce()
            self._flush()
            self._wake.wait(min(wait_s, 0.005 if self._tx else 0.02))
            self._wake.clear()

    def _do_commands(self) -> None:
        while True:
            try:
                name, args = self._cmds.get_nowait()
            except queue.Empty:
                return
            if name == "noise":
                noise = self.rng.integers(0, 256, size=int(args[0]), dtype=np.uint8).tobytes()
                self.counts["noise_bytes"] += len(noise)
                self._write(noise)
            elif name == "flip":
                self._faults.flip += int(args[0])
            elif name == "drop":
                self._faults.drop += int(args[0])
            elif name == "fault":
                self._stream.fault = str(args[0])
            elif name == "reset":
                partial = self._enc.encode(Heartbeat(self.mcu_us()))
                self._write(partial[: max(1, len(partial) // 2)])  # cut mid-frame, as a reset does
                self._boot()
                self._send_hello(boot=True)
            elif name == "unplug" and self._master >= 0:
                self.counts["unplugs"] += 1
                self._unplug_now()
                self._unplugged_until = time.monotonic() + float(args[0])
                self._reset_on_replug = bool(args[1])

    def _receive(self) -> None:
        if self._master < 0:
            return
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        for frame in self._rx.feed(data):
            self.counts["rx_frames"] += 1
            if isinstance(frame, HelloRequest):
                self._send_hello()
            elif isinstance(frame, (Ping, TimeSync)):
                self._emit(self._enc.encode(Pong(frame.nonce, self.mcu_us())), fault_ok=False)
            elif isinstance(frame, Config):
                self._configure(frame)

    def _configure(self, cfg: Config) -> None:
        try:
            stream = signal_model.VibrationStream(self._stream.fault, self.rng, rate_hz=cfg.rate_hz)
        except ValueError as e:
            self._emit(self._enc.encode(ErrorReport(2, f"CONFIG rejected: {e}"[:200])), fault_ok=False)
            return
        self._rate = float(cfg.rate_hz)
        self._stream = stream
        self._stream_t0_us = self.mcu_us() + 1000
        self._index = 0
        self._send_hello()

    def _produce(self) -> float:
        """Send every block and heartbeat that is due; seconds until the next one."""
        n = self.cfg.block_samples
        period_us = 1e6 / self._rate
        now_us = self.mcu_us()
        while True:
            t_first = self._stream_t0_us + round(self._index * period_us)
            t_last = self._stream_t0_us + round((self._index + n - 1) * period_us)
            if now_us < t_last:
                break
            values = self._stream.next(n)
            raw = np.clip(np.rint(values / self.cfg.scale), -32768, 32767).astype(np.int16)
            ok = self._emit(self._enc.encode(Samples.from_array(0, t_first, raw)))
            self.counts["samples"] += n
            if self.cfg.record:
                self.history.append(SentBlock(self.boot_id, t_first, raw, ok))
            self._index += n
        if now_us >= self._next_hb_us:
            self._emit(self._enc.encode(Heartbeat(now_us, self._dropped_samples)), fault_ok=False)
            self._next_hb_us = now_us + int(self.cfg.heartbeat_s * 1e6)
        next_us = self._stream_t0_us + round((self._index + n - 1) * period_us)
        return max(0.0, (min(next_us, self._next_hb_us) - now_us) / 1e6)


# ------------------------------------------------------------------------------------------------ CLI


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m firmware_bridge.simulator",
        description="Simulated microcontroller on a pty speaking the firmware_bridge protocol.",
    )
    p.add_argument("--link", help="symlink to create to the pty slave (like /dev/serial/by-id/...)")
    p.add_argument("--path-file", help="write the path to open (link or slave) to this file")
    p.add_argument("--rate", type=float, default=signal_model.SAMPLE_RATE_HZ, help="sample rate, Hz")
    p.add_argument("--block", type=int, default=32, help="samples per SAMPLES frame")
    p.add_argument("--fault", default="normal", choices=signal_model.CLASSES, help="machine condition")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--drift-ppm", type=float, default=0.0, help="MCU clock error in ppm")
    p.add_argument("--noise-every", type=float, default=0.0, metavar="S", help="noise burst every S seconds")
    p.add_argument("--noise-bytes", type=int, default=64)
    p.add_argument("--flip-every", type=float, default=0.0, metavar="S", help="flip a bit in a frame every S s")
    p.add_argument("--drop-every", type=float, default=0.0, metavar="S", help="drop a frame every S seconds")
    p.add_argument("--reset-every", type=float, default=0.0, metavar="S", help="reset the MCU every S seconds")
    p.add_argument("--unplug-every", type=float, default=0.0, metavar="S", help="unplug every S seconds")
    p.add_argument("--unplug-for", type=float, default=1.0, metavar="S", help="how long an unplug lasts")
    p.add_argument("--duration", type=float, default=0.0, help="exit after S seconds (0: run until killed)")
    p.add_argument(
        "--control-stdin", action="store_true",
        help="read commands from stdin: noise N | flip N | drop N | reset | unplug S [reset] | fault NAME | quit",
    )
    return p.parse_args(argv)


def _control(sim: Simulator, stop: threading.Event) -> None:
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        try:
            if cmd == "noise":
                sim.noise(int(args[0]) if args else 64)
            elif cmd == "flip":
                sim.flip_bits(int(args[0]) if args else 1)
            elif cmd == "drop":
                sim.drop(int(args[0]) if args else 1)
            elif cmd == "reset":
                sim.reset()
            elif cmd == "unplug":
                sim.unplug(float(args[0]) if args else 1.0, reset="reset" in args[1:])
            elif cmd == "fault":
                sim.set_fault(args[0])
            elif cmd == "quit":
                break
            else:
                print(f"unknown command {cmd!r}", file=sys.stderr, flush=True)
        except (ValueError, IndexError) as e:
            print(f"bad command {line.strip()!r}: {e}", file=sys.stderr, flush=True)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM/SIGINT, ``--duration`` or ``quit`` on stdin."""
    a = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = SimConfig(
        rate_hz=a.rate, block_samples=a.block, fault=a.fault, seed=a.seed, drift_ppm=a.drift_ppm,
        noise_every_s=a.noise_every, noise_bytes=a.noise_bytes, flip_every_s=a.flip_every,
        drop_every_s=a.drop_every, reset_every_s=a.reset_every, unplug_every_s=a.unplug_every,
        unplug_for_s=a.unplug_for,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: PyFrame | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim = Simulator(a.link, cfg).start()
    try:
        print(sim.path, flush=True)
        if a.path_file:
            tmp = f"{a.path_file}.tmp"
            with open(tmp, "w") as f:
                f.write(sim.path + "\n")
            os.replace(tmp, a.path_file)
        if a.control_stdin:
            threading.Thread(target=_control, args=(sim, stop), daemon=True).start()
        stop.wait(a.duration if a.duration > 0 else None)
    finally:
        sim.stop()
        log.info("simulator stopped: %s", dict(sim.counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
