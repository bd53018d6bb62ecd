"""The two places the agent reaches past python-tuf's public API (agent/updates/repository.py), pinned against
the installed version: the trusted set's reference time (expiry by our clock) and its verified targets."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from tuf.api import exceptions as tx

from agent.updates.repository import _set_reference_time, _trusted_targets
from tests.support.tuf_repo import ReleaseRepo, RepoServer


def test_reference_time_and_targets_of_the_installed_ngclient(tmp_path: Path) -> None:
    from tuf.ngclient import Updater

    rel = ReleaseRepo(tmp_path / "rel")
    rel.add()
    with RepoServer(rel.dir) as srv:
        def updater(d: str) -> Updater:
            (tmp_path / d).mkdir()
            return Updater(str(tmp_path / d), f"{srv.url}/metadata/", str(tmp_path / d), f"{srv.url}/targets/",
                           bootstrap=rel.root_json.read_bytes())

        up = updater("a")
        _set_reference_time(up, datetime.datetime.now(datetime.timezone.utc))
        up.refresh()
        assert list(_trusted_targets(up)) == ["vibration/2/vibration.tflite"]
        # Judged a year later, the same metadata is expired: the reference time is really used.
        up = updater("b")
        _set_reference_time(up, datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400))
        with pytest.raises(tx.ExpiredMetadataError):
            up.refresh()


def test_a_python_tuf_without_the_attribute_is_a_clear_error() -> None:
    class Fake:
        _trusted_set = object()

    from agent.errors import AgentError

    with pytest.raises(AgentError, match="reference_time"):
        _set_reference_time(Fake(), datetime.datetime.now(datetime.timezone.utc))
