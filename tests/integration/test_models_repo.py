"""``edge-provision models``: the release tool makes a repository python-tuf's own client accepts over HTTP.

The reference client (``tuf.ngclient.Updater``, the same the agent uses) is the judge of the metadata; the
CLI is driven through ``provisioning.cli.main`` exactly as an operator types it.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc
from tuf.ngclient import Updater

from provisioning.cli import main
from provisioning.model_repo import ModelRepository
from provisioning.model_target import ModelTarget
from tests.support.tuf_repo import MODEL_V1, MODEL_V2, RepoServer

pytestmark = pytest.mark.integration


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def client(tmp: Path, url: str, root: Path) -> Updater:
    tmp.mkdir(parents=True, exist_ok=True)
    return Updater(str(tmp), f"{url}/metadata/", str(tmp), f"{url}/targets/", bootstrap=root.read_bytes())


@pytest.fixture
def released(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A 2-of-3 root repository with vibration v1 and v2 published (the default ceremony)."""
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    rc, res = cli(capsys, "models", "init", "--repo", str(repo), "--keys-dir", str(keys))
    assert rc == 0 and res["keys"]["root"] == [str(keys / f"root-{i}.pem") for i in (1, 2, 3)]
    assert oct(os.stat(keys / "root-1.pem").st_mode & 0o777) == "0o600"
    for model, version in ((MODEL_V1, 1), (MODEL_V2, 2)):
        rc, res = cli(capsys, "models", "add", "--repo", str(repo), "--model", str(model), "--version", str(version),
                      "--key", str(keys / "targets-1.pem"), "--tolerance", "cpu/aarch64=1",
                      "--rollout-share", "0.25")
        assert rc == 0, res
    rc, res = cli(capsys, "models", "publish", "--repo", str(repo), "--snapshot-key", str(keys / "snapshot.pem"),
                  "--timestamp-key", str(keys / "timestamp.pem"))
    assert rc == 0 and res["targets_version"] == 3
    return tmp_path


def test_reference_client_verifies_and_downloads_every_model(released: Path) -> None:
    repo = released / "repo"
    root = json.loads((repo / "metadata" / "1.root.json").read_text())
    assert root["signed"]["roles"]["root"]["threshold"] == 2 and len(root["signed"]["roles"]["root"]["keyids"]) == 3
    assert len(root["signatures"]) == 3 and root["signed"]["consistent_snapshot"] is True
    with RepoServer(repo) as srv:
        up = client(released / "device", srv.url, repo / "metadata" / "1.root.json")
        up.refresh()
        for model, version in ((MODEL_V1, 1), (MODEL_V2, 2)):
            info = up.get_targetinfo(f"vibration/{version}/vibration.tflite")
            assert info is not None
            t = ModelTarget.from_target(info.path, info.length, info.hashes, info.custom)
            assert t.version == version and t.rollout.share_bp == 2500
            assert t.golden.tolerance_for("cpu", "aarch64") == 1 and len(t.golden.inputs) == 4
            assert json.loads(t.metadata_json)["sha256"] == t.sha256
            path = up.download_target(info, str(released / f"v{version}.tflite"))
            assert Path(path).read_bytes() == model.read_bytes()


def test_add_refuses_non_monotonic_versions_wrong_keys_and_below_threshold(released: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    repo, keys = released / "repo", released / "keys"
    base = ["models", "add", "--repo", str(repo), "--model", str(MODEL_V2)]
    rc, res = cli(capsys, *base, "--version", "2", "--key", str(keys / "targets-1.pem"))
    assert rc == 2 and res["reason"] == "version_not_monotonic"
    rc, res = cli(capsys, *base, "--version", "3", "--key", str(keys / "snapshot.pem"))
    assert rc == 2 and res["reason"] == "wrong_key" and "not targets keys" in res["error"]
    # Revoking v2 does not free its version number.
    rc, _ = cli(capsys, "models", "revoke", "--repo", str(repo), "--model-id", "vibration", "--version", "2",
                "--key", str(keys / "targets-1.pem"))
    assert rc == 0
    rc, res = cli(capsys, *base, "--version", "2", "--key", str(keys / "targets-1.pem"))
    assert rc == 2 and res["reason"] == "version_not_monotonic"


def test_targets_threshold_two_needs_two_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    rc, _ = cli(capsys, "models", "init", "--repo", str(repo), "--keys-dir", str(keys), "--root-keys", "1",
                "--root-threshold", "1", "--targets-keys", "2", "--targets-threshold", "2")
    assert rc == 0
    base = ["models", "add", "--repo", str(repo), "--model", str(MODEL_V1), "--version", "1"]
    rc, res = cli(capsys, *base, "--key", str(keys / "targets-1.pem"))
    assert rc == 2 and res["reason"] == "below_threshold"
    rc, res = cli(capsys, *base, "--key", str(keys / "targets-1.pem"), "--key", str(keys / "targets-1.pem"))
    assert rc == 2 and res["reason"] == "below_threshold", "the same key twice is one signature"
    rc, _ = cli(capsys, *base, "--key", str(keys / "targets-1.pem"), "--key", str(keys / "targets-2.pem"))
    assert rc == 0
    rc, res = cli(capsys, "models", "init", "--repo", str(tmp_path / "r2"), "--keys-dir", str(tmp_path / "k2"),
                  "--root-keys", "2", "--root-threshold", "3")
    assert rc == 2 and "threshold 3 with 2 key(s)" in res["error"]


def test_unpublished_changes_are_invisible_until_publish(released: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, keys = released / "repo", released / "keys"
    rc, _ = cli(capsys, "models", "revoke", "--repo", str(repo), "--model-id", "vibration", "--version", "1",
                "--key", str(keys / "targets-1.pem"))
    assert rc == 0
    rc, st = cli(capsys, "models", "status", "--repo", str(repo))
    assert st["unpublished_targets_version"] == 4 and len(st["models"]) == 2
    with RepoServer(repo) as srv:
        up = client(released / "d1", srv.url, repo / "metadata" / "1.root.json")
        assert up.get_targetinfo("vibration/1/vibration.tflite") is not None
        cli(capsys, "models", "publish", "--repo", str(repo), "--snapshot-key", str(keys / "snapshot.pem"),
            "--timestamp-key", str(keys / "timestamp.pem"))
        up = client(released / "d2", srv.url, repo / "metadata" / "1.root.json")
        assert up.get_targetinfo("vibration/1/vibration.tflite") is None
        assert up.get_targetinfo("vibration/2/vibration.tflite") is not None


def test_resign_timestamp_keeps_targets_and_renews_a_due_snapshot(released: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    repo, keys = released / "repo", released / "keys"
    before = json.loads((repo / "metadata" / "timestamp.json").read_text())["signed"]
    rc, res = cli(capsys, "models", "resign-timestamp", "--repo", str(repo), "--timestamp-key",
                  str(keys / "timestamp.pem"))
    assert rc == 0 and res["timestamp_version"] == before["version"] + 1 and not res["snapshot_renewed"]
    # A snapshot valid for less than the renewal margin is renewed by the daily job (same targets version).
    rc, res = cli(capsys, "models", "resign-timestamp", "--repo", str(repo), "--timestamp-key",
                  str(keys / "timestamp.pem"), "--snapshot-days", "5")
    assert rc == 0 and not res["snapshot_renewed"], "the margin is judged on the current snapshot (30 days)"
    r = ModelRepository(repo)
    now = datetime.now(timezone.utc) + timedelta(days=25)
    from provisioning.model_repo import key_signer

    res2 = r.resign_timestamp(key_signer(keys / "timestamp.pem"), snapshot_signer=key_signer(keys / "snapshot.pem"),
                              now=now)
    assert res2["snapshot_renewed"]
    snap = json.loads((repo / "metadata" / f"{res2['snapshot_version']}.snapshot.json").read_text())["signed"]
    assert snap["meta"]["targets.json"]["version"] == 3
    with pytest.raises(Exception, match="--snapshot-key"):
        r.resign_timestamp(key_signer(keys / "timestamp.pem"), now=now + timedelta(days=25))
    with RepoServer(repo) as srv:
        client(released / "dev", srv.url, repo / "metadata" / "1.root.json").refresh()


def test_status_exits_1_when_metadata_is_about_to_expire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    cli(capsys, "models", "init", "--repo", str(repo), "--keys-dir", str(keys), "--timestamp-days", "0.5")
    rc, st = cli(capsys, "models", "status", "--repo", str(repo))
    assert rc == 1 and st["roles"]["timestamp"]["days_left"] < 1
    assert "timestamp metadata expires" in " ".join(st["warnings"])


def test_golden_file_from_another_machine_and_expired_metadata_refused(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    cli(capsys, "models", "init", "--repo", str(repo), "--keys-dir", str(keys), "--timestamp-days", "0.00001")
    g = tmp_path / "golden-edgetpu.json"
    rc, res = cli(capsys, "models", "golden", "--model", str(MODEL_V1), "--runtime", "cpu", "--count", "2",
                  "-o", str(g))
    assert rc == 0
    rc, res = cli(capsys, "models", "add", "--repo", str(repo), "--model", str(MODEL_V2), "--version", "1",
                  "--golden", str(g), "--key", str(keys / "targets-1.pem"))
    assert rc == 2 and "made for the model with sha256" in res["error"]
    rc, res = cli(capsys, "models", "add", "--repo", str(repo), "--model", str(MODEL_V1), "--version", "1",
                  "--golden", str(g), "--key", str(keys / "targets-1.pem"))
    assert rc == 0
    with RepoServer(repo) as srv, pytest.raises(tuf_exc.ExpiredMetadataError):
        client(tmp_path / "dev", srv.url, repo / "metadata" / "1.root.json").refresh()
