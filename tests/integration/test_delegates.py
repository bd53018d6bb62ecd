"""Hardware delegates without hardware: every error path of ``[pipeline.delegate]`` and a real external delegate
(a no-op one compiled here) loaded through LiteRT's ``load_delegate``. Real accelerators: tests/hardware/."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np
import pytest

from agent.config import load_config
from agent.delegates import DelegateError, delegate_name
from agent.inference import Model
from agent.model_meta import load_model_meta
from agent.service import Agent
from agent.settings import DelegateConfig
from envelope import open_record
from tests.support.delegates import CC, build_noop_delegate
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.tuf_repo import MODEL_V1, MODEL_V2, ReleaseRepo, RepoServer
from tests.support.updates import running_agent, updates_config, write
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler to build the no-op delegate")
META = load_model_meta(str(MODEL_V1.with_suffix(".json")))


@pytest.fixture(scope="module")
def noop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CC is None:
        pytest.skip("no C compiler to build the no-op delegate")
    return build_noop_delegate(tmp_path_factory.mktemp("delegate"))


def outputs(m: Model) -> list[list[int]]:
    rng = np.random.default_rng(1)
    return [m.run_raw(rng.integers(-128, 127, (1, 128, 3), endpoint=True).astype(np.int8).tobytes())[0]
            for _ in range(4)]


def test_names_from_library_files() -> None:
    assert delegate_name("/usr/lib/aarch64-linux-gnu/libedgetpu.so.1") == "edgetpu"
    assert delegate_name("libnoop_delegate.so") == "noop_delegate"
    assert delegate_name("/opt/x/tensorrt_delegate.so.8.6.1") == "tensorrt_delegate"


@pytest.mark.parametrize(("library", "cause"), [
    ("/nonexistent/libedgetpu.so.1", "cannot open the library: /nonexistent/libedgetpu.so.1: cannot open shared "
                                     "object file"),
    ("libc.so.6", "not an external TFLite delegate: no tflite_plugin_create_delegate"),
])
def test_unusable_libraries_fail_with_library_and_cause(library: str, cause: str) -> None:
    with pytest.raises(DelegateError) as e:
        Model.load(str(MODEL_V1), META, delegate=DelegateConfig(library))
    assert e.value.library == library and cause in str(e.value)
    assert str(MODEL_V1) in str(e.value) and "on_failure" in str(e.value)


@needs_cc
def test_a_delegate_that_refuses_says_why(noop: Path) -> None:
    with pytest.raises(DelegateError, match="asked to fail"):
        Model.load(str(MODEL_V1), META, delegate=DelegateConfig(str(noop), (("fail", "1"),)))


def test_cpu_fallback_runs_and_says_so() -> None:
    m = Model.load(str(MODEL_V1), META, delegate=DelegateConfig("/nonexistent/libedgetpu.so.1",
                                                                 on_failure="cpu_fallback"))
    ds = m.delegate_state
    assert ds.state == "cpu_fallback" and ds.library == "/nonexistent/libedgetpu.so.1" and m.runtime_id == "cpu"
    assert ds.error is not None and "cannot open" in ds.error
    assert outputs(m) == outputs(Model.load(str(MODEL_V1), META))


@needs_cc
def test_a_real_external_delegate_loads_and_runs(noop: Path) -> None:
    m = Model.load(str(MODEL_V1), META, delegate=DelegateConfig(str(noop), (("threads", "1"),)))
    assert m.delegate_state.state == "loaded" and m.runtime_id == "noop_delegate"
    assert m.delegate_state.doc() == {"library": str(noop), "runtime": "noop_delegate", "state": "loaded",
                                      "error": None}
    assert outputs(m) == outputs(Model.load(str(MODEL_V1), META)), "it claims no node: the CPU's arithmetic"
    named = Model.load(str(MODEL_V1), META, delegate=DelegateConfig(str(noop), name="edgetpu"))
    assert named.runtime_id == "edgetpu"


def agent_conf(tmp: Path, device: str, url: str, delegate: dict) -> Path:
    from tests.support.agent_proc import agent_config

    cfg = agent_config(tmp, device, url)
    cfg["pipeline"][0]["delegate"] = delegate
    cfg["status"] = {"interval_s": 0.2}
    return write(tmp, cfg)


def test_agent_with_on_failure_fail_does_not_start(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    conf = agent_conf(tmp_path, f"dev-{unique_id}", mosquitto.url, {"library": "/nonexistent/libedgetpu.so.1"})
    agent = Agent(load_config(str(conf)))
    with pytest.raises(DelegateError, match=r"/nonexistent/libedgetpu\.so\.1"):
        agent.start()
    assert not agent.pipelines


def test_agent_falls_back_to_cpu_and_says_so_in_status_and_birth(tmp_path: Path, mosquitto: Mosquitto,
                                                                 unique_id: str) -> None:
    device = f"dev-{unique_id}"
    conf = agent_conf(tmp_path, device, mosquitto.url, {"library": "/nonexistent/libedgetpu.so.1",
                                                        "on_failure": "cpu_fallback"})
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/status"])
    try:
        with running_agent(conf) as agent:
            wait_for(lambda: rec.count("/status") >= 1, timeout=20, what="birth record")
            doc = agent.status_doc()
            assert doc["state"] == "degraded"
            assert any("delegate /nonexistent/libedgetpu.so.1 not in use, running on the CPU" in d
                       for d in doc["degraded"])
            assert doc["telemetry"]["pipelines"]["vibration"]["model"]["delegate"]["state"] == "cpu_fallback"
        birth = open_record(rec.snapshot()[0].payload).payload()
    finally:
        rec.close()
    d = birth["models"][0]["delegate"]
    assert d["state"] == "cpu_fallback" and "cannot open" in d["error"]


@needs_cc
def test_golden_vectors_are_judged_for_the_delegate_runtime(noop: Path, tmp_path: Path, mosquitto: Mosquitto,
                                                            unique_id: str) -> None:
    """A target may carry vectors per runtime: under the delegate, its own vectors decide (here: wrong ones)."""
    from provisioning.model_golden import compute_golden

    rel = ReleaseRepo(tmp_path / "release")
    ins, outs, _ = compute_golden(MODEL_V2.read_bytes(), 3, 0)
    off = [[min(127, v + 3) if v < 120 else v - 3 for v in vec] for vec in outs]
    rel.add(MODEL_V2, 2, golden=(ins, {"cpu": outs, "noop_delegate": off}),
            tolerance={f"noop_delegate/{platform.machine()}": 2})
    device = f"dev-{unique_id}"
    with RepoServer(rel.dir) as srv:
        cfg = updates_config(tmp_path / "a", device, mosquitto.url, srv.url, rel.root_json)
        cfg["pipeline"][0]["delegate"] = {"library": str(noop)}
        with running_agent(write(tmp_path / "a", cfg)) as agent:
            assert agent.pipelines[0].model.runtime_id == "noop_delegate"
            st = agent.update_state
            assert st is not None
            wait_for(lambda: 2 in st.model("vibration").refused, timeout=30, what="v2 refused")
            reason = st.model("vibration").refused[2]
            assert f"on noop_delegate/{platform.machine()}" in reason and "3 steps > tolerance 2" in reason
            assert agent.pipelines[0].model.model_sha256 == hashlib.sha256(MODEL_V1.read_bytes()).digest()
