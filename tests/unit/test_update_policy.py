"""The pure update policy (agent.updates.policy): rollout share, reference time, choice, golden check, health."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.updates.policy import (
    HealthLimits,
    PipelineFit,
    choose,
    golden_check,
    in_rollout,
    judge_health,
    reference_time,
    rollout_bucket,
)
from provisioning.model_target import Golden, InputSpec, ModelTarget, Rollout, target_path

FIT = PipelineFit(window=128, channels=3, agent_version="0.1.0")
device_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{2,30}", fullmatch=True)


def target(version: int, *, share_bp: int = 10000, rollout_id: str | None = None, window: int = 128,
           min_agent: str = "0.1.0", model_id: str = "vibration") -> ModelTarget:
    sha = f"{version:064x}"
    return ModelTarget(path=target_path(model_id, version), length=10, sha256=sha, model_id=model_id,
                       version=version, min_agent_version=min_agent, input=InputSpec((1, window, 3), "int8", window, 3),
                       metadata_json=json.dumps({"sha256": sha}), golden=Golden((b"\0" * 3,), {"cpu": ((0,),)}),
                       rollout=Rollout(rollout_id or f"r{version}", share_bp))


def test_ten_percent_share_selects_ten_percent_of_1000_generated_ids() -> None:
    """The issue's check: over 1,000 generated device ids a 10 % share selects 10 % +- 3 %."""
    for rollout in ("vibration-2", "vibration-3", "edgetpu-canary"):
        ids = [f"dev-{uuid.UUID(int=i * 7919 + 13).hex[-12:]}" for i in range(1000)]
        chosen = sum(in_rollout(d, rollout, 1000) for d in ids)
        assert 70 <= chosen <= 130, (rollout, chosen)


@given(st.integers(0, 2**64), st.text(min_size=1, max_size=20))
def test_ten_percent_share_property(seed: int, rollout: str) -> None:
    """Any fleet of 1,000 ids generated from a seed, any rollout id."""
    ids = [f"d{hashlib.sha256(f'{seed}:{i}'.encode()).hexdigest()[:20]}" for i in range(1000)]
    chosen = sum(in_rollout(d, rollout, 1000) for d in ids)
    assert 70 <= chosen <= 130


@given(device_ids, st.text(max_size=20), st.integers(0, 10000), st.integers(0, 10000))
def test_a_larger_share_keeps_every_device_of_a_smaller_one(dev: str, rollout: str, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert not in_rollout(dev, rollout, lo) or in_rollout(dev, rollout, hi)
    assert in_rollout(dev, rollout, 10000) and not in_rollout(dev, rollout, 0)
    assert 0 <= rollout_bucket(dev, rollout) < 10000


def test_rollout_ids_shuffle_the_fleet() -> None:
    ids = [f"dev-{i:05d}" for i in range(1000)]
    a = {d for d in ids if in_rollout(d, "vibration-2", 1000)}
    b = {d for d in ids if in_rollout(d, "vibration-3", 1000)}
    assert len(a & b) < 40, "each rollout picks its own devices (about 1 % overlap expected)"


@given(st.floats(0, 2e9), st.none() | st.floats(0, 2e9), st.none() | st.floats(0, 2e9))
def test_reference_time_is_the_latest_known_clock(system: float, last: float | None, receipt: float | None) -> None:
    t = reference_time(system, last, receipt)
    assert t == max(x for x in (system, last, receipt) if x is not None)


def test_an_rtc_less_board_in_1970_judges_by_the_receipt_time() -> None:
    assert reference_time(3600.0, None, 1.7e9) == 1.7e9
    assert reference_time(3600.0, 1.69e9, None) == 1.69e9


def test_choose_the_highest_eligible_version_with_reasons_for_the_rest() -> None:
    ts = [target(1), target(2), target(3, share_bp=0), target(4, min_agent="9.0"), target(5, window=64),
          target(6), target(7)]
    c = choose(ts, "vibration", current=1, floor=1, refused={7: "golden vectors: 3 steps > 0"},
               device_id="dev-a", fit=FIT)
    assert c.target is not None and c.target.version == 6
    why = dict(c.skipped)
    assert why[7].startswith("refused earlier: golden vectors")
    assert "needs agent 9.0" in why[4] and "does not fit" in why[5] and "not in rollout" in why[3]
    assert "not newer" in why[1]


def test_rollback_below_the_floor_is_never_chosen() -> None:
    c = choose([target(1), target(2)], "vibration", current=1, floor=3, refused={}, device_id="d", fit=FIT)
    assert c.target is None and dict(c.skipped) == {2: "below the version floor 3", 1: "below the version floor 3"}
    c = choose([target(1), target(2)], "vibration", current=2, floor=2, refused={}, device_id="d", fit=FIT)
    assert c.target is None and dict(c.skipped)[1] == "below the version floor 2"


def test_the_floor_version_itself_may_be_fetched_again_when_not_running() -> None:
    """A device that lost its committed v2 file runs the shipped v1; v2 (= floor) is not below the floor."""
    c = choose([target(1), target(2)], "vibration", current=1, floor=2, refused={}, device_id="d", fit=FIT)
    assert c.target is not None and c.target.version == 2


@given(st.lists(st.integers(1, 30), unique=True, max_size=12), st.integers(0, 30), st.integers(0, 30),
       st.sets(st.integers(1, 30)), st.sets(st.integers(1, 30)))
def test_choose_properties(versions: list[int], current: int, floor: int, refused: set[int],
                           outside: set[int]) -> None:
    ts = [target(v, share_bp=0 if v in outside else 10000) for v in versions] + [target(99, model_id="other")]
    c = choose(ts, "vibration", current, floor, dict.fromkeys(refused, "x"), "dev-x", FIT)
    eligible = [v for v in versions if v > current and v >= floor and v not in refused and v not in outside]
    assert (c.target.version if c.target else None) == (max(eligible) if eligible else None)
    assert {v for v, _ in c.skipped} | ({c.target.version} if c.target else set()) == set(versions)


def test_golden_check_within_tolerance() -> None:
    exp = [[127, -128, 3], [0, 0, 0]]
    assert golden_check(exp, [[127, -128, 3], [0, 0, 0]], 0).ok
    r = golden_check(exp, [[126, -128, 3], [0, 2, 0]], 1)
    assert not r.ok and r.max_diff == 2 and r.worst == (1, 1)
    assert "vector 1 output 1: got 2, release build 0 (2 steps > tolerance 1)" in r.detail
    assert golden_check(exp, [[126, -128, 3], [0, 2, 0]], 2).ok
    assert not golden_check(exp, [[1, 2, 3]], 255).ok
    assert not golden_check(exp, [[1, 2], [0, 0, 0]], 255).ok


@given(st.lists(st.lists(st.integers(-128, 127), min_size=4, max_size=4), min_size=1, max_size=5),
       st.integers(0, 255), st.data())
def test_golden_check_property(exp: list[list[int]], tol: int, data: st.DataObject) -> None:
    got = [[x + data.draw(st.integers(-3, 3)) for x in v] for v in exp]
    worst = max(abs(a - b) for e, g in zip(exp, got, strict=True) for a, b in zip(e, g, strict=True))
    assert golden_check(exp, got, tol).ok == (worst <= tol)


def test_health_window() -> None:
    lim = HealthLimits(window_s=30, min_windows=5, latency_factor=4, latency_slack_us=100)
    assert judge_health(1, 1, ["boom"], [], 10, lim).state == "failed"
    assert judge_health(10, 10, [], [10.0] * 10, 10, lim).state == "watching"
    assert judge_health(31, 10, [], [10.0] * 10, 10, lim).state == "healthy"
    assert judge_health(31, 2, [], [10.0] * 2, 10, lim).state == "watching", "too few windows to judge"
    slow = judge_health(5, 10, [], [200.0] * 10, 10, lim)
    assert slow.state == "failed" and "median latency 200" in slow.reason
    assert judge_health(5, 10, [], [139.0] * 10, 10, lim).state == "watching"


@pytest.mark.parametrize("bad", ["", "latest", "1.x"])
def test_min_agent_version_must_be_numeric(bad: str) -> None:
    from provisioning.model_target import parse_agent_version

    with pytest.raises(ValueError, match="expected a version"):
        parse_agent_version(bad)


def test_status_table_shows_models_and_the_repository() -> None:
    from agent.status import render_table

    doc = {"device_id": "d", "healthy": True, "telemetry": {"updates": {
        "enabled": True, "state": "unreachable", "cause": "connect", "since": "2026-01-01T00:00:00+00:00",
        "last_check": "2026-01-01T03:00:00+00:00",
        "models": {"vibration": {"running": 2, "sha256": "ab" * 32, "floor": 2,
                                 "pending": {"version": 3, "state": "health_window"},
                                 "refused": {"4": "golden_mismatch: 3 steps"}, "reverted": {"5": "invoke error"}}}}}}
    text = render_table(doc)
    assert "unreachable (connect) since 2026-01-01T00:00:00+00:00; last check 2026-01-01T03:00:00+00:00" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("model vibration"))
    assert "v2 running (abababababab), floor 2; v3 pending (health_window)" in line
    assert "v4 refused: golden_mismatch: 3 steps" in line and "v5 reverted: invoke error" in line
