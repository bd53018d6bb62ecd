"""[web] in the aggregator config: loopback by default; any other bind needs TLS and a token file; every
mistake names its key path; the example config documents the section."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import ConfigError, load_config, parse_config
from aggregator.config import is_loopback


def test_defaults_are_off_and_loopback() -> None:
    w = parse_config({}).web
    assert not w.enabled and not w.tracking and w.host == "127.0.0.1" and w.port == 8780
    assert parse_config({"web": {"enabled": True}, "store": {"url": "/tmp/x.db"}}).web.tracking


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "agg.example.net"])
def test_binding_off_loopback_needs_tls_and_a_token(host: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"web": {"enabled": True, "host": host}}, "agg.toml")
    assert [k for k, _ in e.value.problems] == ["web.host"]
    assert "tls_cert_file" in str(e.value) and "token_file" in str(e.value) and "agg.toml" in str(e.value)
    with pytest.raises(ConfigError, match=r"web\.host"):
        parse_config({"web": {"host": host, "tls_cert_file": "c.pem", "tls_key_file": "k.pem"}})  # no token
    cfg = parse_config({"web": {"host": host, "tls_cert_file": "c.pem", "tls_key_file": "k.pem",
                                "token_file": "token"}}, "/etc/agg/agg.toml")
    assert cfg.web.tls_cert_file == "/etc/agg/c.pem" and cfg.web.token_file == "/etc/agg/token"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"])
def test_loopback_needs_nothing(host: str) -> None:
    assert is_loopback(host)
    assert parse_config({"web": {"host": host}}).web.host == host


def test_every_mistake_is_listed_with_its_key_path() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"web": {"enabled": "yes", "port": 70000, "page_size": 5, "push_interval_ms": 1,
                              "tls_cert_file": "c.pem", "colour": "red", "title": ""},
                      "store": {"url": ":memory:"}})
    keys = {k for k, _ in e.value.problems}
    assert keys == {"web.enabled", "web.port", "web.page_size", "web.push_interval_ms", "web.tls_key_file",
                    "web.colour", "web.title"}


def test_memory_store_cannot_be_shown() -> None:
    with pytest.raises(ConfigError, match=r"web.enabled: .*store.url"):
        parse_config({"web": {"enabled": True}, "store": {"url": ":memory:"}})
    with pytest.raises(ConfigError, match=r"web\.track_fleet"):
        parse_config({"web": {"track_fleet": True}, "store": {"url": ":memory:"}})


def test_example_config_documents_web(repo_root: str) -> None:
    text = (Path(repo_root) / "examples" / "aggregator.toml").read_text()
    assert "[web]" in text
    cfg = load_config(Path(repo_root) / "examples" / "aggregator.toml")
    assert not cfg.web.enabled and cfg.web.host == "127.0.0.1"
