"""B1 and B2: how close the agent's pipeline and delivery path come to the runtime's and the crypto's limits.

B1 - pipeline records/s with the MobileNetV2 int8 model (``models/bench-mobilenetv2-int8.tflite``) against
a raw ``invoke()`` loop on the same model, in the same process, runs interleaved (raw, pipeline, raw, ...)
so machine noise hits both alike. The pipeline is the agent's ``PipelineRunner`` (windowing, quantize,
input sha256, invoke, payload, draft onto the bounded queue) fed by an in-memory camera-like source
(pre-made 96x96x3 frames: the figure measures the agent, not an image generator); a drain thread empties
the queue in batches the way the committer does.

B2 - signed, committed and broker-acknowledged records/s: the whole agent (``agent.service.Agent``:
simulated vibration source in non-realtime mode, 17 KB model, P-256 file key, SQLite outbox with
synchronous=FULL, delivery ``broker``, i.e. a row is deleted on PUBACK) against a private Mosquitto; the
figure is PUBACKs/s over the measuring window after a warm-up. Baselines in the same child process: a raw
``invoke()`` loop on the 17 KB model and a raw P-256 sign loop. Each run is a fresh child process.

B2m - the same agent and figure, but the pipeline's source replays samples recorded in memory from that
simulated source (one 120 s cycle of all four classes, looped with continuous time stamps) instead of
synthesising them: on a device the samples come from a serial port, not from the signal model, so B2m is
the agent's own rate and B2 the rate of agent plus simulator. Both rows are reported.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    MOBILENET_MODEL,
    VIBRATION_MODEL,
    child_main,
    fmt,
    median,
    proc_cpu_seconds,
    row,
    run_child,
    spread,
    tempdir,
    write_agent_config,
)

B1_GOAL = 0.95
B2_GOAL = 8000.0


# ----- baselines ---------------------------------------------------------------------------------------------
def raw_invoke_rate(model: Path, seconds: float) -> float:
    """invoke()/s of a bare interpreter on ``model`` (input zeros, 1 thread): the runtime's own limit."""
    import numpy as np

    from agent.inference import _load_runtime

    interp_cls, _ = _load_runtime()
    interp = interp_cls(model_path=str(model), num_threads=1)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    invoke = interp.invoke
    for _ in range(20):
        invoke()
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(50):
            invoke()
        n += 50
        t = time.perf_counter()
        if t >= deadline:
            return n / (t - t0)


def raw_sign_rate(seconds: float, key_path: Path | None = None) -> float:
    """P-256 signs/s over a 300-byte message with the agent's signer class (the crypto's limit)."""
    from provisioning import SoftwareSigner, load_file_signer

    signer = load_file_signer(key_path) if key_path else SoftwareSigner.generate("p256")
    msg = bytes(range(256)) + bytes(44)
    sign = signer.sign
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(100):
            sign(msg)
        n += 100
        t = time.perf_counter()
        if t >= deadline:
            return n / (t - t0)


# ----- B1 ----------------------------------------------------------------------------------------------------
def _mobilenet_meta() -> Any:
    """Metadata for the benchmark-only MobileNetV2 (its JSON has no labels: weights are random)."""
    from agent.model_meta import ModelMeta

    return ModelMeta(
        name="bench-mobilenetv2", version="1", labels=tuple(f"class{i}" for i in range(10)),
        input_shape=(1, 96, 96, 3), input_dtype="int8", output_dtype="int8", sample_rate_hz=96 * 96 * 30.0,
        window=96 * 96, channels=3, channel_names=("r", "g", "b"), unit="", mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), source=str(MOBILENET_MODEL),
    )


class FrameSource:
    """Pre-made frames (96*96 samples x 3 channels in [-1, 1]) as fast as they are taken."""

    name = "frames"

    def __init__(self, rate_hz: float) -> None:
        import numpy as np

        rng = np.random.default_rng(7)
        self._frames = [rng.uniform(-1, 1, (96 * 96, 3)).astype(np.float32) for _ in range(8)]
        self._rate = rate_hz
        self._closed = threading.Event()

    def blocks(self) -> Iterator[Any]:
        from agent.sources.base import SampleBlock

        t0 = int(time.time() * 1e6)
        n = 0
        per_frame_us = 96 * 96 * 1e6 / self._rate
        while not self._closed.is_set():
            yield SampleBlock(t0 + round(n * per_frame_us), self._rate, self._frames[n % 8])
            n += 1

    def close(self) -> None:
        self._closed.set()

    def counters(self) -> dict[str, int]:
        return {}


def _pipeline_rate(seconds: float) -> float:
    """Drafts/s out of a ``PipelineRunner`` on MobileNetV2 (fresh runner, warmed up first)."""
    from agent.inference import Model
    from agent.outbox import Draft
    from agent.pipeline import PipelineRunner
    from agent.settings import PipelineConfig, ReplaySourceConfig

    meta = _mobilenet_meta()
    model = Model.load(str(MOBILENET_MODEL), meta)
    cfg = PipelineConfig(stream="camera", source=ReplaySourceConfig(path="(in memory)"), model=str(MOBILENET_MODEL),
                         metadata="(in memory)", window=96 * 96, hop=96 * 96)
    out: queue.Queue[Draft] = queue.Queue(maxsize=cfg.queue_windows * 4)
    source = FrameSource(meta.sample_rate_hz)
    runner = PipelineRunner(cfg, meta, model, source, "edge/v1/bench/result/camera", out, lambda: 0)  # type: ignore[arg-type]
    count = [0]
    stop = threading.Event()

    def drain() -> None:  # the cheapest consumer: wake every 5 ms, take everything waiting
        while not stop.wait(0.005):
            n = 0
            try:
                while True:
                    out.get_nowait()
                    n += 1
            except queue.Empty:
                pass
            count[0] += n

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    runner.start()
    try:
        warm = time.monotonic() + min(1.0, seconds / 2)
        while time.monotonic() < warm and not runner.done.is_set():
            time.sleep(0.05)
        c0, t0 = runner.stats.results, time.perf_counter()
        time.sleep(seconds)
        c1, t1 = runner.stats.results, time.perf_counter()
        if runner.failed:
            raise RuntimeError(f"pipeline failed: {runner.failed!r}")
    finally:
        runner.stop()
        runner.join(5.0)
        stop.set()
        drainer.join(2.0)
    return (c1 - c0) / (t1 - t0)


def child_b1(seconds: float, rounds: int) -> dict[str, Any]:
    """Interleaved raw-invoke and pipeline runs on MobileNetV2 in this process."""
    logging.basicConfig(level=logging.WARNING)
    if os.environ.get("BENCH_NO_SPLIT"):  # A/B switch for the split pipeline (docs/benchmarks.md)
        import agent.pipeline

        agent.pipeline.SPLIT_MIN_INPUT_ELEMENTS = 1 << 62
    raw, pipe = [], []
    for _ in range(rounds):
        raw.append(raw_invoke_rate(MOBILENET_MODEL, seconds))
        pipe.append(_pipeline_rate(seconds))
    return {"raw": raw, "pipeline": pipe}


def b1(quick: bool) -> list[dict[str, Any]]:
    res = run_child("bench_pipeline", "b1", {"seconds": 2.0 if quick else 4.0, "rounds": 3 if quick else 5})
    ratios = [p / r for p, r in zip(res["pipeline"], res["raw"], strict=True)]
    value = median(res["pipeline"])
    ratio = median(ratios)
    return [row("B1", "pipeline records/s, MobileNetV2 int8", value, "records/s",
                baseline=f"raw invoke() {fmt(median(res['raw']))}/s", ratio=ratio, goal=f"ratio ≥ {B1_GOAL}",
                passed=ratio >= B1_GOAL, note=f"ratio per round {spread(ratios)}")]


# ----- B2 ----------------------------------------------------------------------------------------------------
class _MemorySource:
    """Replays blocks recorded from a source, looped, with continuous time stamps (B2m).

    Built lazily around ``agent.sources.base.Source`` so this module imports nothing of the agent at load.
    """

    @staticmethod
    def make(stream: str, blocks: list[Any]) -> Any:
        from agent.sources.base import SampleBlock, Source

        class MemorySource(Source):
            name = "memory"

            def __init__(self) -> None:
                self.stream = stream
                self._closed = threading.Event()
                self._n = 0

            def blocks(self) -> Iterator[SampleBlock]:
                rate = blocks[0].rate_hz
                t0 = round(time.time() * 1e6)
                index = 0
                while True:
                    for blk in blocks:
                        if self._closed.is_set():
                            return
                        self._n += 1
                        yield SampleBlock(t0 + round(index * 1e6 / rate), rate, blk.samples, blk.clock_state)
                        index += blk.samples.shape[0]

            def close(self) -> None:
                self._closed.set()

            def counters(self) -> dict[str, int]:
                return {"blocks": self._n}

        return MemorySource()


def _recorded_blocks(cfg: Any, samples: int) -> list[Any]:
    """``samples`` worth of blocks from the simulated source ``cfg`` describes (arrays copied, contiguous)."""
    from agent.sources.simulated import SimulatedSource

    src = SimulatedSource("record", cfg)
    out, n = [], 0
    for blk in src.blocks():
        out.append(blk)
        n += blk.samples.shape[0]
        if n >= samples:
            break
    src.close()
    return out


def child_b2(seconds: float, warmup: float, baseline_s: float, source: str = "simulated") -> dict[str, Any]:
    """Full agent (in this process) against a private broker; PUBACKs/s over ``seconds`` after ``warmup``.

    ``source="memory"``: the pipeline replays samples recorded from the simulated source beforehand (B2m).
    """
    import psutil

    import agent.service as agent_service
    from agent.config import load_config
    from agent.service import Agent
    from bench.common import broker

    logging.basicConfig(level=logging.WARNING)
    work = tempdir("b2")
    with broker() as b, _removed(work):
        cycle_s = 30.0
        cfg_path = write_agent_config(
            work, b.url, delivery="broker",
            source={"type": "simulated", "fault": "cycle", "cycle_s": cycle_s, "realtime": False, "seed": 1,
                    "block_samples": int(os.environ.get("BENCH_BLOCK", "64"))})
        key_path = work / "keys" / "device.key"
        invoke = raw_invoke_rate(VIBRATION_MODEL, baseline_s)
        sign = raw_sign_rate(baseline_s, key_path)
        config = load_config(str(cfg_path))
        if source == "memory":
            from agent.settings import SimulatedSourceConfig

            src_cfg = config.pipelines[0].source
            assert isinstance(src_cfg, SimulatedSourceConfig)
            recorded = _recorded_blocks(src_cfg, round(4 * cycle_s * src_cfg.rate_hz))  # one whole cycle
            setattr(agent_service, "make_source",  # noqa: B010 - the Agent builds its sources through this name
                    lambda stream, cfg: _MemorySource.make(stream, recorded))
        agent = Agent(config)
        if os.environ.get("BENCH_FAKE_SIGN"):  # experiment only: what signing costs the whole agent
            from provisioning import load_file_signer

            real = load_file_signer(key_path)

            class _Fake:
                alg, kid = real.alg, real.kid

                def sign(self, data: bytes) -> bytes:
                    return bytes(64)

                def public_key(self) -> Any:
                    return real.public_key()

            agent._signer = _Fake()
        agent.start()
        try:
            assert agent.link is not None
            link = agent.link
            deadline = time.monotonic() + warmup
            while time.monotonic() < deadline:
                time.sleep(0.05)
            broker_proc = psutil.Process(b.proc.pid)
            bc0 = sum(broker_proc.cpu_times()[:2])
            cm = agent.committer
            assert cm is not None
            k0, c0 = cm.stats.commits, cm.stats.committed
            th0 = _thread_cpu()
            cs0 = _ctx_switches()
            p0, cpu0, t0 = link.core.counters.pubacks, proc_cpu_seconds(), time.perf_counter()
            time.sleep(seconds)
            p1, cpu1, t1 = link.core.counters.pubacks, proc_cpu_seconds(), time.perf_counter()
            th1 = _thread_cpu()
            cs1 = _ctx_switches()
            k1, c1 = cm.stats.commits, cm.stats.committed
            bc1 = sum(broker_proc.cpu_times()[:2])
            backlog = agent.outbox.depth if agent.outbox else 0
        finally:
            agent.stop()
    n = max(1, p1 - p0)
    return {"rate": (p1 - p0) / (t1 - t0), "cpu_us": (cpu1 - cpu0) / n * 1e6, "broker_cpu_us": (bc1 - bc0) / n * 1e6,
            "invoke": invoke, "sign": sign, "backlog": backlog,
            "batch": (c1 - c0) / max(1, k1 - k0),
            "ctx_switches": (cs1 - cs0) / n,
            "threads_cpu_us": {k: round((v - th0.get(k, 0.0)) / n * 1e6, 1) for k, v in th1.items()
                               if v - th0.get(k, 0.0) > 0.001}}


def child_b2n(seconds: float, warmup: float, source: str = "simulated") -> dict[str, Any]:
    """B2n: the same work written the obvious way, on one thread (the architecture's baseline).

    Per window: infer (``Model.infer``), a payload dict, ``envelope.seal`` with the next seq, one INSERT and
    one fsync'd COMMIT (WAL, synchronous=FULL), ``publish(qos=1)`` and ``wait_for_publish()``, then DELETE
    the row (delivery ``broker``). paho runs its network loop with ``loop_start()``, as its docs show.
    """
    import sqlite3

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.config import load_config
    from agent.inference import Model
    from agent.model_meta import load_model_meta
    from agent.pipeline import result_payload
    from agent.settings import SimulatedSourceConfig
    from agent.sources.simulated import SimulatedSource
    from agent.windowing import Windower
    from bench.common import broker
    from envelope import RecordHeader, seal
    from provisioning import open_signer

    logging.basicConfig(level=logging.WARNING)
    work = tempdir("b2n")
    with broker() as b, _removed(work):
        cfg_path = write_agent_config(
            work, b.url, delivery="broker",
            source={"type": "simulated", "fault": "cycle", "cycle_s": 30.0, "realtime": False, "seed": 1,
                    "block_samples": int(os.environ.get("BENCH_BLOCK", "64"))})
        config = load_config(str(cfg_path))
        pc = config.pipelines[0]
        src_cfg = pc.source
        assert isinstance(src_cfg, SimulatedSourceConfig)
        meta = load_model_meta(pc.metadata)
        model = Model.load(pc.model, meta)
        signer = open_signer(config.key_uri)
        if source == "memory":
            blocks: Iterator[Any] = _MemorySource.make(pc.stream, _recorded_blocks(
                src_cfg, round(4 * 30.0 * src_cfg.rate_hz))).blocks()
        else:
            blocks = SimulatedSource(pc.stream, src_cfg).blocks()
        windower = Windower(pc.stream, pc.window, pc.hop, meta.channels)
        db = sqlite3.connect(str(work / "naive.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, topic TEXT, payload BLOB)")
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-naive",
                             protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", b.port)
        client.loop_start()
        topic = f"edge/v1/{config.device_id}/result/{pc.stream}"
        seq = 0
        counts: list[tuple[float, int, float]] = []
        t_end = time.perf_counter() + warmup + seconds
        t_mark = time.perf_counter() + warmup
        try:
            for block in blocks:
                for w in windower.push(block):
                    inf = model.infer(w.data)
                    seq += 1
                    header = RecordHeader(kind="result", device_id=config.device_id, stream=pc.stream, epoch=1,
                                          seq=seq, iat=int(time.time()), capture_ms=w.t_end_us // 1000,
                                          clock_state=w.clock_state, model_sha256=inf.model_sha256,
                                          input_sha256=inf.input_sha256)
                    data = seal(signer, header, result_payload(meta.labels, inf.scores, pc.score_threshold,
                                                               inf.latency_us, w))
                    db.execute("BEGIN")
                    db.execute("INSERT INTO records VALUES (?, ?, ?)", (seq, topic, data))
                    db.execute("COMMIT")
                    client.publish(topic, data, qos=1).wait_for_publish(10)
                    db.execute("DELETE FROM records WHERE seq = ?", (seq,))
                now = time.perf_counter()
                if now >= t_mark:
                    counts.append((now, seq, proc_cpu_seconds()))
                    t_mark = float("inf")
                if now >= t_end:
                    counts.append((now, seq, proc_cpu_seconds()))
                    break
        finally:
            client.loop_stop()
            client.disconnect()
            db.close()
    (t0, s0, c0), (t1, s1, c1) = counts[0], counts[-1]
    n = max(1, s1 - s0)
    return {"rate": (s1 - s0) / (t1 - t0), "cpu_us": (c1 - c0) / n * 1e6}


@contextmanager
def _removed(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _ctx_switches() -> int:
    """Voluntary + involuntary context switches of all threads of this process."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        total += sum(int(ln.split()[-1]) for ln in text.splitlines() if "ctxt_switches:" in ln)
    return total


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per named thread of this process (from /proc via psutil)."""
    import psutil

    names = {t.native_id: t.name for t in threading.enumerate()}
    return {names.get(t.id, str(t.id)): t.user_time + t.system_time for t in psutil.Process().threads()}


def b2(quick: bool) -> list[dict[str, Any]]:
    """B2 (simulated source), B2m (in-memory replay of its samples) and B2n (the naive loop), interleaved."""
    runs: dict[str, list[dict[str, Any]]] = {"simulated": [], "memory": [], "naive": []}
    seconds = 3.0 if quick else 8.0
    for _ in range(3 if quick else 5):
        for source, got in runs.items():
            if source == "naive":
                got.append(run_child("bench_pipeline", "b2n", {"seconds": seconds / 2, "warmup": 1.0}))
            else:
                got.append(run_child("bench_pipeline", "b2", {
                    "seconds": seconds, "warmup": 2.0, "baseline_s": 0.5 if quick else 1.0, "source": source}))
    naive = median(r["rate"] for r in runs["naive"])
    naive_cpu = median(r["cpu_us"] for r in runs["naive"])
    sign = median(r["sign"] for r in runs["simulated"])
    return (_b2_row("B2", "signed + committed + PUBACKed records/s, 17 KB model", runs["simulated"], "", naive)
            + _b2_row("B2m", "B2 with an in-memory replay of the simulator's samples", runs["memory"],
                      "; source: recorded samples, no synthesis (the device case: serial input)", naive)
            + [row("B2n", "B2 written the obvious way: one thread, a commit and a PUBACK wait per record", naive,
                   "records/s", baseline=f"raw sign {fmt(sign)}/s", ratio=naive / sign, goal="report",
                   note=f"{spread(r['rate'] for r in runs['naive'])}; CPU {fmt(naive_cpu)} µs/record; the "
                        "same-run baseline of B2's ratio (what the architecture buys)")])


def _b2_row(rid: str, title: str, runs: list[dict[str, Any]], extra: str, naive: float) -> list[dict[str, Any]]:
    rates = [r["rate"] for r in runs]
    value = median(rates)
    invoke = median(r["invoke"] for r in runs)
    sign = median(r["sign"] for r in runs)
    cpu = median(r["cpu_us"] for r in runs)
    bcpu = median(r["broker_cpu_us"] for r in runs)
    threads: dict[str, list[float]] = {}
    for r in runs:
        for k, v in r.get("threads_cpu_us", {}).items():
            threads.setdefault(k, []).append(v)
    per_thread = ", ".join(f"{k.removeprefix('pipeline-')} {fmt(median(v))}"
                           for k, v in sorted(threads.items()) if median(v) >= 1.0)
    return [row(rid, title, value, "records/s",
                baseline=f"naive loop (B2n) {fmt(naive)}/s; raw invoke() {fmt(invoke)}/s; raw sign {fmt(sign)}/s",
                ratio=value / naive if naive else None, goal=f"≥ {B2_GOAL:,.0f} records/s", passed=value >= B2_GOAL,
                note=f"{spread(rates)}; agent CPU {fmt(cpu)} µs/record ({per_thread}), broker {fmt(bcpu)} "
                     "µs/record; ratio vs the naive loop" + extra)]


def run(quick: bool) -> list[dict[str, Any]]:
    """B1 and B2 rows."""
    return b1(quick) + b2(quick)


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    child_main(globals())
