"""Attack and failure suite of signed model updates (issue 14), each against a real repository served over
HTTP on loopback, and the agent's real updater (python-tuf ngclient, policy, swap) on a running pipeline.

In every attack the device keeps running the model it had, loads nothing it was not signed for, and says why
once in its log and in its status. The kill -9 cases run the real agent as a subprocess with a real broker.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.api.serialization.json import JSONSerializer

from agent.inference import FAULT_ENV
from provisioning.model_golden import compute_golden
from provisioning.model_repo import Expiry
from tests.integration.test_updates_swap import payload
from tests.support.tuf_repo import MODEL_V1, MODEL_V2, ReleaseRepo, RepoServer, endless, make_model_version, serve_bytes
from tests.support.updates import UpdaterRig
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

V1 = hashlib.sha256(MODEL_V1.read_bytes()).digest()
V2 = hashlib.sha256(MODEL_V2.read_bytes()).digest()
EVIL = make_model_version(MODEL_V1.read_bytes(), version=9, bias_shift=20000, bias_class=1)


def write_md(rel: ReleaseRepo, md: Metadata, name: str) -> None:
    (rel.dir / "metadata" / name).write_bytes(md.to_bytes(JSONSerializer()))


def evil_targets(rel: ReleaseRepo, signers: list[Any] | None, *, sign: bool = True) -> str:
    """A new targets version listing an evil v9 (the file is put in place too); signed by ``signers``."""
    md: Metadata[Targets] = rel.repo.load("targets")
    legit = rel.repo.model_targets(md)[-1]
    custom = json.loads(json.dumps(legit.custom()))
    custom["edge"]["version"] = 9
    sha = hashlib.sha256(EVIL).hexdigest()
    meta = json.loads(custom["edge"]["metadata"])
    meta["sha256"] = sha
    custom["edge"]["metadata"] = json.dumps(meta)
    path = "vibration/9/vibration.tflite"
    md.signed.targets[path] = TargetFile(len(EVIL), {"sha256": sha}, path, {"custom": custom})
    md.signed.version += 1
    if sign:
        md.signatures.clear()
        for s in signers or []:
            md.sign(s, append=True)
    dest = rel.dir / "targets" / "vibration" / "9" / f"{sha}.vibration.tflite"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(EVIL)
    write_md(rel, md, f"{md.signed.version}.targets.json")
    rel.publish()  # the attacker holds the online snapshot and timestamp keys
    return path


@pytest.fixture
def rel(tmp_path: Path) -> ReleaseRepo:
    r = ReleaseRepo(tmp_path / "release")
    r.add(MODEL_V1, 1)
    return r


def assert_kept_v1(rig: UpdaterRig, srv: RepoServer, cause: str) -> None:
    assert rig.updater.condition == ("refused", cause), (rig.updater.condition, rig.updater.condition_detail)
    assert rig.model_sha() == V1
    assert not any("/targets/vibration/9/" in r for r in srv.requests), "nothing unsigned was even fetched"
    assert rig.updater.status_doc()["state"] == "refused"


def test_unsigned_target(rel: ReleaseRepo, tmp_path: Path) -> None:
    """A target added to the targets metadata without the targets key (signatures of the old version kept),
    and a model file dropped into targets/ that no metadata lists: neither is ever loaded."""
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json).start(updater=False) as rig:
        stray = rel.dir / "targets" / "vibration" / "3" / f"{hashlib.sha256(EVIL).hexdigest()}.vibration.tflite"
        stray.parent.mkdir(parents=True)
        stray.write_bytes(EVIL)
        rig.updater.poll()
        assert rig.updater.condition == ("ok", "") and rig.model_sha() == V1
        old = rel.repo.load("targets")
        evil_targets(rel, None, sign=False)
        md = rel.repo.load("targets")
        md.signatures = old.signatures  # the old version's signatures over different bytes
        write_md(rel, md, f"{md.signed.version}.targets.json")
        rel.publish()
        rig.updater.poll()
        assert_kept_v1(rig, srv, "bad_signature")
        assert not any("/vibration/3/" in r for r in srv.requests)


def test_target_signed_by_a_non_targets_key(rel: ReleaseRepo, tmp_path: Path) -> None:
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json).start(updater=False) as rig:
        rig.updater.poll()
        evil_targets(rel, [*rel.signers("snapshot"), CryptoSigner.generate_ed25519()])
        rig.updater.poll()
        assert_kept_v1(rig, srv, "bad_signature")


def test_below_threshold_root_key_compromise(tmp_path: Path) -> None:
    """Root 2 of 3: an attacker with one root key rotates the targets key to their own and signs a model with
    it. Refused. The same rotation with two root keys is accepted (the threshold is what stood in the way)."""
    rel = ReleaseRepo(tmp_path / "release", root_keys=3, root_threshold=2)
    rel.add(MODEL_V1, 1)
    attacker = CryptoSigner.generate_ed25519()
    roots = rel.signers("root")

    def rotate(signers: list[Any]) -> None:
        md: Metadata[Root] = rel.repo.load("root", 1)
        for kid in list(md.signed.roles["targets"].keyids):
            md.signed.revoke_key(kid, "targets")
        md.signed.add_key(attacker.public_key, "targets")
        md.signed.version = 2
        md.signatures.clear()
        for s in signers:
            md.sign(s, append=True)
        write_md(rel, md, "2.root.json")
        evil_targets(rel, [attacker])

    with RepoServer(rel.dir) as srv:
        with UpdaterRig(tmp_path / "d1", srv.url, rel.root_json).start(updater=False) as rig:
            rotate(roots[:1])
            rig.updater.poll()
            assert_kept_v1(rig, srv, "bad_signature")
            assert "root" in rig.updater.condition_detail
        # control: two of the three root keys make the rotation valid, and the device follows it
        (rel.dir / "metadata" / "2.root.json").unlink()
        rotate(roots[:2])
        from agent.updates.repository import RepositoryClient

        rig2 = UpdaterRig(tmp_path / "d2", srv.url, rel.root_json)
        snap = RepositoryClient(rig2.cfg).refresh(time.time())
        assert "vibration/9/vibration.tflite" in snap.targets


def test_rollback_of_metadata_and_of_the_model(rel: ReleaseRepo, tmp_path: Path) -> None:
    """Replaying an older repository state is refused by TUF (versions never go back); a properly signed
    release that lists only an older model than the device's floor is refused by the version floor."""
    old_state = rel.snapshot_files()
    rel.add(MODEL_V2, 2)
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json).start(updater=False) as rig:
        rig.updater.poll()
        assert rig.model_sha() == V2 and rig.state.model("vibration").floor == 2
        new_state = rel.snapshot_files()
        rel.restore(old_state)
        rig.updater.poll()
        assert rig.updater.condition == ("refused", "rollback") and rig.model_sha() == V2
        rel.restore(new_state)
        rel.revoke(2)  # legitimately signed: v1 is now the only model listed
        rig.updater.poll()
        assert rig.updater.condition == ("ok", "") and rig.model_sha() == V2
        doc = rig.updater.status_doc()["models"]["vibration"]
        assert doc["running"] == 2 and doc["floor"] == 2


def test_freeze_stale_timestamp_on_a_board_without_rtc(tmp_path: Path) -> None:
    """The attacker keeps serving a timestamp that has expired. A board that booted without a real-time clock
    thinks it is 1970: the aggregator's signed receipt time, or the persisted last good time, still shows
    the metadata expired."""
    rel = ReleaseRepo(tmp_path / "release", expiry=Expiry(timestamp_days=1))
    rel.add(MODEL_V1, 1)
    rel.add(MODEL_V2, 2)
    later = (datetime.now(timezone.utc) + timedelta(days=2)).timestamp()
    with RepoServer(rel.dir) as srv:
        rig = UpdaterRig(tmp_path / "a", srv.url, rel.root_json, wall=lambda: 86400.0, receipt_time=lambda: later)
        with rig.start(updater=False):
            rig.updater.poll()
            assert rig.updater.condition == ("refused", "expired") and rig.model_sha() == V1
            assert rig.updater.status_doc()["reference_time"].startswith(
                datetime.fromtimestamp(later, timezone.utc).date().isoformat())
        rig = UpdaterRig(tmp_path / "b", srv.url, rel.root_json, wall=lambda: 86400.0)
        rig.state.last_good_time = later
        with rig.start(updater=False):
            rig.updater.poll()
            assert rig.updater.condition == ("refused", "expired") and rig.model_sha() == V1
        # What the attacker counts on: with only the 1970 clock the frozen metadata would pass.
        rig = UpdaterRig(tmp_path / "c", srv.url, rel.root_json, wall=lambda: 86400.0)
        with rig.start(updater=False):
            rig.updater.poll()
            assert rig.updater.condition == ("ok", "")


def test_mix_and_match_snapshot_inconsistent_with_targets(rel: ReleaseRepo, tmp_path: Path) -> None:
    rel.add(MODEL_V2, 2)
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json).start(updater=False) as rig:
        md = rel.dir / "metadata"
        latest = max(int(p.name.split(".")[0]) for p in md.glob("*.targets.json"))
        srv.hooks[f"/metadata/{latest}.targets.json"] = serve_bytes((md / f"{latest - 1}.targets.json").read_bytes())
        rig.updater.poll()
        assert rig.updater.condition[0] == "refused" and rig.updater.condition[1] in ("rollback", "hash_mismatch",
                                                                                       "too_long")
        assert rig.model_sha() == V1


def test_endless_data(rel: ReleaseRepo, tmp_path: Path) -> None:
    """Endless metadata and an endless model: reading stops at the limit, nothing is loaded; once the mirror
    behaves, the signed v2 is taken."""
    rel.add(MODEL_V2, 2)
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json).start(updater=False) as rig:
        srv.hooks["/metadata/timestamp.json"] = endless
        rig.updater.poll()
        assert rig.updater.condition == ("refused", "too_long")
        del srv.hooks["/metadata/timestamp.json"]
        srv.prefix_hooks["/targets/vibration/2/"] = endless
        rig.updater.poll()
        assert rig.model_sha() == V1 and 2 not in rig.state.model("vibration").refused, "retried, not refused"
        staged = list((tmp_path / "d" / "updates" / "staging").glob("*"))
        assert all(p.stat().st_size <= len(MODEL_V2.read_bytes()) for p in staged)
        srv.prefix_hooks.clear()
        rig.updater.poll()
        assert rig.model_sha() == V2


def test_tampered_model_bytes(rel: ReleaseRepo, tmp_path: Path) -> None:
    rel.add(MODEL_V2, 2)
    data = bytearray(MODEL_V2.read_bytes())
    data[-100] ^= 0xFF  # same length, one byte different
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json).start(updater=False) as rig:
        srv.prefix_hooks["/targets/vibration/2/"] = serve_bytes(bytes(data))
        rig.updater.poll()
        rig.updater.poll()
        assert rig.model_sha() == V1 and "hash_mismatch" in rig.updater.download_failures[
            "vibration/2/vibration.tflite"]
        assert not list((tmp_path / "d" / "updates" / "models").glob("*.tflite"))
        srv.prefix_hooks.clear()
        rig.updater.poll()
        assert rig.model_sha() == V2


def test_too_large_for_the_device_is_refused_before_any_byte(rel: ReleaseRepo, tmp_path: Path) -> None:
    rel.add(MODEL_V2, 2)
    with RepoServer(rel.dir) as srv, \
            UpdaterRig(tmp_path / "d", srv.url, rel.root_json, max_model_bytes=4096).start(updater=False) as rig:
        rig.updater.poll()
        assert "more than [updates] max_model_bytes 4096" in rig.state.model("vibration").refused[2]
        assert not any("/targets/vibration/2/" in r for r in srv.requests)


def test_model_failing_its_golden_vectors_is_refused_and_never_retried(rel: ReleaseRepo, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The release build computed other int8 outputs than this device does: refused, the pipeline never saw it."""
    other = make_model_version(MODEL_V1.read_bytes(), version=2, bias_shift=1000, bias_class=1)
    ins, outs, _ = compute_golden(other, 6, 1)
    rel.add(MODEL_V2, 2, golden=(ins, {"cpu": outs}))
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json).start(updater=False) as rig:
        with caplog.at_level(logging.INFO, logger="agent.updates.updater"):
            for _ in range(4):
                rig.updater.poll()
        reason = rig.state.model("vibration").refused[2]
        assert reason.startswith("golden_mismatch: golden vectors of vibration/2/vibration.tflite on cpu/")
        assert "steps > tolerance 0" in reason
        assert rig.model_sha() == V1 and set(rig.digests()) == {V1}
        assert sum("/targets/vibration/2/" in r for r in srv.requests) == 1, "downloaded once, never again"
        assert len([r for r in caplog.records if r.levelno == logging.ERROR and "version 2 refused" in r.message]) == 1
        assert rig.updater.status_doc()["models"]["vibration"]["refused"]["2"] == reason
    # ... and across a restart (persisted)
    again = UpdaterRig(tmp_path / "d", "http://127.0.0.1:9", rel.root_json)
    assert 2 in again.state.model("vibration").never()


def test_golden_tolerance_for_this_architecture_accepts_small_differences(rel: ReleaseRepo, tmp_path: Path) -> None:
    import platform

    ins, outs, _ = compute_golden(MODEL_V2.read_bytes(), 3, 0)
    off = [[v - 1 if v > -128 else v + 1 for v in vec] for vec in outs]
    rel.add(MODEL_V2, 2, golden=(ins, {"cpu": off}), tolerance={f"cpu/{platform.machine()}": 1})
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json).start(updater=False) as rig:
        rig.updater.poll()
        assert rig.model_sha() == V2


@pytest.mark.parametrize("fault", ["invoke-error", "slow"])
def test_model_failing_after_the_switch_is_reverted_within_60s_and_never_retried(
        fault: str, rel: ReleaseRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fault_file = tmp_path / "fault"
    line = f"invoke-error {V2.hex()[:16]}" if fault == "invoke-error" else f"slow {V2.hex()[:16]} 5000"
    fault_file.write_text(line + "\n")
    monkeypatch.setenv(FAULT_ENV, str(fault_file))
    rel.add(MODEL_V2, 2)
    with RepoServer(rel.dir) as srv, UpdaterRig(tmp_path / "d", srv.url, rel.root_json, health_window_s=30.0,
                                                 latency_slack_us=1000.0).start(updater=False) as rig:
        t0 = time.monotonic()
        rig.updater.poll()  # download, golden vectors (they pass: the fault shows only in service), switch, watch
        took = time.monotonic() - t0
        assert took < 60, f"reverted after {took:.1f} s"
        assert rig.model_sha() == V1
        reason = rig.state.model("vibration").reverted[2]
        assert ("invoke error" in reason) if fault == "invoke-error" else ("median latency" in reason)
        for _ in range(3):
            rig.updater.poll()
        assert rig.model_sha() == V1 and sum("/targets/vibration/2/" in r for r in srv.requests) == 1
        n = len(rig.drafts)
        wait_for(lambda: len(rig.drafts) > n + 5, timeout=10, what="v1 keeps running")
    t0s = [payload(d)["t0_ms"] for d in rig.drafts]
    assert len(set(t0s)) == len(t0s) and all(b - a == 32 for a, b in itertools.pairwise(t0s)), \
        "every window once, none skipped, across switch and revert"
    assert rig.digests().count(V2) < len(rig.digests())


def test_repository_unreachable_for_hours(rel: ReleaseRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Three days of hourly polls against a dead repository (the wall clock advances an hour per poll): the
    model keeps running, the log says it once, and once more when the repository is back."""
    clock = [time.time()]

    def wall() -> float:
        clock[0] += 3600.0
        return clock[0]

    srv = RepoServer(rel.dir).start()
    port = srv.port
    srv.stop()
    rel.add(MODEL_V2, 2)
    rig = UpdaterRig(tmp_path / "d", f"http://127.0.0.1:{port}", rel.root_json, wall=wall)
    with caplog.at_level(logging.INFO, logger="agent.updates"), rig.start(updater=False):
        for _ in range(72):
            rig.updater.poll()
        assert rig.model_sha() == V1 and len(rig.drafts) > 0
        n = len(rig.drafts)
        wait_for(lambda: len(rig.drafts) > n + 5, timeout=10, what="results keep coming")
        lines = [r for r in caplog.records if r.name.startswith("agent.updates")]
        assert len(lines) == 1 and "unreachable" in lines[0].message, [r.message for r in lines]
        doc = rig.updater.status_doc()
        assert doc["state"] == "unreachable" and doc["failures"] == 72 and doc["cause"] == "connect"
        srv.start()
        try:
            clock[0] = time.time()
            rig.updater.poll()
        finally:
            srv.stop()
        assert rig.model_sha() == V2
        again = [r.message for r in caplog.records if r.name.startswith("agent.updates")][1:]
        assert any("usable again" in m for m in again)
