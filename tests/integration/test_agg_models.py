"""The aggregator flags results whose model digest is not a signed target of the devices' model repository:
stored all the same, counted per digest in stats(), listed by ``edge-aggregator models``; a revoked version's
digest becomes unlisted at the next refresh; an unreachable repository flags nothing it cannot judge."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from aggregator import AggregatorService
from aggregator.config import ModelsSettings, parse_config
from aggregator.errors import ConfigError
from aggregator.model_registry import ModelRegistry, models_report
from tests.integration.test_agg_service import Peer, make_config
from tests.support.mosquitto import Mosquitto
from tests.support.tuf_repo import MODEL_V1, MODEL_V2, ReleaseRepo, RepoServer
from tests.support.wait import wait_for
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration

V1 = hashlib.sha256(MODEL_V1.read_bytes()).digest()
V2 = hashlib.sha256(MODEL_V2.read_bytes()).digest()
ROGUE = hashlib.sha256(b"a model nobody signed").digest()


def test_results_of_unlisted_digests_are_stored_counted_and_reported(tmp_path: Path, mosquitto: Mosquitto,
                                                                     unique_id: str, capsys) -> None:
    rel = ReleaseRepo(tmp_path / "release")
    rel.add(MODEL_V1, 1)
    rel.add(MODEL_V2, 2)
    fleet, (dev,) = fleet_with(tmp_path, unique_id)
    with RepoServer(rel.dir) as srv:
        cfg = make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}")
        from dataclasses import replace

        cfg = replace(cfg, models=ModelsSettings(repository_url=srv.url, root_file=str(rel.root_json),
                                                 cache_dir=str(tmp_path / "models-tuf"), refresh_s=3600))
        svc = AggregatorService(cfg)
        svc.start()
        peer = Peer(mosquitto.port)
        try:
            assert svc.models is not None and svc.models.known
            peer.publish([dev.birth()], retain=True)
            peer.publish([dev.record("result", model_sha256=V1) for _ in range(10)]
                         + [dev.record("result", model_sha256=V2) for _ in range(10)]
                         + [dev.record("result", model_sha256=ROGUE) for _ in range(5)])
            wait_for(lambda: svc.stats().stored == 26, timeout=30, what="every record stored")
            s = svc.stats()
            assert s.unlisted_model_results == 5 and s.unlisted_models == {ROGUE.hex(): 5}
            assert s.as_dict()["unlisted_models"] == {ROGUE.hex(): 5}
        finally:
            peer.close()
            svc.stop()
        conf = tmp_path / "aggregator.toml"
        conf.write_text(f'[store]\nurl = "{tmp_path / "agg.db"}"\n[models]\nrepository_url = "{srv.url}"\n'
                        f'root_file = "{rel.root_json}"\ncache_dir = "{tmp_path / "cli-tuf"}"\n')
        from aggregator.cli import main

        assert main(["models", "--config", str(conf), "--json"]) == 1, "unlisted results: exit 1"
        report = json.loads(capsys.readouterr().out)
        by = {m["sha256"]: m for m in report["models"]}
        assert by[ROGUE.hex()]["listed"] is False and by[ROGUE.hex()]["results"] == 5
        assert by[V2.hex()]["listed"] is True and (by[V2.hex()]["model_id"], by[V2.hex()]["version"]) == \
            ("vibration", 2)
        assert report["unlisted_results"] == 5
        # Revoking v1: its digest is unlisted from the next refresh on, its results flagged with it.
        rel.revoke(1)
        reg = ModelRegistry(cfg.models)
        reg.refresh()
        assert reg.listed(V1) is False and reg.listed(V2) is not False
        assert svc.models.refresh()
        assert svc.stats().unlisted_models == {ROGUE.hex(): 5, V1.hex(): 10}


def test_unknown_until_verified_and_failures_keep_the_list(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rel = ReleaseRepo(tmp_path / "release")
    rel.add(MODEL_V1, 1)
    srv = RepoServer(rel.dir).start()
    reg = ModelRegistry(ModelsSettings(repository_url=srv.url, root_file=str(rel.root_json),
                                       cache_dir=str(tmp_path / "c"), fetch_timeout_s=2))
    srv.stop()
    with caplog.at_level(logging.WARNING, logger="aggregator.model_registry"):
        for _ in range(5):
            assert not reg.refresh()
    assert reg.listed(V1) is None, "never verified: unknown, not unlisted"
    assert len([r for r in caplog.records if "keeping the previous list" in r.message]) == 1, "one line, not five"
    srv.start()
    assert reg.refresh() and reg.listed(V1) is not False and reg.listed(ROGUE) is False
    srv.stop()
    assert not reg.refresh()
    assert reg.listed(V1) is not False, "a failed refresh keeps the verified list"
    assert models_report(reg, [("d1", ROGUE, 3), ("d2", ROGUE, 1), ("d1", V1, 7)])["unlisted_results"] == 4


@pytest.mark.parametrize(("models", "key"), [
    ({"repository_url": "http://x"}, "models.root_file"),
    ({"root_file": "root.json"}, "models.repository_url"),
    ({"repository_url": "ftp://x", "root_file": "r"}, "models.repository_url"),
    ({"repository_url": "http://x", "root_file": "r", "refresh_s": 0}, "models.refresh_s"),
    ({"colour": 1}, "models.colour"),
])
def test_models_config_errors_name_the_key(models: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"models": models}, "/etc/edge-aggregator/aggregator.toml")
    assert any(k == key for k, _ in e.value.problems), e.value.problems
