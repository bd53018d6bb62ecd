"""The signed target schema (provisioning.model_target): what the release tool writes is what the agent reads,
and every malformed field is refused with the target path and the key path in the message."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioning.model_target import Golden, InputSpec, InvalidTarget, ModelTarget, Rollout, target_path

SHA = "ab" * 32


def make(version: int = 2, share_bp: int = 10000, tolerance: dict[str, int] | None = None,
         outputs: dict[str, Any] | None = None) -> ModelTarget:
    return ModelTarget(path=target_path("vibration", version), length=100, sha256=SHA, model_id="vibration",
                       version=version, min_agent_version="0.1.0",
                       input=InputSpec((1, 4, 2), "int8", 4, 2),
                       metadata_json=json.dumps({"name": "vibration", "sha256": SHA, "window": 4}),
                       golden=Golden((bytes(8), bytes(range(8))),
                                     outputs or {"cpu": ((1, -2, 3), (4, 5, -128))}, tolerance or {}),
                       rollout=Rollout("vibration-2", share_bp))


def parse(t: ModelTarget, custom: Any = None) -> ModelTarget:
    return ModelTarget.from_target(t.path, t.length, {"sha256": t.sha256}, t.custom() if custom is None else custom)


def test_round_trip() -> None:
    t = make(tolerance={"cpu/aarch64": 1, "edgetpu": 2})
    assert parse(t) == t
    assert json.loads(json.dumps(t.custom())) == t.custom()


def test_custom_has_no_floats_canonical_json_cannot_sign_them() -> None:
    def walk(x: Any) -> None:
        assert not isinstance(x, float), x
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(make().custom())


@given(version=st.integers(1, 2**31), share=st.integers(0, 10000),
       tol=st.dictionaries(st.sampled_from(["cpu", "cpu/aarch64", "cpu/x86_64", "edgetpu/aarch64", "*"]),
                           st.integers(0, 255), max_size=4))
def test_round_trip_property(version: int, share: int, tol: dict[str, int]) -> None:
    t = make(version, share, tol)
    assert parse(t) == t


def test_tolerance_lookup_most_specific_first_default_zero() -> None:
    g = make(tolerance={"cpu/aarch64": 1, "edgetpu": 3, "*": 5}).golden
    assert g.tolerance_for("cpu", "aarch64") == 1
    assert g.tolerance_for("edgetpu", "aarch64") == 3
    assert g.tolerance_for("cpu", "x86_64") == 5
    assert make().golden.tolerance_for("cpu", "x86_64") == 0


def test_outputs_per_runtime_fall_back_to_cpu() -> None:
    g = make(outputs={"cpu": ((1, 2, 3), (4, 5, 6)), "edgetpu": ((1, 2, 4), (4, 5, 7))}).golden
    assert g.outputs_for("edgetpu") == ((1, 2, 4), (4, 5, 7))
    assert g.outputs_for("gpu") == ((1, 2, 3), (4, 5, 6))


def mutate(path: list[str | int], value: Any) -> dict[str, Any]:
    c = copy.deepcopy(make().custom())
    node: Any = c["edge"]
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return c


@pytest.mark.parametrize(("path", "value", "needle"), [
    (["format"], 2, "custom.edge.format"),
    (["model_id"], "Bad Id", "custom.edge.model_id"),
    (["version"], 0, "custom.edge.version"),
    (["version"], 3, "path"),  # path says version 2
    (["min_agent_version"], "latest", "custom.edge.min_agent_version"),
    (["input", "dtype"], "float64", "custom.edge.input.dtype"),
    (["metadata"], "{not json", "custom.edge.metadata"),
    (["metadata"], json.dumps({"sha256": "cd" * 32}), "custom.edge.metadata.sha256"),
    (["golden", "inputs", 0], "AAAA", "custom.edge.golden.inputs[0]"),
    (["golden", "outputs", "cpu", 1], [1, 2], "custom.edge.golden.outputs.cpu[1]"),
    (["golden", "outputs"], {"edgetpu": [[1, 2, 3], [1, 2, 3]]}, "custom.edge.golden.outputs.cpu"),
    (["golden", "tolerance", "cpu"], -1, "custom.edge.golden.tolerance.cpu"),
    (["golden", "tolerance", "cpu"], 1.5, "custom.edge.golden.tolerance.cpu"),
    (["rollout", "share_bp"], 10001, "custom.edge.rollout.share_bp"),
    (["rollout", "id"], KeyError, "custom.edge.rollout.id: missing"),
])
def test_malformed_fields_name_the_target_and_key(path: list[str | int], value: Any, needle: str) -> None:
    t = make()
    with pytest.raises(InvalidTarget) as e:
        parse(t, mutate(path, value))
    assert t.path in str(e.value) and needle in str(e.value)
    assert e.value.reason == "bad_target"


def test_not_an_edge_target() -> None:
    with pytest.raises(InvalidTarget, match="not an edge model"):
        ModelTarget.from_target("x/1/x.tflite", 10, {"sha256": SHA}, {"other": 1})
    with pytest.raises(InvalidTarget, match=r"hashes\.sha256"):
        ModelTarget.from_target("x/1/x.tflite", 10, {"sha512": SHA}, make().custom())
