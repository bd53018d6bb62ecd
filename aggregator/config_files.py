"""What an aggregator config points at on disk: ``edge-aggregator check-config`` without ``--offline``.

Parsing (``aggregator.config``) does no I/O; this is the second step, run as the service user so that
permissions are judged as the worker will meet them. Every problem is ``(key path, message)`` like a parse
error, so the CLI reports both the same way (file, key path, exit 2). Nothing is created or contacted: a
SQLite store's directory must exist (a worker creates the file), a PostgreSQL store is not connected to.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from aggregator.config import AggregatorConfig

__all__ = ["check_files"]

Problems = list[tuple[str, str]]


def _readable(key: str, path: str | None, p: Problems, parse: Callable[[bytes], object] | None = None) -> None:
    if not path:
        return
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        p.append((key, f"file {path} does not exist"))
        return
    except OSError as e:
        p.append((key, f"file {path} cannot be read by uid {os.geteuid()}: {e.strerror}"))
        return
    if parse is not None:
        try:
            parse(data)
        except Exception as e:  # the loaders raise their own typed errors; any of them is this key's problem
            p.append((key, f"{path}: {e}"))


def _parse_registry(load: Callable[[str], object], path: str, _data: bytes) -> object:
    return load(path)


def _secret(key: str, path: str | None, p: Problems) -> None:
    """A key or password file: readable, and not readable by others."""
    before = len(p)
    _readable(key, path, p)
    if path and len(p) == before:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            p.append((key, f"file {path} has mode {mode:04o}; run `chmod 600 {path}`"))


def check_files(cfg: AggregatorConfig) -> Problems:
    """Every file the config names must be there, readable and of the right kind."""
    from provisioning import load_certificates, load_crl, load_registry  # noqa: PLC0415 - only this step needs them

    p: Problems = []
    t = cfg.trust
    for name, files, parse in (("ca_files", t.ca_files, load_certificates), ("bundle_files", t.bundle_files,
                                                                             load_certificates),
                               ("crl_files", t.crl_files, load_crl)):
        for i, f in enumerate(files):
            _readable(f"trust.{name}[{i}]", f, p, parse)
    for i, f in enumerate(t.registry_files):
        _readable(f"trust.registry_files[{i}]", f, p, functools.partial(_parse_registry, load_registry, f))
    if not t.ca_files and not t.registry_files:
        p.append(("trust.ca_files", "no trust anchor: give the fleet CA (ca_files) or a registry (registry_files)"))
    m = cfg.mqtt
    _readable("mqtt.ca_file", m.ca_file, p, load_certificates)
    _readable("mqtt.cert_file", m.cert_file, p, load_certificates)
    _secret("mqtt.key_file", m.key_file, p)
    _secret("mqtt.password_file", m.password_file, p)
    ident = cfg.identity
    if ident.key and ident.key.startswith("file:"):
        _secret("identity.key", ident.key.removeprefix("file:"), p)
    _readable("identity.cert_file", ident.cert_file, p, load_certificates)
    _readable("identity.chain_file", ident.chain_file, p, load_certificates)
    _secret("log.key_file", cfg.log.key_file, p)
    _readable("web.tls_cert_file", cfg.web.tls_cert_file, p, load_certificates)
    _secret("web.tls_key_file", cfg.web.tls_key_file, p)
    _secret("web.token_file", cfg.web.token_file, p)
    url = cfg.store.url
    if not url.startswith(("postgresql://", "postgres://", ":memory:")):
        folder = Path(url).parent
        if not folder.is_dir():
            p.append(("store.url", f"directory {folder} does not exist (the worker creates the database file, "
                                   "not its directory)"))
        elif not os.access(folder, os.W_OK):
            p.append(("store.url", f"directory {folder} is not writable by uid {os.geteuid()}"))
    return p
