"""What ``edge-provision device status`` checks in the agent's config: that the agent will use this device's
id, key, certificate and fleet CA.

``provisioning`` may not import ``agent`` (dependencies point one way, DESIGN §2), so the handful of agent
keys read here follow the agent's rules, restated: relative paths resolve against the config file's
directory; the id comes from ``device_id`` or from the file ``device_id_file`` names (the template first
boot fills in); TLS is on when ``mqtt.url`` is ``mqtts://`` or ``mqtt.ca_file`` / ``cert_file`` is set;
receipts are checked against ``[receipts] ca_file``, else ``mqtt.ca_file``, when ``[outbox] delivery`` is
``aggregator`` (the default). Each check compares what the agent will actually load (the id in the file,
the certificates in the CA file, the same key file) rather than how a path is spelled, so a value set in
another documented place, or a CA bundle that holds the fleet root, is not reported as missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.key_uri import FileKeyUri, parse_key_uri

__all__ = ["CHECKS", "ConfigCheck", "DeviceFacts", "check_agent_config"]

CHECKS = ("device_id", "key_uri", "certificate", "tls", "cert_file", "key_file", "ca_file", "receipts_ca")


@dataclass(frozen=True)
class DeviceFacts:
    """What the device state says the agent should use."""

    device_id: str
    key_uri: str
    cert_path: Path
    leaf_fingerprint: str | None  # of the installed certificate, None before install-cert
    ca_fingerprints: frozenset[str]  # the fleet CA certificates in <state>/fleet-ca.pem (empty if absent)


@dataclass(frozen=True)
class ConfigCheck:
    """One key (or pair of keys) of the agent config: ``ok``, a short ``detail``, and ``problem`` if any."""

    name: str
    ok: bool
    detail: str
    problem: str | None = None


# What the caller can read from disk: the fingerprints of the certificates in a PEM file (None if
# unreadable), the first line of a text file (None if unreadable).
Fingerprints = Callable[[Path], "list[str] | None"]
ReadLine = Callable[[Path], "str | None"]


def _table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def _path(base: Path, value: Any) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    return Path(os.path.normpath(base / value)) if not os.path.isabs(value) else Path(value)


def _same_file(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def check_agent_config(doc: Mapping[str, Any], config_path: Path, facts: DeviceFacts, *,
                       fingerprints: Fingerprints, read_line: ReadLine) -> list[ConfigCheck]:
    """Every check of ``CHECKS`` for the decoded agent config ``doc`` read from ``config_path``."""
    base = config_path.parent
    mqtt, receipts, outbox = _table(doc, "mqtt"), _table(doc, "receipts"), _table(doc, "outbox")
    where = f"agent config {config_path}"
    out: list[ConfigCheck] = []

    # device id: device_id, or the file device_id_file names
    dev_id, id_file = doc.get("device_id"), _path(base, doc.get("device_id_file"))
    if dev_id is not None and id_file is not None:
        out.append(ConfigCheck("device_id", False, "BOTH SET",
                               f"{where}: give device_id or device_id_file, not both (the agent refuses it)"))
    elif id_file is not None:
        value = read_line(id_file)
        if value is None:
            out.append(ConfigCheck("device_id", False, f"UNREADABLE ({id_file})",
                                   f"{where}: device_id_file {id_file} cannot be read"))
        elif value != facts.device_id:
            out.append(ConfigCheck("device_id", False, f"MISMATCH ({id_file} holds {value!r})",
                                   f"{where}: device_id_file {id_file} holds {value!r}, this device is "
                                   f"{facts.device_id!r}"))
        else:
            out.append(ConfigCheck("device_id", True, f"ok (from {id_file})"))
    elif dev_id is None:
        out.append(ConfigCheck("device_id", False, "NOT SET", f"{where}: set device_id or device_id_file"))
    elif dev_id != facts.device_id:
        out.append(ConfigCheck("device_id", False, f"MISMATCH ({dev_id!r})",
                               f"{where}: device_id is {dev_id!r}, this device is {facts.device_id!r}"))
    else:
        out.append(ConfigCheck("device_id", True, "ok"))

    # signing key
    key_uri = doc.get("key_uri")
    key_path = _file_key(facts.key_uri)
    given_path = _file_key(key_uri) if isinstance(key_uri, str) else None
    if not isinstance(key_uri, str) or not key_uri:
        out.append(ConfigCheck("key_uri", False, "NOT SET", f"{where}: key_uri is not set (use {facts.key_uri})"))
    elif key_uri == facts.key_uri or (key_path is not None and given_path is not None
                                      and _same_file(given_path, key_path)):
        out.append(ConfigCheck("key_uri", True, "ok"))
    else:
        out.append(ConfigCheck("key_uri", False, "MISMATCH",
                               f"{where}: key_uri is {key_uri}, this device's key is {facts.key_uri}"))

    # certificate sent in birth records (optional: without it aggregators need the registry)
    out.append(_cert_check("certificate", _path(base, doc.get("certificate")), facts, fingerprints, where,
                           required=False))

    # TLS to the broker (mTLS: the broker takes the device identity from the client certificate)
    url = mqtt.get("url", "mqtt://127.0.0.1:1883")
    ca_file, cert_file = _path(base, mqtt.get("ca_file")), _path(base, mqtt.get("cert_file"))
    key_file = _path(base, mqtt.get("key_file"))
    tls = (isinstance(url, str) and url.startswith("mqtts://")) or ca_file is not None or cert_file is not None
    if tls:
        out.append(ConfigCheck("tls", True, "ok"))
        out.append(_cert_check("cert_file", cert_file, facts, fingerprints, where, required=True))
        if key_file is None:
            out.append(ConfigCheck("key_file", False, "NOT SET", f"{where}: mqtt.key_file is not set (mTLS)"))
        elif key_path is not None and not _same_file(key_file, key_path):
            out.append(ConfigCheck("key_file", False, "MISMATCH",
                                   f"{where}: mqtt.key_file is {key_file}, this device's key is {key_path}"))
        else:  # a pkcs11 signing key needs a separate TLS key file (docs/provisioning.md): any file will do
            out.append(ConfigCheck("key_file", True, "ok"))
        out.append(_ca_check("ca_file", "mqtt.ca_file", ca_file, facts, fingerprints, where))
    else:
        out.append(ConfigCheck("tls", False, "PLAIN MQTT",
                               f"{where}: mqtt.url {url} without TLS: the broker cannot authenticate this device "
                               "(use mqtts:// with cert_file, key_file and ca_file)"))
        for name in ("cert_file", "key_file", "ca_file"):
            out.append(ConfigCheck(name, False, "not used (plain MQTT)"))

    # fleet CA for receipts: [receipts] ca_file, else mqtt.ca_file
    if outbox.get("delivery", "aggregator") == "aggregator":
        rca = _path(base, receipts.get("ca_file"))
        source = "receipts.ca_file" if rca is not None else "mqtt.ca_file"
        out.append(_ca_check("receipts_ca", source, rca or ca_file, facts, fingerprints, where,
                             missing="no fleet CA for receipts ([receipts] ca_file or mqtt.ca_file): the agent "
                                     "cannot verify receipts and its outbox never empties"))
    else:
        out.append(ConfigCheck("receipts_ca", True, "not needed (delivery = broker)"))
    return out


def _file_key(uri: str) -> Path | None:
    try:
        parsed = parse_key_uri(uri)
    except Exception:  # an invalid URI is reported by the key_uri check
        return None
    return Path(parsed.path) if isinstance(parsed, FileKeyUri) else None


def _cert_check(name: str, path: Path | None, facts: DeviceFacts, fingerprints: Fingerprints, where: str, *,
                required: bool) -> ConfigCheck:
    key = name if name == "certificate" else f"mqtt.{name}"
    if path is None:
        if required:
            return ConfigCheck(name, False, "NOT SET", f"{where}: {key} is not set (mTLS needs the device "
                                                       f"certificate, {facts.cert_path})")
        return ConfigCheck(name, False, "not set (birth records carry no certificate: aggregators need the "
                                        "registry)")
    if _same_file(path, facts.cert_path):
        return ConfigCheck(name, True, "ok")
    found = fingerprints(path)
    if found is None:
        return ConfigCheck(name, False, f"UNREADABLE ({path})", f"{where}: {key} {path} cannot be read")
    if facts.leaf_fingerprint is not None and found[:1] == [facts.leaf_fingerprint]:
        return ConfigCheck(name, True, f"ok (copy at {path})")
    return ConfigCheck(name, False, f"MISMATCH ({path})",
                       f"{where}: {key} {path} is not this device's certificate ({facts.cert_path})")


def _ca_check(name: str, key: str, path: Path | None, facts: DeviceFacts, fingerprints: Fingerprints, where: str,
              *, missing: str | None = None) -> ConfigCheck:
    if path is None:
        return ConfigCheck(name, False, "NOT SET", f"{where}: {missing or key + ' is not set'}")
    found = fingerprints(path)
    if found is None:
        return ConfigCheck(name, False, f"UNREADABLE ({path})", f"{where}: {key} {path} cannot be read")
    if not facts.ca_fingerprints:
        return ConfigCheck(name, True, f"set ({path}; not compared: no fleet CA in the device state)")
    if facts.ca_fingerprints & set(found):
        return ConfigCheck(name, True, f"ok (via {key})" if name == "receipts_ca" else "ok")
    return ConfigCheck(name, False, f"MISMATCH ({path})",
                       f"{where}: {key} {path} does not hold the fleet CA this device's certificate was checked "
                       "against (wrong fleet?)")
