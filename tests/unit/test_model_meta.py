"""Model metadata: the shipped JSON parses; every mistake names the file and the key."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest

from agent.model_meta import ModelMeta, load_model_meta

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(REPO, "models", "vibration-int8.json")

GOOD: dict[str, Any] = {
    "name": "vibration",
    "version": 1,
    "labels": ["normal", "imbalance", "misalignment", "bearing_fault"],
    "input_shape": [1, 128, 3],
    "input_dtype": "int8",
    "output_dtype": "int8",
    "sample_rate_hz": 1000.0,
    "window": 128,
    "channels": ["x", "y", "z"],
    "unit": "g",
    "normalisation": {"mean": [0.0, 1.0, 0.0], "std": [0.2, 0.2, 0.1]},
    "sha256": "e965f1c19335edc11146b267c78a27b37392f316a60a9bc0b6a459ac46ebf5d1",
    "heldout_accuracy": 0.99,
    "training": {"seed": 1},
}


def test_good_dict() -> None:
    m = ModelMeta.from_dict(GOOD, "m.json")
    assert m.labels == ("normal", "imbalance", "misalignment", "bearing_fault")
    assert m.input_shape == (1, 128, 3) and m.window == 128 and m.channels == 3
    assert m.channel_names == ("x", "y", "z") and m.unit == "g" and m.version == "1"
    assert m.mean == (0.0, 1.0, 0.0) and m.std == (0.2, 0.2, 0.1)
    assert m.extra == {"training": {"seed": 1}}
    assert m.source == "m.json"


@pytest.mark.skipif(not os.path.exists(SHIPPED), reason="models/vibration-int8.json not built yet")
def test_shipped_metadata_loads() -> None:
    m = load_model_meta(SHIPPED)
    assert m.name == "vibration" and m.window == 128 and m.channels == 3 and len(m.labels) == 4
    assert m.sha256 is not None and len(m.sha256) == 64


def test_channel_count_and_scalar_normalisation() -> None:
    d = copy.deepcopy(GOOD)
    d["channels"] = 3
    d["normalisation"] = {"mean": 0, "std": 2}
    m = ModelMeta.from_dict(d, "m.json")
    assert m.channels == 3 and m.mean == (0.0, 0.0, 0.0) and m.std == (2.0, 2.0, 2.0)


def mutate(path: list[str], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(GOOD)
    target = d
    for k in path[:-1]:
        target = target[k]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (["labels"], KeyError, "labels"),
        (["labels"], [], "labels"),
        (["labels"], ["a", "a", "b", "c"], "labels"),
        (["input_shape"], [1, 64, 3], "input_shape"),
        (["input_shape"], [2, 128, 3], "input_shape"),
        (["input_shape"], "1x128x3", "input_shape"),
        (["input_dtype"], "int4", "input_dtype"),
        (["sample_rate_hz"], -1, "sample_rate_hz"),
        (["sample_rate_hz"], "fast", "sample_rate_hz"),
        (["window"], 0, "window"),
        (["window"], True, "window"),
        (["channels"], ["x", "y"], "input_shape"),
        (["normalisation"], KeyError, "normalisation"),
        (["normalisation", "std"], [1, 0, 1], "normalisation.std"),
        (["normalisation", "mean"], [1, 2], "normalisation.mean"),
        (["normalisation", "mean"], KeyError, "normalisation.mean"),
        (["sha256"], "ABC", "sha256"),
        (["heldout_accuracy"], 1.5, "heldout_accuracy"),
        (["version"], [1], "version"),
    ],
)
def test_each_mistake_names_the_file_and_key(path: list[str], value: Any, key: str) -> None:
    with pytest.raises(ValueError) as err:
        ModelMeta.from_dict(mutate(path, value), "/etc/models/v.json")
    msg = str(err.value)
    assert msg.startswith("/etc/models/v.json: ") and f" {key}: " in msg, msg


def test_load_errors_name_the_file(tmp_path: Any) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=r"nope\.json: cannot read"):
        load_model_meta(str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: expected JSON"):
        load_model_meta(str(bad))
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(GOOD))
    assert load_model_meta(str(ok)).source == str(ok)
    top = tmp_path / "list.json"
    top.write_text("[]")
    with pytest.raises(ValueError, match="top level"):
        load_model_meta(str(top))
